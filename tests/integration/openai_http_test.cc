// fujid's OpenAI-compatible HTTP API end to end: a real fujid (--http-listen, TLS with its own CA)
// and fuji-agent with a random tiny model, called by the official openai npm client
// (tests/http/openai_client.mjs) and by curl; a client that goes away cancels its job. Then the
// HTTP server's bounds on its own, with small limits: body, headers, a slow client, connections,
// and a client gone mid-request; and the wire format without I/O (requests, stops, templates).
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/mount.h>
#include <sys/socket.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <stdexcept>
#include <thread>

#include "daemon/http/chat_template.h"
#include "daemon/http/http_server.h"
#include "daemon/http/openai_gateway.h"
#include "daemon/http/openai_protocol.h"
#include "tests/integration/process_util.h"

namespace fuji::testing {
namespace {

using namespace std::chrono_literals;

const std::string kSource = FUJI_SOURCE_DIR;

// A command's exit code and its stdout and stderr together.
struct Shell {
  int exit_code = -1;
  std::string out;
};
Shell RunShell(const std::string& command, const std::string& out_file) {
  const int status = std::system((command + " >" + Quote(out_file) + " 2>&1 </dev/null").c_str());
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, Slurp(out_file)};
}

class OpenAiHttpTest : public ServiceTestBase {
 protected:
  static void SetUpTestSuite() {
    MakeRoot("openai_http_test");
    models_ = root_ + "/models";
    ASSERT_EQ(std::system(("mkdir -p " + models_).c_str()), 0);
    ASSERT_EQ(Fuji({"model", "init", "--arch", "tiny", "--out", models_ + "/tiny"}).exit_code, 0);
    ASSERT_EQ(Fuji({"model", "init", "--arch", "tiny", "--seed", "7", "--out", models_ + "/chatty"})
                  .exit_code,
              0);
    std::ofstream(models_ + "/chatty/chat_template.json") << R"({
  "roles": {
    "system": {"prefix": "### System:\n", "suffix": "\n\n"},
    "user": {"prefix": "### User:\n", "suffix": "\n\n"},
    "assistant": {"prefix": "### Assistant:\n", "suffix": "\n\n"}
  },
  "generation_prompt": "### Assistant:\n",
  "stop": ["### User:"]
})";
    // Outside --models: named by its full path, then by its name once an agent keeps it warm.
    ASSERT_EQ(Fuji({"model", "init", "--arch", "tiny", "--seed", "3", "--out", root_ + "/outside"})
                  .exit_code,
              0);
    // Slow enough to be left mid-run: named by its full path, outside --models.
    ASSERT_EQ(Fuji({"model", "init", "--arch", "tiny", "--layers", "8", "--width", "256", "--heads",
                    "4", "--positions", "4096", "--out", root_ + "/slow"})
                  .exit_code,
              0);
  }
  static void TearDownTestSuite() { RemoveRoot(); }

  // fujid as ServiceTestBase::StartDaemon starts it, with the HTTP API on a free port of the
  // loopback offering the models under models_; sets http_port_ from its startup line.
  std::unique_ptr<Service> StartDaemon() {
    const std::string state = dir_ + "/fujid";
    const std::string log = dir_ + "/fujid.log";
    std::ofstream(log, std::ios::trunc).close();
    auto d = std::make_unique<Service>(
        log, std::vector<std::string>{kBin + "fujid", "--db", state + "/fujid.db", "--listen",
                                      "127.0.0.1:0", "--lease-ttl-ms", "6000", "--allow-read",
                                      root_, "--http-listen", "127.0.0.1:0", "--models", models_});
    const std::regex port_re("port (\\d+)"),
        http_re("HTTP API on https://127\\.0\\.0\\.1:(\\d+)/v1");
    for (int i = 0; i < 1500 && http_port_ == 0; ++i) {
      std::smatch m;
      const std::string text = d->log();
      if (std::regex_search(text, m, port_re)) address_ = "127.0.0.1:" + m[1].str();
      if (std::regex_search(text, m, http_re)) http_port_ = std::stoi(m[1].str());
      std::this_thread::sleep_for(20ms);
    }
    EXPECT_NE(http_port_, 0) << d->log();
    ca_ = state + "/ca.crt";
    admin_token_ = Slurp(state + "/admin.token");
    while (!admin_token_.empty() && admin_token_.back() == '\n') admin_token_.pop_back();
    token_ = AddUser("alice");
    users_of_ = dir_;
    cli_env_ = CliEnv(token_);
    return d;
  }

  std::string Url(const std::string& path) const {
    return "https://127.0.0.1:" + std::to_string(http_port_) + path;
  }

  // curl with fujid's CA and alice's token; extra arguments as they are (quote them).
  Shell Curl(const std::string& args) {
    return RunShell("curl -sS --cacert " + Quote(ca_) + " -H " +
                        Quote("Authorization: Bearer " + token_) + " " + args,
                    dir_ + "/curl.out");
  }

  inline static std::string models_;
  int http_port_ = 0;
};

TEST_F(OpenAiHttpTest, TheOfficialClientAndCurlGetCompletionsAndErrors) {
  ASSERT_EQ(std::system("command -v node >/dev/null && command -v curl >/dev/null"), 0)
      << "node and curl are needed";
  auto daemon = StartDaemon();
  auto agent = StartAgent("node-a", 2);

  // ---- The openai npm client: every check in one script; it exits 1 when one fails ----
  const std::string module = kSource + "/third_party/npm/node_modules/openai/index.mjs";
  ASSERT_TRUE(std::ifstream(module).good()) << module << " is missing: run scripts/bootstrap";
  Shell node =
      RunShell("NODE_EXTRA_CA_CERTS=" + Quote(ca_) + " FUJI_OPENAI_MODULE=" + Quote(module) +
                   " FUJI_HTTP_BASE=" + Quote(Url("/v1")) + " FUJI_API_KEY=" + Quote(token_) +
                   " FUJI_MODEL=tiny FUJI_CHAT_MODEL=chatty node " +
                   Quote(kSource + "/tests/http/openai_client.mjs"),
               dir_ + "/node.out");
  std::printf("%s", node.out.c_str());
  EXPECT_EQ(node.exit_code, 0) << node.out << daemon->log() << agent->log();

  // ---- curl: one completion, its job in fuji's own API ----
  const std::string body =
      R"({"model": "tiny", "prompt": "Mt. Fuji is", "max_tokens": 6, "temperature": 0})";
  Shell whole = Curl("-D " + Quote(dir_ + "/headers") + " -H 'Content-Type: application/json' -d " +
                     Quote(body) + " " + Quote(Url("/v1/completions")));
  ASSERT_EQ(whole.exit_code, 0) << whole.out;
  const nlohmann::json completion = nlohmann::json::parse(whole.out, nullptr, false);
  ASSERT_TRUE(completion.is_object()) << whole.out;
  const std::string text = completion["choices"][0].value("text", "");
  EXPECT_FALSE(text.empty()) << whole.out;
  EXPECT_LE(completion["usage"].value("completion_tokens", 0), 6) << whole.out;
  std::smatch m;
  const std::string headers = Slurp(dir_ + "/headers");
  ASSERT_TRUE(std::regex_search(headers, m, std::regex("Fuji-Job-Id: (\\d+)"))) << headers;
  const nlohmann::json job = Show(std::stoll(m[1].str()));
  EXPECT_EQ(job.value("state", ""), "SUCCEEDED") << job.dump();
  EXPECT_EQ(job.value("kind", ""), "infer") << job.dump();
  const nlohmann::json listed = Json({"jobs", "--output", "json"});
  EXPECT_TRUE(job.value("shareable", false)) << job.dump();
  EXPECT_EQ(job.value("owner", ""), "alice") << job.dump();
  // Six of the client's (whole, streamed, stop whole and streamed, chat whole and streamed), one
  // of curl's so far; refused requests make none.
  EXPECT_EQ(listed["jobs"].size(), 7u) << "each completion is one job: " << listed.dump();

  // ---- curl: the same request streamed (server-sent events) ----
  const std::string streamed_body =
      R"({"model": "tiny", "prompt": "Mt. Fuji is", "max_tokens": 6, "temperature": 0, "stream": true})";
  Shell sse = Curl("-N -d " + Quote(streamed_body) + " " + Quote(Url("/v1/completions")));
  ASSERT_EQ(sse.exit_code, 0) << sse.out;
  std::istringstream lines(sse.out);
  std::string line, joined, last_data;
  int chunks = 0;
  while (std::getline(lines, line)) {
    if (line.empty()) continue;
    ASSERT_EQ(line.rfind("data: ", 0), 0u) << "an event line: " << line;
    last_data = line.substr(6);
    if (last_data == "[DONE]") continue;
    const nlohmann::json chunk = nlohmann::json::parse(last_data, nullptr, false);
    ASSERT_TRUE(chunk.is_object()) << line;
    EXPECT_EQ(chunk.value("object", ""), "text_completion") << line;
    joined += chunk["choices"][0].value("text", "");
    ++chunks;
  }
  EXPECT_EQ(last_data, "[DONE]") << sse.out;
  EXPECT_GE(chunks, 2) << sse.out;
  EXPECT_EQ(joined, text) << sse.out;

  // ---- A model outside --models: by its path, then by its name while the agent keeps it warm ----
  const std::string by_path =
      R"({"model": ")" + root_ + R"(/outside", "prompt": "Mt. Fuji is", "max_tokens": 3})";
  Shell outside = Curl("-d " + Quote(by_path) + " " + Quote(Url("/v1/completions")));
  ASSERT_NE(outside.out.find("\"completion_tokens\":3"), std::string::npos) << outside.out;
  bool listed_warm = false;
  for (int i = 0; i < 150 && !listed_warm; ++i) {
    listed_warm =
        Curl(Quote(Url("/v1/models"))).out.find("\"id\":\"outside\"") != std::string::npos;
    if (!listed_warm) std::this_thread::sleep_for(200ms);
  }
  EXPECT_TRUE(listed_warm) << "the warm model is listed by its name: "
                           << Curl(Quote(Url("/v1/models"))).out
                           << Json({"workers", "--output", "json"}).dump();
  const std::string by_name = R"({"model": "outside", "prompt": "Mt. Fuji is", "max_tokens": 3})";
  outside = Curl("-d " + Quote(by_name) + " " + Quote(Url("/v1/completions")));
  EXPECT_NE(outside.out.find("\"completion_tokens\":3"), std::string::npos) << outside.out;

  // ---- Many at once over TLS, half of them streamed (a TLS read beside the writes once corrupted
  // OpenSSL's state and crashed fujid here) ----
  constexpr int kConcurrent = 24;
  std::string many;
  for (int i = 0; i < kConcurrent; ++i) {
    const std::string request = R"({"model": "tiny", "prompt": "request )" + std::to_string(i) +
                                R"(", "max_tokens": 4, "stream": )" +
                                (i % 2 == 0 ? "true" : "false") + "}";
    many += "curl -sS --cacert " + Quote(ca_) + " -H " + Quote("Authorization: Bearer " + token_) +
            " -d " + Quote(request) + " " + Quote(Url("/v1/completions")) + " > " +
            Quote(dir_ + "/many." + std::to_string(i)) + " 2>&1 &\n";
  }
  ASSERT_EQ(RunShell("bash -c " + Quote(many + "wait"), dir_ + "/many.out").exit_code, 0);
  for (int i = 0; i < kConcurrent; ++i) {
    const std::string answer = Slurp(dir_ + "/many." + std::to_string(i));
    const bool complete = i % 2 == 0 ? answer.find("data: [DONE]") != std::string::npos
                                     : answer.find("\"completion_tokens\"") != std::string::npos;
    EXPECT_TRUE(complete) << "request " << i << ": " << answer;
  }

  // ---- Bounds and errors seen from outside ----
  Shell status = RunShell("curl -sS --cacert " + Quote(ca_) + " -o /dev/null -w '%{http_code}' " +
                              Quote(Url("/v1/models")),
                          dir_ + "/curl.out");
  EXPECT_EQ(status.out, "401") << "no token";
  ASSERT_EQ(
      std::system(("head -c 5000000 /dev/zero | tr '\\0' x > " + Quote(dir_ + "/big")).c_str()), 0);
  status = Curl("-o /dev/null -w '%{http_code}' --data-binary @" + Quote(dir_ + "/big") + " " +
                Quote(Url("/v1/completions")));
  EXPECT_EQ(status.out, "413") << "a body over 4 MiB";
  status = Curl("-o /dev/null -w '%{http_code}' " + Quote(Url("/v2/whatever")));
  EXPECT_EQ(status.out, "404");
  EXPECT_EQ(daemon->Stop(), 0) << "SIGTERM stops fujid with its HTTP API cleanly\n"
                               << daemon->log();
}

TEST_F(OpenAiHttpTest, AClientThatGoesAwayCancelsItsJob) {
  auto daemon = StartDaemon();
  auto agent = StartAgent("node-a", 1);
  const std::string body =
      R"({"model": ")" + root_ + R"(/slow", "prompt": "Mt. Fuji is", "max_tokens": 4000,
                               "ignore_eos": true, "stream": true})";
  // curl gives up after 5 s, long before 4000 tokens of this model.
  Shell leaving = Curl("-N --max-time 5 -d " + Quote(body) + " " + Quote(Url("/v1/completions")));
  EXPECT_EQ(leaving.exit_code, 28) << "curl timed out: " << leaving.out;
  const nlohmann::json listed = Json({"jobs", "--output", "json"});
  ASSERT_EQ(listed["jobs"].size(), 1u) << listed.dump();
  const int64_t id = listed["jobs"][0].value("id", int64_t{0});
  const auto left = std::chrono::steady_clock::now();
  ASSERT_TRUE(WaitForState(id, "CANCELLED", 30s))
      << Show(id).dump() << daemon->log() << agent->log();
  EXPECT_LT(std::chrono::steady_clock::now() - left, 10s) << "cancelled as the client left";
  EXPECT_NE(agent->log().find("job " + std::to_string(id)), std::string::npos)
      << "it ran: " << agent->log();
}

TEST_F(OpenAiHttpTest, AFullDatabaseDiskIsA503) {
  if (::geteuid() != 0) GTEST_SKIP() << "mounting a tmpfs needs root";
  const std::string state = dir_ + "/fujid";
  ASSERT_EQ(std::system(("mkdir -p " + Quote(state)).c_str()), 0);
  if (::mount("tmpfs", state.c_str(), "tmpfs", 0, "size=6m,mode=0700") != 0)
    GTEST_SKIP() << "no tmpfs here";
  struct Unmount {
    std::string dir;
    ~Unmount() { ::umount2(dir.c_str(), MNT_DETACH); }
  } unmount{state};
  auto daemon = StartDaemon();  // no agent: nothing runs
  {
    std::ofstream ballast(state + "/ballast", std::ios::binary);
    const std::string block(64 << 10, 'x');
    while (ballast.write(block.data(), block.size())) {
    }
  }
  // Submits that still fit wait for an agent (curl gives up; its job is cancelled); once the
  // database cannot grow, a completion is refused at once with fujid's reason.
  const std::string body =
      R"({"model": "tiny", "prompt": ")" + std::string(64 << 10, 'p') + R"(", "max_tokens": 2})";
  std::ofstream(dir_ + "/body.json") << body;
  Shell answer;
  for (int i = 0; i < 40 && answer.out.find("\"code\":\"unavailable\"") == std::string::npos; ++i) {
    answer = Curl("--max-time 2 -w ' %{http_code}' -d @" + Quote(dir_ + "/body.json") + " " +
                  Quote(Url("/v1/completions")));
  }
  EXPECT_NE(answer.out.find("database's disk is full"), std::string::npos) << answer.out;
  EXPECT_NE(answer.out.find(" 503"), std::string::npos) << answer.out;
  EXPECT_NE(answer.out.find("\"type\":\"server_error\""), std::string::npos) << answer.out;
}

// ---- The HTTP server alone, with small limits, over plain TCP ----

int Connect(int port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  EXPECT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  return fd;
}

void SendAll(int fd, const std::string& bytes) {
  size_t sent = 0;
  while (sent < bytes.size()) {
    const ssize_t n = ::send(fd, bytes.data() + sent, bytes.size() - sent, MSG_NOSIGNAL);
    if (n <= 0) return;  // the server may close before it has read everything
    sent += static_cast<size_t>(n);
  }
}

// What the server sends until it closes the connection, or until `timeout` ("" then).
struct Received {
  std::string bytes;
  bool closed = false;
};
Received ReadUntilClosed(int fd, std::chrono::milliseconds timeout) {
  Received r;
  const auto end = std::chrono::steady_clock::now() + timeout;
  char buffer[4096];
  while (std::chrono::steady_clock::now() < end) {
    pollfd p{fd, POLLIN, 0};
    const int left = static_cast<int>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                          end - std::chrono::steady_clock::now())
                                          .count());
    if (::poll(&p, 1, std::max(left, 1)) <= 0) continue;
    const ssize_t n = ::recv(fd, buffer, sizeof buffer, 0);
    if (n <= 0) {
      r.closed = true;
      break;
    }
    r.bytes.append(buffer, static_cast<size_t>(n));
  }
  ::close(fd);
  return r;
}

TEST(HttpServerBoundsTest, BodyHeadersSlowClientsConnectionsAndClientsThatLeave) {
  std::mutex mu;
  std::condition_variable cv;
  std::string last_body;
  bool saw_gone = false;
  http::HttpServerOptions options;
  options.listen = "127.0.0.1:0";
  options.max_body_bytes = 1024;
  options.max_header_bytes = 1024;
  options.read_timeout_ms = 600;
  options.max_connections = 3;
  auto server = http::HttpServer::Start(
      options,
      [&](const http::HttpRequest& request, const std::shared_ptr<http::HttpResponder>& out) {
        if (request.target == "/throw")
          throw std::runtime_error("a handler that fails before it answers");
        if (request.target == "/throw-mid-stream") {
          out->StartEvents();
          out->SendEvent("{\"n\":1}");
          throw std::runtime_error("a handler that fails mid-stream");
        }
        if (request.target == "/wait") {
          // Answers only once its client is gone.
          out->OnGone([&] {
            std::lock_guard<std::mutex> lock(mu);
            saw_gone = true;
            cv.notify_all();
          });
          std::unique_lock<std::mutex> lock(mu);
          cv.wait_for(lock, 10s, [&] { return saw_gone; });
          return;
        }
        {
          std::lock_guard<std::mutex> lock(mu);
          last_body = request.body;
        }
        out->Send(200, "application/json", R"({"ok":true})");
      },
      &http::OpenAiGateway::ErrorBody);
  ASSERT_TRUE(server.ok()) << server.status().ToString();
  const int port = (*server)->port();
  auto request = [](const std::string& target, const std::string& body,
                    const std::string& extra = "") {
    return "POST " + target +
           " HTTP/1.1\r\nHost: x\r\nContent-Length: " + std::to_string(body.size()) + "\r\n" +
           extra + "\r\n" + body;
  };

  // An ordinary request.
  int fd = Connect(port);
  SendAll(fd, request("/v1/completions", "{\"a\":1}"));
  Received r = ReadUntilClosed(fd, 5s);
  EXPECT_EQ(r.bytes.rfind("HTTP/1.1 200 OK\r\n", 0), 0u) << r.bytes;
  EXPECT_NE(r.bytes.find("{\"ok\":true}"), std::string::npos) << r.bytes;
  EXPECT_TRUE(r.closed);
  {
    std::lock_guard<std::mutex> lock(mu);
    EXPECT_EQ(last_body, "{\"a\":1}");
  }

  // A client that waits for 100 Continue before its body is told to go on.
  fd = Connect(port);
  SendAll(fd,
          "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 7\r\nExpect: "
          "100-continue\r\n\r\n");
  char interim[64] = {};
  ASSERT_GT(::recv(fd, interim, sizeof interim - 1, 0), 0);
  EXPECT_EQ(std::string(interim), "HTTP/1.1 100 Continue\r\n\r\n");
  SendAll(fd, "{\"b\":2}");
  r = ReadUntilClosed(fd, 5s);
  EXPECT_EQ(r.bytes.rfind("HTTP/1.1 200 OK\r\n", 0), 0u) << r.bytes;
  {
    std::lock_guard<std::mutex> lock(mu);
    EXPECT_EQ(last_body, "{\"b\":2}");
  }

  // A body over the limit is 413 with OpenAI's error JSON, before it is read.
  fd = Connect(port);
  SendAll(fd, request("/v1/completions", std::string(2000, 'x')));
  r = ReadUntilClosed(fd, 5s);
  EXPECT_EQ(r.bytes.rfind("HTTP/1.1 413 ", 0), 0u) << r.bytes;
  EXPECT_NE(r.bytes.find("\"type\":\"invalid_request_error\""), std::string::npos) << r.bytes;

  // Headers over the limit are 431.
  fd = Connect(port);
  SendAll(fd, request("/v1/completions", "{}", "X-Padding: " + std::string(2000, 'p') + "\r\n"));
  r = ReadUntilClosed(fd, 5s);
  EXPECT_EQ(r.bytes.rfind("HTTP/1.1 431 ", 0), 0u) << r.bytes;

  // Garbage is 400.
  fd = Connect(port);
  SendAll(fd, "NOT HTTP AT ALL\r\n\r\n");
  r = ReadUntilClosed(fd, 5s);
  EXPECT_EQ(r.bytes.rfind("HTTP/1.1 400 ", 0), 0u) << r.bytes;

  // A slow client loses its connection after the read deadline, not before.
  auto start = std::chrono::steady_clock::now();
  fd = Connect(port);
  SendAll(fd, "POST /v1/completions HTTP/1.1\r\nHost: x\r\n");
  r = ReadUntilClosed(fd, 5s);
  const auto waited = std::chrono::steady_clock::now() - start;
  EXPECT_TRUE(r.closed) << "the server closed the slow connection";
  EXPECT_TRUE(r.bytes.empty()) << r.bytes;
  EXPECT_GE(waited, 500ms);
  EXPECT_LT(waited, 3s);

  // Connections past the bound are closed at once; the ones held stay open.
  std::vector<int> held;
  for (int i = 0; i < 3; ++i) held.push_back(Connect(port));
  std::this_thread::sleep_for(100ms);
  fd = Connect(port);
  start = std::chrono::steady_clock::now();
  r = ReadUntilClosed(fd, 2s);
  EXPECT_TRUE(r.closed);
  EXPECT_LT(std::chrono::steady_clock::now() - start, 400ms)
      << "closed at once, not by the read deadline";
  for (int held_fd : held) ::close(held_fd);
  std::this_thread::sleep_for(800ms);  // the server sees them closed (or timed out)

  // A handler that throws before it answers is a 500; one that throws mid-stream cuts the stream
  // (no last chunk) instead of leaving its client waiting.
  fd = Connect(port);
  SendAll(fd, request("/throw", "{}"));
  r = ReadUntilClosed(fd, 5s);
  EXPECT_EQ(r.bytes.rfind("HTTP/1.1 500 ", 0), 0u) << r.bytes;
  fd = Connect(port);
  SendAll(fd, request("/throw-mid-stream", "{}"));
  r = ReadUntilClosed(fd, 5s);
  EXPECT_TRUE(r.closed);
  EXPECT_EQ(r.bytes.rfind("HTTP/1.1 200 OK\r\n", 0), 0u) << r.bytes;
  EXPECT_NE(r.bytes.find("data: {\"n\":1}\n\n"), std::string::npos) << r.bytes;
  EXPECT_EQ(r.bytes.find("\r\n0\r\n\r\n"), std::string::npos) << "no last chunk: " << r.bytes;

  // A client that leaves mid-request is seen at once: its handler's OnGone runs.
  fd = Connect(port);
  SendAll(fd, request("/wait", "{}"));
  std::this_thread::sleep_for(200ms);
  ::close(fd);
  {
    std::unique_lock<std::mutex> lock(mu);
    EXPECT_TRUE(cv.wait_for(lock, 3s, [&] { return saw_gone; })) << "OnGone did not run";
  }
  (*server)->Stop();
}

// ---- OpenAI's wire format, without I/O ----

http::CompletionRequest Parsed(const std::string& body,
                               http::Endpoint endpoint = http::Endpoint::kCompletions) {
  http::CompletionRequest request;
  std::optional<http::ApiError> error = http::ParseCompletionRequest(body, endpoint, &request);
  EXPECT_FALSE(error.has_value()) << body << ": " << (error ? error->message : "");
  return request;
}

// The param a refused body names ("?" when it was not refused).
std::string Refused(const std::string& body,
                    http::Endpoint endpoint = http::Endpoint::kCompletions) {
  http::CompletionRequest request;
  std::optional<http::ApiError> error = http::ParseCompletionRequest(body, endpoint, &request);
  if (!error) return "?";
  EXPECT_EQ(error->status, 400) << body;
  return error->param;
}

TEST(OpenAiProtocolTest, RequestsAreCheckedFieldByField) {
  http::CompletionRequest r = Parsed(R"({"model": "m", "prompt": "hi"})");
  EXPECT_EQ(r.max_tokens, 16);
  EXPECT_EQ(r.temperature, 1.0);
  EXPECT_EQ(r.prompt.value_or(""), "hi");
  EXPECT_EQ(Parsed(R"({"model": "m", "prompt": ["hi"]})").prompt.value_or(""), "hi");
  EXPECT_EQ(Parsed(R"({"model": "m", "prompt": [1, 2, 3]})").prompt_ids,
            (std::vector<int32_t>{1, 2, 3}));
  EXPECT_EQ(Parsed(R"({"model": "m", "prompt": [[4, 5]]})").prompt_ids,
            (std::vector<int32_t>{4, 5}));
  EXPECT_EQ(Parsed(R"({"model": "m", "prompt": "x", "stop": "##"})").stop,
            std::vector<std::string>{"##"});
  EXPECT_EQ(Refused(R"({"model": "m", "prompt": ["a", "b"]})"), "prompt");
  EXPECT_EQ(Refused(R"({"model": "m", "prompt": ""})"), "prompt");
  EXPECT_EQ(Refused(R"({"model": "m", "prompt": [-1]})"), "prompt");
  EXPECT_EQ(Refused(R"({"prompt": "x"})"), "model");
  EXPECT_EQ(Refused(R"({"model": "m", "prompt": "x", "max_tokens": 0})"), "max_tokens");
  EXPECT_EQ(Refused(R"({"model": "m", "prompt": "x", "max_tokens": 1.5})"), "max_tokens");
  EXPECT_EQ(Refused(R"({"model": "m", "prompt": "x", "temperature": 3})"), "temperature");
  EXPECT_EQ(Refused(R"({"model": "m", "prompt": "x", "top_p": 0})"), "top_p");
  EXPECT_EQ(Refused(R"({"model": "m", "prompt": "x", "n": 2})"), "n");
  EXPECT_EQ(Refused(R"({"model": "m", "prompt": "x", "seed": -1})"), "seed");
  EXPECT_EQ(Refused(R"({"model": "m", "prompt": "x", "stop": ["a", "b", "c", "d", "e"]})"), "stop");
  EXPECT_EQ(Refused(R"({"model": "m", "prompt": "x", "stop": [""]})"), "stop");
  EXPECT_EQ(Refused(R"({"model": "m", "prompt": "x", "logprobs": 2})"), "logprobs");
  EXPECT_EQ(Refused(R"({"model": "m", "prompt": "x", "echo": true})"), "echo");
  EXPECT_EQ(Refused(R"({"model": "m", "prompt": "x", "presence_penalty": 0.5})"),
            "presence_penalty");
  EXPECT_EQ(Refused(R"({"model": "m", "prompt": "x", "precision": "fp8"})"), "precision");
  EXPECT_EQ(Refused(R"({"model": "m", "prompt": "x", "stream": "yes"})"), "stream");
  EXPECT_EQ(Refused("[1, 2]"), "");
  EXPECT_EQ(Refused(std::string(100, '[') + std::string(100, ']')), "") << "nested past the bound";
  // Neutral values of what fuji cannot do are taken.
  Parsed(
      R"({"model": "m", "prompt": "x", "n": 1, "echo": false, "logprobs": null, "presence_penalty": 0})");

  http::CompletionRequest chat = Parsed(
      R"({"model": "m",
          "messages": [{"role": "user",
                        "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}],
          "max_completion_tokens": 7})",
      http::Endpoint::kChat);
  ASSERT_EQ(chat.messages.size(), 1u);
  EXPECT_EQ(chat.messages[0].content, "ab");
  EXPECT_EQ(chat.max_tokens, 7);
  EXPECT_EQ(Refused(R"({"model": "m", "messages": []})", http::Endpoint::kChat), "messages");
  EXPECT_EQ(Refused(R"({"model": "m", "messages": [{"content": "x"}]})", http::Endpoint::kChat),
            "messages");
}

TEST(OpenAiProtocolTest, TheSpecFollowsTheRequest) {
  nlohmann::json spec = http::InferSpecJson(
      Parsed(R"({"model": "m", "prompt": "x", "temperature": 0})"), "/d/m", "cpu", 9);
  EXPECT_EQ(spec["greedy"], true);
  EXPECT_FALSE(spec.contains("seed"));
  EXPECT_EQ(spec["model"], "/d/m");
  EXPECT_EQ(spec["max_new_tokens"], 16);
  spec = http::InferSpecJson(
      Parsed(R"({"model": "m", "prompt": [3], "top_p": 0.5, "stop": ["a"]})"), "/d/m", "cuda", 9);
  EXPECT_EQ(spec["greedy"], false);
  EXPECT_EQ(spec["temperature"], 1.0);
  EXPECT_EQ(spec["top_p"], 0.5);
  EXPECT_EQ(spec["seed"], 9) << "a sampled request without a seed gets one";
  EXPECT_EQ(spec["prompt_ids"], nlohmann::json::array({3}));
  EXPECT_EQ(spec["stop"], nlohmann::json::array({"a"}));
  EXPECT_EQ(spec["device"], "cuda");

  EXPECT_EQ(http::FinishReason({{"finish_reason", "eos"}}, 16, false), "stop");
  EXPECT_EQ(http::FinishReason({{"finish_reason", "length"}}, 16, false), "length");
  EXPECT_EQ(http::FinishReason({{"output_ids", {1, 2}}}, 16, false), "stop");
  EXPECT_EQ(http::FinishReason({{"output_ids", {1, 2}}}, 2, false), "length");
  EXPECT_EQ(http::FinishReason({{"finish_reason", "length"}}, 16, true), "stop");
}

TEST(OpenAiProtocolTest, StopStringsCutTheTextAsItStreams) {
  http::StopCutter cutter({"###", "END"});
  EXPECT_EQ(cutter.Feed("Hel"), "Hel");
  EXPECT_EQ(cutter.Feed("lo #"), "lo ") << "'#' may begin a stop string: held back";
  EXPECT_EQ(cutter.Feed("#"), "");
  EXPECT_EQ(cutter.Feed("# world"), "");
  EXPECT_TRUE(cutter.stopped());
  EXPECT_EQ(cutter.Feed("more"), "");
  EXPECT_EQ(cutter.Flush(), "");

  http::StopCutter partial({"abc"});
  EXPECT_EQ(partial.Feed("xa"), "x");
  EXPECT_EQ(partial.Feed("bd"), "abd") << "not a stop string after all";
  EXPECT_EQ(partial.Feed("ab"), "");
  EXPECT_EQ(partial.Flush(), "ab") << "the held tail at the end";
  EXPECT_FALSE(partial.stopped());

  http::StopCutter none({});
  EXPECT_EQ(none.Feed("anything"), "anything");
}

TEST(OpenAiProtocolTest, ChatTemplatesRenderMessagesAndRefuseUnknownRoles) {
  Result<http::ChatTemplate> t = http::ChatTemplate::Parse(
      R"({"bos": "<s>", "roles": {"user": {"prefix": "U:", "suffix": "|"}, "assistant": {"prefix": "A:"}},
          "generation_prompt": "A:", "stop": ["U:"]})",
      "t.json");
  ASSERT_TRUE(t.ok()) << t.status().ToString();
  Result<std::string> prompt = t->Render({{"user", "hi"}, {"assistant", "yo"}, {"user", "?"}});
  ASSERT_TRUE(prompt.ok()) << prompt.status().ToString();
  EXPECT_EQ(*prompt, "<s>U:hi|A:yoU:?|A:");
  EXPECT_EQ(t->stop, std::vector<std::string>{"U:"});
  EXPECT_FALSE(t->Render({{"system", "x"}}).ok());
  EXPECT_FALSE(http::ChatTemplate::Parse(R"({"roles": {}})", "t.json").ok());
  EXPECT_FALSE(http::ChatTemplate::Parse(R"({"roles": {"user": {"prefix": 1}}})", "t.json").ok());
  EXPECT_EQ(http::ChatTemplate::Load("/nonexistent/chat_template.json").status().code(),
            StatusCode::kNotFound);
}

}  // namespace
}  // namespace fuji::testing
