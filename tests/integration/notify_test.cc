// fuji submit --notify end to end: fujid's server (in this process, over TLS, on the real clock)
// POSTs each ended job's final state to a real HTTP receiver on the loopback (a small server in
// this test, on its own thread): exactly once per ended job; again after failures, with backoff;
// a bounded number of times to a receiver that never answers, while fujid answers calls as usual;
// after a restart for a job that ended before it. Bad URLs and hosts the operator did not allow
// are refused at submit. The URL parser and the address policy are checked on their own first.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "daemon/server/notifier.h"
#include "tests/integration/fujid_test_util.h"
#include "tests/integration/process_util.h"

namespace fuji::testing {
namespace {

using ::testing::HasSubstr;

// An HTTP receiver on 127.0.0.1: answers the first fail_first requests 503 and the rest 204, or
// (silent) reads each request and never answers, holding the connection open.
class Receiver {
 public:
  explicit Receiver(int fail_first = 0, bool silent = false) : fail_first_(fail_first), silent_(silent) {
    listen_fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    EXPECT_EQ(::bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
    EXPECT_EQ(::listen(listen_fd_, 16), 0);
    socklen_t len = sizeof addr;
    ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&addr), &len);
    port_ = ntohs(addr.sin_port);
    thread_ = std::thread([this] { Serve(); });
  }
  ~Receiver() {
    stop_ = true;
    thread_.join();
    for (int fd : held_) ::close(fd);
    ::close(listen_fd_);
  }

  int port() const { return port_; }
  // Every request as received: "PATH HOST\n" then its body.
  std::vector<std::string> requests() {
    std::lock_guard<std::mutex> lock(mu_);
    return requests_;
  }
  std::vector<std::chrono::steady_clock::time_point> times() {
    std::lock_guard<std::mutex> lock(mu_);
    return times_;
  }
  // Waits until `n` requests arrived (or the patience ran out); how many did.
  size_t WaitFor(size_t n) {
    const auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(kPatienceMs);
    while (requests().size() < n && std::chrono::steady_clock::now() < end) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return requests().size();
  }

 private:
  void Serve() {
    while (!stop_) {
      pollfd p{listen_fd_, POLLIN, 0};
      if (::poll(&p, 1, 50) <= 0) continue;
      const int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (fd < 0) continue;
      std::string request = ReadRequest(fd);
      size_t count;
      {
        std::lock_guard<std::mutex> lock(mu_);
        requests_.push_back(request);
        times_.push_back(std::chrono::steady_clock::now());
        count = requests_.size();
      }
      if (silent_) {
        held_.push_back(fd);
        continue;
      }
      const std::string answer = static_cast<int>(count) <= fail_first_
                                     ? "HTTP/1.1 503 Busy\r\nContent-Length: 4\r\nConnection: close\r\n\r\nbusy"
                                     : "HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n";
      EXPECT_EQ(::write(fd, answer.data(), answer.size()), static_cast<ssize_t>(answer.size()));
      ::close(fd);
    }
  }
  // The request's path and body (headers up to the blank line, then Content-Length bytes).
  static std::string ReadRequest(int fd) {
    std::string data;
    char buffer[4096];
    size_t body_at = std::string::npos, length = 0;
    while (data.size() < 65536) {
      pollfd p{fd, POLLIN, 0};
      if (::poll(&p, 1, 2000) <= 0) break;
      const ssize_t n = ::read(fd, buffer, sizeof buffer);
      if (n <= 0) break;
      data.append(buffer, static_cast<size_t>(n));
      if (body_at == std::string::npos && (body_at = data.find("\r\n\r\n")) != std::string::npos) {
        body_at += 4;
        const size_t at = data.find("Content-Length: ");
        if (at != std::string::npos && at < body_at) length = std::stoul(data.substr(at + 16));
      }
      if (body_at != std::string::npos && data.size() >= body_at + length) break;
    }
    const size_t space = data.find(' ');
    const std::string path = data.substr(space + 1, data.find(' ', space + 1) - space - 1);
    const size_t host_at = data.find("\r\nHost: ");
    const std::string host =
        host_at == std::string::npos ? "" : data.substr(host_at + 8, data.find("\r\n", host_at + 8) - host_at - 8);
    return path + " " + host + "\n" + (body_at == std::string::npos ? "" : data.substr(body_at));
  }

  const int fail_first_;
  const bool silent_;
  int listen_fd_ = -1;
  int port_ = 0;
  std::atomic<bool> stop_{false};
  std::vector<int> held_;
  std::mutex mu_;
  std::vector<std::string> requests_;
  std::vector<std::chrono::steady_clock::time_point> times_;
  std::thread thread_;
};

nlohmann::json BodyOf(const std::string& request) {
  return nlohmann::json::parse(request.substr(request.find('\n') + 1), nullptr, false);
}

class NotifyTest : public FujidTest {
 protected:
  // fujid allowed to notify the loopback, with quick retries for a test.
  static daemon::ServerOptions NotifyOptions() {
    daemon::ServerOptions options = Options();
    auto policy = daemon::NotifyPolicy::Parse({"127.0.0.1/32"});
    EXPECT_TRUE(policy.ok());
    options.notify_policy = *policy;
    options.notify.max_attempts = 5;
    options.notify.first_backoff_ms = 100;
    options.notify.request_timeout_ms = 500;
    options.notify.poll_ms = 50;
    return options;
  }

  grpc::Status SubmitNotify(const std::string& url, v1::Job* job) {
    grpc::ClientContext context;
    v1::SubmitRequest request;
    request.set_kind("infer");
    request.set_spec_json(Spec());
    request.set_notify_url(url);
    v1::SubmitResponse response;
    grpc::Status status = jobs_->Submit(&context, request, &response);
    if (job != nullptr) *job = response.job();
    return status;
  }

  void Cancel(int64_t id) {
    grpc::ClientContext context;
    v1::CancelJobRequest request;
    request.set_id(id);
    v1::Job job;
    ASSERT_TRUE(jobs_->CancelJob(&context, request, &job).ok());
    ASSERT_EQ(WaitForState(id, v1::CANCELLED).state(), v1::CANCELLED);
  }

  // The job's notification once it is no longer owed (or as it stands when the patience ran out).
  store::NotifyStatus WaitDone(int64_t id) {
    const auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(kPatienceMs);
    auto state = store_->NotifyState(id);
    while (state.ok() && state->outcome.empty() && std::chrono::steady_clock::now() < end) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
      state = store_->NotifyState(id);
    }
    EXPECT_TRUE(state.ok());
    return state.ok() ? *state : store::NotifyStatus{};
  }

  std::string Url(const Receiver& receiver, const std::string& path = "/hook") {
    return "http://127.0.0.1:" + std::to_string(receiver.port()) + path;
  }
};

TEST(NotifyUrlTest, ParsesHttpAndHttpsAndRefusesTheRest) {
  auto url = daemon::ParseNotifyUrl("https://Hooks.Example.com:8443/a/b?token=x");
  ASSERT_TRUE(url.ok()) << url.status().ToString();
  EXPECT_TRUE(url->https);
  EXPECT_EQ(url->host, "hooks.example.com");
  EXPECT_EQ(url->port, 8443);
  EXPECT_EQ(url->target, "/a/b?token=x");
  url = daemon::ParseNotifyUrl("http://[::1]/x");
  ASSERT_TRUE(url.ok()) << url.status().ToString();
  EXPECT_EQ(url->host, "::1");
  EXPECT_EQ(url->port, 80);
  url = daemon::ParseNotifyUrl("http://10.1.2.3");
  ASSERT_TRUE(url.ok());
  EXPECT_EQ(url->target, "/");
  for (const std::string bad :
       {"ftp://host/x", "file:///etc/passwd", "http://user:pw@host/", "http://user@host/", "http:///x", "http://",
        "http://host:0/", "http://host:70000/", "http://host:8x/", "http://ho st/", "http://host/a b",
        "http://host/#frag", "http://[::1/x", "http://[10.0.0.1]/", "gopher://host", "http://ho_st/"}) {
    EXPECT_FALSE(daemon::ParseNotifyUrl(bad).ok()) << bad;
  }
  EXPECT_FALSE(daemon::ParseNotifyUrl("http://host/" + std::string(2100, 'a')).ok());
}

TEST(NotifyPolicyTest, RefusesLoopbackLinkLocalAndPrivateUnlessACidrHoldsThem) {
  namespace ip = boost::asio::ip;
  auto any = daemon::NotifyPolicy::Parse({"*"});
  ASSERT_TRUE(any.ok());
  EXPECT_TRUE(any->AllowsAddress("h", ip::make_address("93.184.216.34")));
  for (const char* special : {"127.0.0.1", "169.254.169.254", "10.0.0.1", "172.16.5.4", "192.168.1.1", "100.64.0.1",
                              "0.0.0.0", "224.0.0.1", "::1", "fe80::1", "fd00::1", "::ffff:127.0.0.1", "::"}) {
    EXPECT_FALSE(any->AllowsAddress("h", ip::make_address(special))) << special;
  }
  auto listed = daemon::NotifyPolicy::Parse({"hooks.example.com", "10.0.0.0/8", "::1"});
  ASSERT_TRUE(listed.ok());
  EXPECT_TRUE(listed->AllowsAddress("hooks.example.com", ip::make_address("93.184.216.34")));
  EXPECT_FALSE(listed->AllowsAddress("other.example.com", ip::make_address("93.184.216.34")));
  EXPECT_FALSE(listed->AllowsAddress("hooks.example.com", ip::make_address("127.0.0.1")));
  EXPECT_TRUE(listed->AllowsAddress("any", ip::make_address("10.9.8.7")));
  EXPECT_TRUE(listed->AllowsAddress("any", ip::make_address("::ffff:10.9.8.7")));
  EXPECT_TRUE(listed->AllowsAddress("any", ip::make_address("::1")));
  EXPECT_FALSE(listed->AllowsAddress("any", ip::make_address("11.0.0.1")));
  for (const std::string bad : {"10.0.0.0/33", "10.0.0.0/", "a b", "::1/129", "10.0.0.0/x"}) {
    EXPECT_FALSE(daemon::NotifyPolicy::Parse({bad}).ok()) << bad;
  }
  auto none = daemon::NotifyPolicy::Parse({});
  ASSERT_TRUE(none.ok());
  EXPECT_FALSE(none->enabled());
}

// An https receiver (Python's http.server with a certificate for "localhost" only, that no
// system CA signed): refused without its CA, refused by host name with it when the URL names
// another host (127.0.0.1), taken with its CA and the right name.
TEST_F(NotifyTest, HttpsReceiversAreVerifiedByCaAndHostName) {
  const std::string cert = dir_ + "/receiver.crt", key = dir_ + "/receiver.key", got = dir_ + "/received";
  ASSERT_EQ(std::system(("openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 "
                         "-subj /CN=localhost -addext subjectAltName=DNS:localhost -keyout " + key + " -out " +
                         cert + " 2>/dev/null").c_str()),
            0);
  std::ofstream(dir_ + "/receiver.py") << R"(import http.server, ssl, sys
class Handler(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get('Content-Length', 0)))
        with open(sys.argv[3], 'ab') as f:
            f.write(body + b'\n')
        self.send_response(200)
        self.send_header('Content-Length', '0')
        self.end_headers()
    def log_message(self, *args):
        pass
server = http.server.HTTPServer(('127.0.0.1', 0), Handler)
tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
tls.load_cert_chain(sys.argv[1], sys.argv[2])
server.socket = tls.wrap_socket(server.socket, server_side=True)
print('port', server.server_address[1], flush=True)
server.serve_forever()
)";
  Service receiver(dir_ + "/receiver.log", {"python3", dir_ + "/receiver.py", cert, key, got});
  std::string port;
  for (int i = 0; i < 500 && port.empty(); ++i) {
    const std::string log = receiver.log();
    if (const size_t at = log.find("port "); at != std::string::npos && log.find('\n', at) != std::string::npos) {
      port = log.substr(at + 5, log.find('\n', at) - at - 5);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  ASSERT_FALSE(port.empty()) << receiver.log();
  auto policy = daemon::NotifyPolicy::Parse({"127.0.0.1/32"});
  ASSERT_TRUE(policy.ok());
  auto by_name = daemon::ParseNotifyUrl("https://localhost:" + port + "/hook");
  auto by_address = daemon::ParseNotifyUrl("https://127.0.0.1:" + port + "/hook");
  ASSERT_TRUE(by_name.ok() && by_address.ok());
  const std::string ca = Slurp(cert);

  Result<int> untrusted = daemon::PostNotification(*by_name, *policy, R"({"id":1})", 5000);
  ASSERT_FALSE(untrusted.ok());
  EXPECT_THAT(untrusted.status().message(), HasSubstr("TLS"));
  Result<int> wrong_name = daemon::PostNotification(*by_address, *policy, R"({"id":2})", 5000, ca);
  ASSERT_FALSE(wrong_name.ok());
  EXPECT_THAT(wrong_name.status().message(), HasSubstr("TLS"));
  Result<int> posted = daemon::PostNotification(*by_name, *policy, R"({"id":3})", 5000, ca);
  ASSERT_TRUE(posted.ok()) << posted.status().ToString();
  EXPECT_EQ(*posted, 200);
  EXPECT_EQ(Slurp(got), "{\"id\":3}\n");
}

TEST_F(NotifyTest, BadUrlsAndHostsNotAllowedAreRefusedAtSubmit) {
  StartServer(NotifyOptions());
  struct Case {
    std::string url;
    grpc::StatusCode code;
  };
  const std::vector<Case> cases = {
      {"ftp://127.0.0.1/x", grpc::StatusCode::INVALID_ARGUMENT},
      {"http://user:secret@127.0.0.1/x", grpc::StatusCode::INVALID_ARGUMENT},
      {"http://127.0.0.1/" + std::string(3000, 'a'), grpc::StatusCode::INVALID_ARGUMENT},
      {"http://127.0.0.1/a b", grpc::StatusCode::INVALID_ARGUMENT},
      {"http://127.0.0.1:99999/", grpc::StatusCode::INVALID_ARGUMENT},
      {"http://169.254.169.254/latest/meta-data/", grpc::StatusCode::PERMISSION_DENIED},
      {"http://10.0.0.1/hook", grpc::StatusCode::PERMISSION_DENIED},
      {"http://[::1]/hook", grpc::StatusCode::PERMISSION_DENIED},
  };
  for (const Case& c : cases) {
    grpc::Status status = SubmitNotify(c.url, nullptr);
    EXPECT_EQ(status.error_code(), c.code) << c.url.substr(0, 80) << ": " << status.error_message();
    EXPECT_EQ(status.error_message().find("secret"), std::string::npos) << status.error_message();
  }
  // Nothing was queued.
  grpc::ClientContext context;
  v1::ListJobsResponse listed;
  ASSERT_TRUE(jobs_->ListJobs(&context, v1::ListJobsRequest(), &listed).ok());
  EXPECT_EQ(listed.jobs_size(), 0);

  // The CLI's --notify (submit infer and finetune share it) reaches fujid as the job's URL.
  const std::string env = "HOME=" + Quote(dir_) + " XDG_CONFIG_HOME= FUJI_SERVER= FUJI_CA=" + Quote(dir_ + "/ca.crt") +
                          " FUJI_TOKEN=" + Quote(user_token_);
  auto submit = [&](const std::string& url) {
    return RunFuji({"submit", "infer", "--model", dir_ + "/model", "--prompt", "hello", "--max-new-tokens", "4",
                    "--notify", url, "--server", "127.0.0.1:" + std::to_string(server_->port())},
                   dir_, env);
  };
  CliResult refused = submit("ftp://127.0.0.1/x");
  EXPECT_EQ(refused.exit_code, 2) << refused.err;
  EXPECT_THAT(refused.err, HasSubstr("http:// or https://"));
  CliResult queued = submit("http://127.0.0.1:9/hook");
  ASSERT_EQ(queued.exit_code, 0) << queued.err;
  auto job = store_->Get(std::stoll(queued.out));
  ASSERT_TRUE(job.ok());
  EXPECT_EQ(job->notify_url, "http://127.0.0.1:9/hook");

  // A fujid without --notify-allow sends no notifications and says so.
  StopServer();
  StartServer();
  grpc::Status status = SubmitNotify("http://127.0.0.1:8080/hook", nullptr);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::FAILED_PRECONDITION) << status.error_message();
  EXPECT_THAT(status.error_message(), HasSubstr("--notify-allow"));

  // fujid --notify-allow '*': any public address, never its own loopback, private networks or a
  // metadata service.
  StopServer();
  daemon::ServerOptions any = Options();
  any.notify_policy = *daemon::NotifyPolicy::Parse({"*"});
  StartServer(any);
  for (const std::string url : {"http://169.254.169.254/latest/meta-data/", "http://127.0.0.1:8080/",
                                "http://192.168.1.10/", "http://[fe80::1]/", "http://0.0.0.0/"}) {
    status = SubmitNotify(url, nullptr);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::PERMISSION_DENIED) << url << ": " << status.error_message();
  }
  EXPECT_TRUE(SubmitNotify("https://93.184.216.34/hook", nullptr).ok());
  EXPECT_TRUE(SubmitNotify("https://hooks.example.com/hook", nullptr).ok());  // checked when resolved
}

TEST_F(NotifyTest, EachEndedJobIsPostedExactlyOnce) {
  StartServer(NotifyOptions());
  Receiver receiver;
  v1::Job cancelled, succeeded, quiet;
  ASSERT_TRUE(SubmitNotify(Url(receiver, "/hook?key=k1"), &cancelled).ok());
  // A name: resolved once, and only its loopback IPv4 address is allowed (::1 is not).
  ASSERT_TRUE(SubmitNotify("http://localhost:" + std::to_string(receiver.port()) + "/done", &succeeded).ok());
  ASSERT_TRUE(Submit(Spec(), &quiet).ok());
  Cancel(cancelled.id());
  Cancel(quiet.id());
  ASSERT_EQ(receiver.WaitFor(1), 1u);

  // The other runs on a test agent and succeeds.
  Register("w", 1);
  RunToSuccess("w", succeeded.id(), R"({"text":"hi"})");
  ASSERT_EQ(receiver.WaitFor(2), 2u);
  EXPECT_EQ(WaitDone(cancelled.id()).outcome, "delivered");
  EXPECT_EQ(WaitDone(succeeded.id()).outcome, "delivered");
  // Many polls later, still one POST each.
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  const std::vector<std::string> requests = receiver.requests();
  ASSERT_EQ(requests.size(), 2u);

  EXPECT_EQ(requests[0].substr(0, requests[0].find('\n')),
            "/hook?key=k1 127.0.0.1:" + std::to_string(receiver.port()));
  const nlohmann::json first = BodyOf(requests[0]);
  ASSERT_TRUE(first.is_object()) << requests[0];
  EXPECT_EQ(first["id"], cancelled.id());
  EXPECT_EQ(first["state"], "CANCELLED");
  EXPECT_EQ(first["kind"], "infer");
  EXPECT_EQ(first["owner"], "tester");
  EXPECT_EQ(first["model"], dir_ + "/model");
  EXPECT_NE(first["error"], "");
  EXPECT_EQ(first["retries"], 0);
  EXPECT_EQ(first["devices"], 1);
  EXPECT_EQ(first["started_at_ms"], 0);  // it never ran
  EXPECT_GT(first["finished_at_ms"].get<int64_t>(), 0);
  const nlohmann::json second = BodyOf(requests[1]);
  EXPECT_EQ(requests[1].substr(0, requests[1].find('\n')), "/done localhost:" + std::to_string(receiver.port()));
  EXPECT_EQ(second["id"], succeeded.id());
  EXPECT_EQ(second["state"], "SUCCEEDED");
  EXPECT_EQ(second["error"], "");
  EXPECT_EQ(store_->NotifyState(succeeded.id())->attempts, 1);
  EXPECT_EQ(store_->NotifyState(quiet.id())->attempts, 0);
}

TEST_F(NotifyTest, AFailingReceiverIsTriedAgainWithBackoff) {
  StartServer(NotifyOptions());
  Receiver receiver(/*fail_first=*/2);
  v1::Job job;
  ASSERT_TRUE(SubmitNotify(Url(receiver), &job).ok());
  Cancel(job.id());
  ASSERT_EQ(receiver.WaitFor(3), 3u);
  const store::NotifyStatus state = WaitDone(job.id());
  EXPECT_EQ(state.outcome, "delivered");
  EXPECT_EQ(state.attempts, 3);
  // 100 ms before the second POST, 200 before the third.
  const auto times = receiver.times();
  EXPECT_GE(times[1] - times[0], std::chrono::milliseconds(100));
  EXPECT_GE(times[2] - times[1], std::chrono::milliseconds(200));
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  EXPECT_EQ(receiver.requests().size(), 3u);
  for (const std::string& request : receiver.requests()) EXPECT_EQ(BodyOf(request)["id"], job.id());
}

TEST_F(NotifyTest, AReceiverThatNeverAnswersIsGivenUpWhileFujidServes) {
  daemon::ServerOptions options = NotifyOptions();
  options.notify.max_attempts = 3;
  options.notify.request_timeout_ms = 300;
  options.notify.first_backoff_ms = 50;
  StartServer(options);
  Receiver receiver(/*fail_first=*/0, /*silent=*/true);
  v1::Job job;
  ASSERT_TRUE(SubmitNotify(Url(receiver), &job).ok());
  const auto start = std::chrono::steady_clock::now();
  Cancel(job.id());
  // fujid answers at once while the notifier waits on the receiver.
  while (receiver.requests().size() < 3 && std::chrono::steady_clock::now() - start < std::chrono::seconds(10)) {
    const auto asked = std::chrono::steady_clock::now();
    grpc::ClientContext context;
    v1::HealthResponse health;
    ASSERT_TRUE(jobs_->Health(&context, v1::HealthRequest(), &health).ok());
    EXPECT_LT(std::chrono::steady_clock::now() - asked, std::chrono::milliseconds(250));
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  const store::NotifyStatus state = WaitDone(job.id());
  EXPECT_EQ(state.outcome, "gave_up");
  EXPECT_EQ(state.attempts, 3);
  // Three tries of 300 ms and backoffs of 50 and 100 ms: well under 3 s.
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(3));
  std::this_thread::sleep_for(std::chrono::milliseconds(400));
  EXPECT_EQ(receiver.requests().size(), 3u);
}

TEST_F(NotifyTest, ANotificationOwedAtARestartIsDeliveredAfterIt) {
  Receiver receiver;
  // The first fujid never gets round to it (it would look in an hour): as if it died first.
  daemon::ServerOptions slow = NotifyOptions();
  slow.notify.poll_ms = 3600 * 1000;
  StartServer(slow);
  v1::Job job;
  ASSERT_TRUE(SubmitNotify(Url(receiver), &job).ok());
  Cancel(job.id());
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  EXPECT_TRUE(receiver.requests().empty());
  EXPECT_EQ(store_->NotifyState(job.id())->outcome, "");
  StopServer();

  StartServer(NotifyOptions());
  ASSERT_EQ(receiver.WaitFor(1), 1u);
  EXPECT_EQ(WaitDone(job.id()).outcome, "delivered");
  EXPECT_EQ(BodyOf(receiver.requests()[0])["state"], "CANCELLED");
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  EXPECT_EQ(receiver.requests().size(), 1u);
}

}  // namespace
}  // namespace fuji::testing
