// Notifier: fuji submit --notify. When a job that named a URL ends, fujid POSTs its final state
// there as JSON, and tries again with backoff a bounded number of times; NotifyPolicy is the
// operator's say over which hosts fujid may reach that way (fujid --notify-allow).
//
// Delivery is at least once: the outcome of each POST is recorded in the job's row (migration 11)
// after the POST, so a fujid that dies between the two POSTs again after its restart. Owed
// notifications are found in the store, not in memory: a restart loses none.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <boost/asio/ip/address.hpp>

#include "daemon/store/job_store.h"
#include "lib/common/status.h"

namespace fuji::daemon {

// A --notify URL, parsed: http or https, a host (a name, an IPv4 address or a bracketed IPv6
// one), an optional port, a path with its query. No user:password@, no fragment, no spaces or
// control characters, at most kMaxNotifyUrlBytes.
struct NotifyUrl {
  static constexpr size_t kMaxNotifyUrlBytes = 2048;
  bool https = false;
  std::string host;    // without brackets
  uint16_t port = 0;   // 80 or 443 when the URL names none
  std::string target;  // "/..." (with the query), "/" when the URL has no path
};
// INVALID_ARGUMENT naming what is wrong (never echoing more than the scheme and host).
Result<NotifyUrl> ParseNotifyUrl(std::string_view url);

// Which addresses fujid may POST notifications to: fujid --notify-allow, a list of entries, each
//   - a CIDR block ("10.1.0.0/16", "127.0.0.1/32", "fd00::/8"): addresses in it, loopback and
//     private ones included;
//   - a host name ("hooks.example.com"): URLs naming that host, at any public address it resolves
//     to (and at loopback, link-local or private ones only when a CIDR entry holds them);
//   - "*": any host at a public address.
// Loopback, link-local (cloud metadata services), private, unspecified and multicast addresses
// are refused unless a CIDR entry holds them. With no entry at all, fujid sends no notification
// and refuses --notify at submit. Copyable; immutable once parsed, so thread-safe.
class NotifyPolicy {
 public:
  // INVALID_ARGUMENT for an entry that is none of the above.
  static Result<NotifyPolicy> Parse(const std::vector<std::string>& entries);
  bool enabled() const { return any_public_ || !hosts_.empty() || !blocks_.empty(); }
  // Whether a submit may name this URL: notifications are on, and its host is listed (or "*"
  // or a CIDR entry could allow it); an address literal is checked now. FAILED_PRECONDITION when
  // fujid sends no notifications, PERMISSION_DENIED when the host is not allowed.
  Status CheckSubmit(const NotifyUrl& url) const;
  // Whether fujid may connect to `address` for a URL naming `host` (resolved once: the address
  // checked is the one connected to).
  bool AllowsAddress(const std::string& host, const boost::asio::ip::address& address) const;

 private:
  struct Block {
    boost::asio::ip::address network;
    int prefix = 0;
  };
  bool InBlock(const boost::asio::ip::address& address) const;
  bool HostListed(const std::string& host) const;

  bool any_public_ = false;
  std::vector<std::string> hosts_;  // lower case
  std::vector<Block> blocks_;
};

struct NotifierOptions {
  int max_attempts = 5;               // POSTs before it gives up
  int64_t first_backoff_ms = 1000;    // before the second try; doubled before each next one
  int64_t request_timeout_ms = 5000;  // one POST: resolve, connect, TLS, send, answer
  int64_t poll_ms = 250;              // how often owed notifications are looked for
  // The system's CA certificates verify https receivers; tests add their own CA here (PEM).
  std::string extra_ca_pem;
};

// The JSON body POSTed for a job (at most a few KiB: the error and model are cut).
std::string NotificationBody(const store::JobRecord& job);

// One POST of `body` to `url` under `policy`, within timeout_ms: the HTTP status, or why there
// was none (a refused address, a timeout, a TLS or connection failure). Only 2xx is delivered.
// The answer's body is read up to 64 KiB and dropped.
Result<int> PostNotification(const NotifyUrl& url, const NotifyPolicy& policy, const std::string& body,
                             int64_t timeout_ms, const std::string& extra_ca_pem = "");

// A thread that delivers the store's owed notifications, one at a time, each POST bounded by
// request_timeout_ms: a receiver that never answers delays the others by at most that per try.
// store and clock (the store's) must outlive it. Start once; Stop (or the destructor) joins the
// thread.
class Notifier {
 public:
  Notifier(store::JobStore* store, const store::Clock* clock, NotifyPolicy policy, NotifierOptions options);
  ~Notifier();
  Notifier(const Notifier&) = delete;
  Notifier& operator=(const Notifier&) = delete;
  void Start();
  void Stop();

 private:
  void Run();
  // Delivers (or tries once more) one notification, and records how it went.
  void Deliver(const store::PendingNotification& owed);

  store::JobStore* store_;
  const store::Clock* clock_;
  const NotifyPolicy policy_;
  const NotifierOptions options_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  std::thread thread_;
};

}  // namespace fuji::daemon
