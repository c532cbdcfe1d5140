// fujid's /metrics scraped by a real Prometheus (Debian's prometheus package): a real fujid over
// TLS and one fuji-agent run a few jobs; Prometheus scrapes https://.../metrics every second with
// fujid's CA and the metrics token, and what its query API answers must equal what the fuji CLI
// says: jobs by kind and state (`fuji jobs --all --output json`) and each device's memory
// (`fuji workers --output json`). Who may scrape is checked with curl. Skipped (exit 77 as ctest's
// skip) when /usr/bin/prometheus is missing: scripts/bootstrap installs it.
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include <chrono>
#include <cmath>
#include <map>
#include <regex>
#include <thread>

#include "tests/integration/process_util.h"

namespace fuji::testing {
namespace {

using namespace std::chrono_literals;
constexpr double kMiB = 1024.0 * 1024.0;

struct Shell {
  int exit_code;
  std::string out;
};

Shell RunShell(const std::string& command, const std::string& out_file) {
  const int status = std::system((command + " > " + Quote(out_file) + " 2>&1").c_str());
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, Slurp(out_file)};
}

// A port of the loopback that was free a moment ago.
int FreePort() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  socklen_t length = sizeof(addr);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &length);
  ::close(fd);
  return ntohs(addr.sin_port);
}

class MetricsPrometheusTest : public ServiceTestBase {
 protected:
  static void SetUpTestSuite() {
    MakeRoot("metrics_prometheus_test");
    ASSERT_EQ(Fuji({"model", "init", "--arch", "tiny", "--seed", "5", "--out", root_ + "/tiny"})
                  .exit_code,
              0);
  }
  static void TearDownTestSuite() { RemoveRoot(); }

  // fujid as StartDaemon starts it, with /metrics on its TLS HTTP listener and on a plaintext
  // loopback one, and a metrics token (mode 0600) in dir_/metrics.token.
  std::unique_ptr<Service> StartDaemonWithMetrics() {
    const std::string state = dir_ + "/fujid";
    metrics_token_file_ = dir_ + "/metrics.token";
    metrics_token_ = "metrics-scrape-token-0123456789";
    std::ofstream(metrics_token_file_) << metrics_token_ << "\n";
    ::chmod(metrics_token_file_.c_str(), 0600);
    const std::string log = dir_ + "/fujid.log";
    auto d = std::make_unique<Service>(
        log, std::vector<std::string>{kBin + "fujid", "--db", state + "/fujid.db", "--listen",
                                      "127.0.0.1:0", "--lease-ttl-ms", "6000", "--allow-read",
                                      root_, "--http-listen", "127.0.0.1:0", "--metrics-listen",
                                      "127.0.0.1:0", "--metrics-token-file", metrics_token_file_});
    const std::regex port_re("port (\\d+)"), http_re("https://127\\.0\\.0\\.1:(\\d+)/v1"),
        plain_re("http://127\\.0\\.0\\.1:(\\d+)/metrics");
    for (int i = 0; i < 1500 && plain_port_ == 0; ++i) {
      std::smatch m;
      const std::string text = d->log();
      if (std::regex_search(text, m, port_re)) address_ = "127.0.0.1:" + m[1].str();
      if (std::regex_search(text, m, http_re)) https_port_ = std::stoi(m[1].str());
      if (std::regex_search(text, m, plain_re)) plain_port_ = std::stoi(m[1].str());
      std::this_thread::sleep_for(20ms);
    }
    EXPECT_NE(plain_port_, 0) << d->log();
    ca_ = state + "/ca.crt";
    admin_token_ = Slurp(state + "/admin.token");
    while (!admin_token_.empty() && admin_token_.back() == '\n') admin_token_.pop_back();
    token_ = AddUser("alice");
    users_of_ = dir_;
    cli_env_ = CliEnv(token_);
    return d;
  }

  // The HTTP status curl gets for `url` with `token` ("": none).
  int Status(const std::string& url, const std::string& token) {
    std::string command = "curl -s -o /dev/null -w '%{http_code}' --cacert " + Quote(ca_);
    if (!token.empty()) command += " -H " + Quote("Authorization: Bearer " + token);
    Shell r = RunShell(command + " " + Quote(url), dir_ + "/status.out");
    return r.exit_code == 0 ? std::atoi(r.out.c_str()) : -1;
  }

  // Prometheus's answer to an instant query: each series' labels and value.
  std::vector<std::pair<nlohmann::json, double>> Query(const std::string& query) {
    Shell r = RunShell(
        "curl -s --get --data-urlencode " + Quote("query=" + query) + " " +
            Quote("http://127.0.0.1:" + std::to_string(prometheus_port_) + "/api/v1/query"),
        dir_ + "/query.out");
    std::vector<std::pair<nlohmann::json, double>> series;
    nlohmann::json j = nlohmann::json::parse(r.out, nullptr, false);
    if (!j.is_object() || j.value("status", "") != "success") return series;
    for (const nlohmann::json& s : j["data"]["result"]) {
      series.emplace_back(s["metric"], std::stod(s["value"][1].get<std::string>()));
    }
    return series;
  }

  std::string metrics_token_, metrics_token_file_;
  int https_port_ = 0, plain_port_ = 0, prometheus_port_ = 0;
};

TEST_F(MetricsPrometheusTest, PrometheusSeesWhatTheCliSays) {
  if (::access("/usr/bin/prometheus", X_OK) != 0) {
    std::printf(
        "/usr/bin/prometheus is missing (apt-get install prometheus, or scripts/bootstrap): "
        "skipped\n");
    std::exit(77);
  }
  auto daemon = StartDaemonWithMetrics();
  // A job cancelled while it waits for an agent, before there is one.
  CliResult first =
      Fuji({"submit", "infer", "--model", root_ + "/tiny", "--prompt", "x", "--output", "json"},
           address_);
  ASSERT_EQ(first.exit_code, 0) << first.err;
  const int64_t cancelled = nlohmann::json::parse(first.out)["id"].get<int64_t>();
  ASSERT_EQ(Fuji({"cancel", std::to_string(cancelled)}, address_).exit_code, 0);
  ASSERT_TRUE(WaitForState(cancelled, "CANCELLED", 60s)) << Show(cancelled).dump();
  auto agent = StartAgent("node-a", 2);

  // ---- Who may scrape ----
  const std::string https = "https://127.0.0.1:" + std::to_string(https_port_) + "/metrics";
  const std::string plain = "http://127.0.0.1:" + std::to_string(plain_port_) + "/metrics";
  EXPECT_EQ(Status(https, ""), 401) << "no --metrics-open-on-loopback: a token is needed";
  EXPECT_EQ(Status(https, token_), 403) << "alice is no admin";
  EXPECT_EQ(Status(https, "fuji_u_1_nonsense"), 401);
  EXPECT_EQ(Status(https, admin_token_), 200);
  EXPECT_EQ(Status(https, metrics_token_), 200);
  EXPECT_EQ(Status(plain, ""), 401);
  EXPECT_EQ(Status(plain, metrics_token_), 200);

  // ---- Two jobs that succeed ----
  std::vector<int64_t> ids;
  for (int i = 0; i < 2; ++i) {
    CliResult r = Fuji({"submit", "infer", "--model", root_ + "/tiny", "--prompt", "Mt. Fuji is",
                        "--max-new-tokens", "4", "--output", "json"},
                       address_);
    ASSERT_EQ(r.exit_code, 0) << r.err;
    ids.push_back(nlohmann::json::parse(r.out)["id"].get<int64_t>());
  }
  for (int64_t id : ids)
    ASSERT_TRUE(WaitForState(id, "SUCCEEDED", 120s)) << Show(id).dump() << agent->log();

  // ---- Prometheus scraping fujid over TLS with the metrics token, every second ----
  prometheus_port_ = FreePort();
  const std::string config = dir_ + "/prometheus.yml";
  std::ofstream(config) << "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
                        << "scrape_configs:\n  - job_name: fujid\n    scheme: https\n"
                        << "    tls_config:\n      ca_file: " << ca_ << "\n"
                        << "    authorization:\n      credentials_file: " << metrics_token_file_
                        << "\n"
                        << "    static_configs:\n      - targets: ['127.0.0.1:" << https_port_
                        << "']\n";
  Service prometheus(
      dir_ + "/prometheus.log",
      {"/usr/bin/prometheus", "--config.file=" + config, "--storage.tsdb.path=" + dir_ + "/tsdb",
       "--web.listen-address=127.0.0.1:" + std::to_string(prometheus_port_)});

  // What the CLI says, by kind and state.
  nlohmann::json jobs = nlohmann::json::parse(
      FujiAs(admin_token_, {"jobs", "--all", "--output", "json"}, address_).out, nullptr, false);
  ASSERT_TRUE(jobs.is_object()) << jobs;
  std::map<std::pair<std::string, std::string>, double> expected;
  for (const nlohmann::json& job : jobs["jobs"])
    ++expected[{job["kind"].get<std::string>(), job["state"].get<std::string>()}];
  ASSERT_EQ(expected[std::make_pair(std::string("infer"), std::string("SUCCEEDED"))], 2);

  // Prometheus holds the latest scrape within a few seconds of starting.
  std::map<std::pair<std::string, std::string>, double> seen;
  for (int i = 0; i < 600; ++i) {
    seen.clear();
    for (const auto& [labels, value] : Query("fuji_jobs{job=\"fujid\"}")) {
      if (value != 0) seen[{labels.value("kind", ""), labels.value("state", "")}] = value;
    }
    if (seen == expected) break;
    std::this_thread::sleep_for(100ms);
  }
  EXPECT_EQ(seen, expected) << Slurp(dir_ + "/query.out") << prometheus.log();

  // ---- Devices: the series equal `fuji workers`. The agent samples every 50 ms, so it is
  // stopped (SIGSTOP) for a moment: its latest readings stay put while `fuji workers` reads them
  // and Prometheus scrapes after that ----
  ASSERT_EQ(::kill(agent->pid(), SIGSTOP), 0);
  struct Resume {
    pid_t pid;
    ~Resume() { ::kill(pid, SIGCONT); }
  } resume{agent->pid()};
  std::this_thread::sleep_for(300ms);  // a heartbeat on its way lands
  const double read_at_s =
      std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
  nlohmann::json workers = Json({"workers", "--output", "json"});
  ASSERT_TRUE(workers.is_object() && workers["workers"].size() == 1) << workers;
  const nlohmann::json& node = workers["workers"][0];
  ASSERT_EQ(node["id"], "node-a");
  EXPECT_EQ(Query("fuji_agent_up{agent=\"node-a\"}").at(0).second, 1);
  EXPECT_EQ(Query("fuji_agent_devices{agent=\"node-a\"}").at(0).second, node["devices"].size());
  double free_mib = 0, total_mib = 0;
  for (const nlohmann::json& device : node["devices"]) {
    const std::string index = std::to_string(device["index"].get<int>());
    auto total = Query("fuji_device_memory_total_bytes{agent=\"node-a\",device=\"" + index + "\"}");
    ASSERT_EQ(total.size(), 1u) << Slurp(dir_ + "/query.out");
    EXPECT_EQ(total[0].second, device["total_mib"].get<double>() * kMiB) << "device " << index;
    auto used = Query("fuji_device_memory_used_bytes{agent=\"node-a\",device=\"" + index + "\"}");
    ASSERT_EQ(used.size(), 1u) << Slurp(dir_ + "/query.out");
    EXPECT_GT(used[0].second, 0);
    EXPECT_LE(used[0].second, total[0].second);
    auto utilization =
        Query("fuji_device_utilization_ratio{agent=\"node-a\",device=\"" + index + "\"}");
    if (device["kind"] == "cpu") {
      // A CPU agent samples its host's memory, not each device's utilization.
      EXPECT_TRUE(utilization.empty()) << Slurp(dir_ + "/query.out");
    } else {
      ASSERT_EQ(utilization.size(), 1u) << Slurp(dir_ + "/query.out");
      EXPECT_GE(utilization[0].second, 0);
      EXPECT_LE(utilization[0].second, 1);
    }
    free_mib += device["free_mib"].get<double>();
    total_mib += device["total_mib"].get<double>();
  }
  // A scrape taken after `fuji workers` read: the same numbers.
  for (int i = 0; i < 100; ++i) {
    auto scraped = Query("timestamp(fuji_agent_free_memory_bytes{agent=\"node-a\"})");
    if (!scraped.empty() && scraped[0].second > read_at_s + 0.2) break;
    std::this_thread::sleep_for(100ms);
  }
  auto free = Query("fuji_agent_free_memory_bytes{agent=\"node-a\"}");
  ASSERT_EQ(free.size(), 1u) << Slurp(dir_ + "/query.out");
  EXPECT_EQ(free[0].second, free_mib * kMiB);
  EXPECT_GT(total_mib, 0);

  // ---- fujid's own series: counters, histograms ----
  EXPECT_EQ(Query("fuji_job_submits_total{kind=\"infer\"}").at(0).second, 3);
  EXPECT_EQ(Query("fuji_job_run_seconds_count{kind=\"infer\"}").at(0).second, 2);
  EXPECT_EQ(Query("fuji_job_queue_wait_seconds_count{kind=\"infer\"}").at(0).second, 2);
  EXPECT_EQ(Query("fuji_job_transitions_total{from=\"RUNNING\",to=\"SUCCEEDED\"}").at(0).second, 2);
  EXPECT_GT(Query("fuji_store_commit_seconds_count").at(0).second, 0);
  EXPECT_GT(Query("fuji_scheduler_pass_seconds_count").at(0).second, 0);
  EXPECT_GT(Query("fuji_database_bytes").at(0).second, 0);
  EXPECT_GT(
      Query("sum(fuji_rpc_requests_total{method=\"/fuji.v1.WorkerService/Heartbeat\",code=\"OK\"})")
          .at(0)
          .second,
      0);
}

}  // namespace
}  // namespace fuji::testing
