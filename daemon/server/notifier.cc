// Notifier, NotifyPolicy and the --notify URL; see notifier.h. The HTTP client is Boost.Beast:
// each POST runs its own io_context on the notifier's thread, its every step (connect, TLS
// handshake, write, read) under one deadline.
#include "daemon/server/notifier.h"

#include <openssl/ssl.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <chrono>
#include <optional>

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <nlohmann/json.hpp>

#include "lib/common/log.h"

namespace fuji::daemon {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
using tcp = net::ip::tcp;

namespace {

constexpr size_t kMaxAnswerBytes = 64 * 1024;
constexpr size_t kMaxErrorBytes = 1024;   // of the job's reason, in the body
constexpr size_t kMaxModelBytes = 512;    // of the spec's model, in the body
constexpr int kDueBatch = 16;

std::string Lower(std::string_view text) {
  std::string out(text);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

// The address as IPv4 when it is an IPv4-mapped IPv6 one, so that one rule covers both.
net::ip::address Canonical(const net::ip::address& address) {
  if (address.is_v6() && address.to_v6().is_v4_mapped()) {
    return net::ip::make_address_v4(net::ip::v4_mapped, address.to_v6());
  }
  return address;
}

// Not a public unicast address: loopback, link-local, private (RFC 1918, CGNAT, IPv6 ULA),
// unspecified, multicast, broadcast or reserved.
bool IsSpecial(const net::ip::address& any) {
  const net::ip::address address = Canonical(any);
  if (address.is_unspecified() || address.is_loopback() || address.is_multicast()) return true;
  if (address.is_v4()) {
    const uint32_t a = address.to_v4().to_uint();
    auto in = [a](uint32_t net, int prefix) { return (a >> (32 - prefix)) == (net >> (32 - prefix)); };
    return in(0x00000000, 8) || in(0x0A000000, 8) || in(0x64400000, 10) || in(0x7F000000, 8) ||
           in(0xA9FE0000, 16) || in(0xAC100000, 12) || in(0xC0A80000, 16) || in(0xF0000000, 4);
  }
  const net::ip::address_v6 v6 = address.to_v6();
  const auto bytes = v6.to_bytes();
  return v6.is_link_local() || v6.is_site_local() || (bytes[0] & 0xFE) == 0xFC;  // fc00::/7
}

bool PrefixMatches(const net::ip::address& address, const net::ip::address& network, int prefix) {
  if (address.is_v4() != network.is_v4()) return false;
  auto compare = [prefix](const auto& a, const auto& b) {
    int bits = prefix;
    for (size_t i = 0; i < a.size() && bits > 0; ++i, bits -= 8) {
      const unsigned mask = bits >= 8 ? 0xFFu : (0xFFu << (8 - bits)) & 0xFFu;
      if ((a[i] & mask) != (b[i] & mask)) return false;
    }
    return true;
  };
  if (address.is_v4()) return compare(address.to_v4().to_bytes(), network.to_v4().to_bytes());
  return compare(address.to_v6().to_bytes(), network.to_v6().to_bytes());
}

// A host name as DNS spells one: letters, digits, '-', '.', 1 to 253 bytes.
bool IsHostName(std::string_view host) {
  if (host.empty() || host.size() > 253) return false;
  return std::all_of(host.begin(), host.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '.';
  });
}

std::optional<net::ip::address> AddressLiteral(const std::string& host) {
  boost::system::error_code ec;
  net::ip::address address = net::ip::make_address(host, ec);
  if (ec) return std::nullopt;
  return address;
}

// Runs the io_context until the operation started by `start` calls back; its error.
template <typename Start>
beast::error_code Await(net::io_context& io, Start start) {
  beast::error_code result = net::error::would_block;
  start([&result](beast::error_code ec, auto&&...) { result = ec; });
  io.restart();
  io.run();
  return result;
}

// Sends the request and reads the answer's status on a connected stream (plain or TLS) whose
// lowest layer is a tcp_stream, every step by `deadline`.
template <typename Stream>
Result<int> Exchange(Stream& stream, net::io_context& io, bhttp::request<bhttp::string_body>& request,
                     std::chrono::steady_clock::time_point deadline) {
  beast::get_lowest_layer(stream).expires_at(deadline);
  if (beast::error_code ec = Await(io, [&](auto done) { bhttp::async_write(stream, request, done); }); ec) {
    return Unavailable("sending the notification: " + ec.message());
  }
  beast::flat_buffer buffer;
  bhttp::response_parser<bhttp::string_body> parser;
  parser.body_limit(kMaxAnswerBytes);
  parser.header_limit(16 * 1024);
  beast::get_lowest_layer(stream).expires_at(deadline);
  if (beast::error_code ec = Await(io, [&](auto done) { bhttp::async_read(stream, buffer, parser, done); }); ec) {
    return Unavailable("reading the receiver's answer: " + ec.message());
  }
  return static_cast<int>(parser.get().result_int());
}

}  // namespace

Result<NotifyUrl> ParseNotifyUrl(std::string_view url) {
  if (url.size() > NotifyUrl::kMaxNotifyUrlBytes) {
    return InvalidArgument("the --notify URL has " + std::to_string(url.size()) + " bytes, over the limit of " +
                           std::to_string(NotifyUrl::kMaxNotifyUrlBytes));
  }
  for (char c : url) {
    if (static_cast<unsigned char>(c) <= 0x20 || c == 0x7F) {
      return InvalidArgument("the --notify URL has a space or control character");
    }
  }
  NotifyUrl out;
  std::string_view rest;
  if (Lower(url.substr(0, 7)) == "http://") {
    rest = url.substr(7);
  } else if (Lower(url.substr(0, 8)) == "https://") {
    out.https = true;
    rest = url.substr(8);
  } else {
    return InvalidArgument("the --notify URL must start with http:// or https://");
  }
  if (rest.find('#') != std::string_view::npos) return InvalidArgument("the --notify URL has a #fragment");
  const size_t path_at = rest.find_first_of("/?");
  const std::string_view authority = rest.substr(0, path_at);
  if (authority.find('@') != std::string_view::npos) {
    return InvalidArgument("the --notify URL must not carry a user or password (user@host)");
  }
  std::string_view port_text;
  bool has_port = false;
  if (!authority.empty() && authority.front() == '[') {
    const size_t close = authority.find(']');
    if (close == std::string_view::npos) return InvalidArgument("the --notify URL has an unclosed [IPv6 address]");
    out.host = std::string(authority.substr(1, close - 1));
    const std::string_view after = authority.substr(close + 1);
    if (!after.empty() && after.front() != ':') return InvalidArgument("the --notify URL's host is malformed");
    if (!after.empty()) {
      has_port = true;
      port_text = after.substr(1);
    }
    if (auto literal = AddressLiteral(out.host); !literal || !literal->is_v6()) {
      return InvalidArgument("the --notify URL's [host] is not an IPv6 address");
    }
  } else {
    const size_t colon = authority.find(':');
    out.host = Lower(authority.substr(0, colon));
    if (colon != std::string_view::npos) {
      has_port = true;
      port_text = authority.substr(colon + 1);
    }
    if (!IsHostName(out.host)) return InvalidArgument("the --notify URL has no valid host");
  }
  out.port = out.https ? 443 : 80;
  if (has_port) {
    if (port_text.empty() || port_text.size() > 5 ||
        !std::all_of(port_text.begin(), port_text.end(), [](char c) { return c >= '0' && c <= '9'; })) {
      return InvalidArgument("the --notify URL's port is not a number");
    }
    const int port = std::stoi(std::string(port_text));
    if (port < 1 || port > 65535) return InvalidArgument("the --notify URL's port is outside 1-65535");
    out.port = static_cast<uint16_t>(port);
  }
  out.target = path_at == std::string_view::npos ? "/" : std::string(rest.substr(path_at));
  if (out.target.front() == '?') out.target = "/" + out.target;
  return out;
}

Result<NotifyPolicy> NotifyPolicy::Parse(const std::vector<std::string>& entries) {
  NotifyPolicy policy;
  for (const std::string& entry : entries) {
    if (entry == "*") {
      policy.any_public_ = true;
      continue;
    }
    if (const size_t slash = entry.find('/'); slash != std::string::npos) {
      auto network = AddressLiteral(entry.substr(0, slash));
      const std::string prefix_text = entry.substr(slash + 1);
      const int max_prefix = network && network->is_v4() ? 32 : 128;
      if (!network || prefix_text.empty() || prefix_text.size() > 3 ||
          !std::all_of(prefix_text.begin(), prefix_text.end(), [](char c) { return c >= '0' && c <= '9'; }) ||
          std::stoi(prefix_text) > max_prefix) {
        return InvalidArgument("--notify-allow '" + entry.substr(0, 64) + "' is not a CIDR block (e.g. 10.0.0.0/8)");
      }
      policy.blocks_.push_back({Canonical(*network), std::stoi(prefix_text)});
      continue;
    }
    if (auto address = AddressLiteral(entry)) {
      policy.blocks_.push_back({Canonical(*address), address->is_v4() ? 32 : 128});
      continue;
    }
    if (!IsHostName(entry)) {
      return InvalidArgument("--notify-allow '" + entry.substr(0, 64) + "' is not a host name, an address, a CIDR "
                             "block or *");
    }
    policy.hosts_.push_back(Lower(entry));
  }
  return policy;
}

bool NotifyPolicy::InBlock(const net::ip::address& address) const {
  const net::ip::address canonical = Canonical(address);
  return std::any_of(blocks_.begin(), blocks_.end(),
                     [&](const Block& b) { return PrefixMatches(canonical, b.network, b.prefix); });
}

bool NotifyPolicy::HostListed(const std::string& host) const {
  return std::find(hosts_.begin(), hosts_.end(), Lower(host)) != hosts_.end();
}

bool NotifyPolicy::AllowsAddress(const std::string& host, const net::ip::address& address) const {
  if (InBlock(address)) return true;
  if (IsSpecial(address)) return false;
  return any_public_ || HostListed(host);
}

Status NotifyPolicy::CheckSubmit(const NotifyUrl& url) const {
  if (!enabled()) {
    return FailedPrecondition("this fujid sends no notifications (its operator allows hosts with --notify-allow)");
  }
  if (auto literal = AddressLiteral(url.host)) {
    if (AllowsAddress(url.host, *literal)) return Status::Ok();
  } else if (any_public_ || HostListed(url.host) || !blocks_.empty()) {
    // A name is resolved, and each address checked, when the notification is sent.
    return Status::Ok();
  }
  return PermissionDenied("fujid may not send notifications to " + url.host + " (fujid --notify-allow)");
}

std::string NotificationBody(const store::JobRecord& job) {
  const nlohmann::json spec = nlohmann::json::parse(job.spec, nullptr, /*allow_exceptions=*/false);
  std::string model;
  if (spec.is_object() && spec.contains("model") && spec["model"].is_string()) {
    model = spec["model"].get<std::string>().substr(0, kMaxModelBytes);
  }
  const bool succeeded = job.state == store::JobState::kSucceeded;
  nlohmann::json body = {
      {"id", job.id},
      {"kind", store::JobKindName(job.kind)},
      {"state", store::JobStateName(job.state)},
      {"owner", job.owner},
      {"model", model},
      {"devices", job.devices},
      {"retries", job.attempts},  // RETRYINGs: the final attempt's number, from 0
      {"submitted_at_ms", job.submitted_at_ms},
      {"started_at_ms", job.started_at_ms.value_or(0)},
      {"finished_at_ms", job.finished_at_ms.value_or(0)},
      {"error", succeeded ? std::string() : job.reason.substr(0, kMaxErrorBytes)},
  };
  // Invalid UTF-8 (a cut character) is replaced, never thrown on.
  return body.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

Result<int> PostNotification(const NotifyUrl& url, const NotifyPolicy& policy, const std::string& body,
                             int64_t timeout_ms, const std::string& extra_ca_pem) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  net::io_context io;
  // Resolved once; only the addresses the policy allows are tried, so what was checked is what
  // is connected to.
  beast::error_code ec;
  tcp::resolver resolver(io);
  const auto results = resolver.resolve(url.host, std::to_string(url.port), ec);
  if (ec) return Unavailable("cannot resolve " + url.host + ": " + ec.message());
  std::vector<tcp::endpoint> allowed;
  for (const auto& entry : results) {
    if (policy.AllowsAddress(url.host, entry.endpoint().address())) allowed.push_back(entry.endpoint());
  }
  if (allowed.empty()) {
    return PermissionDenied(url.host + " resolves to no address fujid may reach (fujid --notify-allow)");
  }

  bhttp::request<bhttp::string_body> request{bhttp::verb::post, url.target, 11};
  // Host as RFC 9110 has it: brackets around an IPv6 address, the port unless it is the scheme's.
  std::string host_header = url.host.find(':') != std::string::npos ? "[" + url.host + "]" : url.host;
  if (url.port != (url.https ? 443 : 80)) host_header += ":" + std::to_string(url.port);
  request.set(bhttp::field::host, host_header);
  request.set(bhttp::field::user_agent, "fujid");
  request.set(bhttp::field::content_type, "application/json");
  request.set(bhttp::field::connection, "close");
  request.body() = body;
  request.prepare_payload();

  beast::tcp_stream tcp_stream(io);
  tcp_stream.expires_at(deadline);
  if (ec = Await(io, [&](auto done) { tcp_stream.async_connect(allowed, done); }); ec) {
    return Unavailable("cannot connect to " + url.host + ": " + ec.message());
  }
  if (!url.https) return Exchange(tcp_stream, io, request, deadline);

  net::ssl::context tls(net::ssl::context::tls_client);
  tls.set_default_verify_paths(ec);
  if (!extra_ca_pem.empty()) tls.add_certificate_authority(net::buffer(extra_ca_pem), ec);
  tls.set_verify_mode(net::ssl::verify_peer);
  beast::ssl_stream<beast::tcp_stream> stream(std::move(tcp_stream), tls);
  if (!AddressLiteral(url.host)) {
    SSL_set_tlsext_host_name(stream.native_handle(), url.host.c_str());
  }
  stream.set_verify_callback(net::ssl::host_name_verification(url.host));
  beast::get_lowest_layer(stream).expires_at(deadline);
  if (ec = Await(io, [&](auto done) { stream.async_handshake(net::ssl::stream_base::client, done); }); ec) {
    return Unavailable("TLS with " + url.host + " failed: " + ec.message());
  }
  return Exchange(stream, io, request, deadline);
}

Notifier::Notifier(store::JobStore* store, const store::Clock* clock, NotifyPolicy policy, NotifierOptions options)
    : store_(store), clock_(clock), policy_(std::move(policy)), options_(std::move(options)) {}

Notifier::~Notifier() { Stop(); }

void Notifier::Start() {
  thread_ = std::thread([this] { Run(); });
}

void Notifier::Stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_one();
  if (thread_.joinable()) thread_.join();
}

void Notifier::Run() {
  while (true) {
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait_for(lock, std::chrono::milliseconds(options_.poll_ms), [this] { return stop_; });
      if (stop_) return;
    }
    Result<std::vector<store::PendingNotification>> due = store_->DueNotifications(kDueBatch);
    if (!due.ok()) continue;  // the store's fault is reported by its health; try again later
    for (const store::PendingNotification& owed : *due) {
      {
        std::lock_guard<std::mutex> lock(mu_);
        if (stop_) return;
      }
      Deliver(owed);
    }
  }
}

void Notifier::Deliver(const store::PendingNotification& owed) {
  const store::JobRecord& job = owed.job;
  const std::string what = "notification of job " + std::to_string(job.id);
  Result<NotifyUrl> url = ParseNotifyUrl(job.notify_url);
  Result<int> posted = url.ok() ? PostNotification(*url, policy_, NotificationBody(job), options_.request_timeout_ms,
                                                   options_.extra_ca_pem)
                                : Result<int>(url.status());
  const int attempt = owed.attempts + 1;
  Status recorded;
  if (posted.ok() && *posted >= 200 && *posted < 300) {
    recorded = store_->RecordNotifyAttempt(job.id, store::NotifyOutcome::kDelivered);
  } else {
    // The host only: a URL's path and query may hold the receiver's secret.
    const std::string why = posted.ok() ? "HTTP " + std::to_string(*posted) : posted.status().message();
    const std::string to = url.ok() ? " to " + url->host : "";
    if (attempt >= options_.max_attempts || !url.ok()) {
      log::Warn(what + to + " given up after " + std::to_string(attempt) + " attempts: " + why);
      recorded = store_->RecordNotifyAttempt(job.id, store::NotifyOutcome::kGaveUp);
    } else {
      const int64_t backoff = options_.first_backoff_ms << std::min(attempt - 1, 20);
      log::Info(what + to + " failed (attempt " + std::to_string(attempt) + " of " +
                std::to_string(options_.max_attempts) + ", next in " + std::to_string(backoff) + " ms): " + why);
      recorded = store_->RecordNotifyAttempt(job.id, store::NotifyOutcome::kRetry, clock_->NowMs() + backoff);
    }
  }
  if (!recorded.ok()) log::Warn(what + ": cannot record its delivery: " + recorded.message());
}

}  // namespace fuji::daemon
