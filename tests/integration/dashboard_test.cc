// fujid's web dashboard in a real browser: a real fujid (TLS on --http-listen) and fuji-agent run
// a fine-tune and a few inference jobs; Debian's headless chromium, driven over the DevTools
// protocol by tests/dashboard/cdp.mjs and trusting only fujid's certificate (its SPKI hash), logs
// in through the form and reads the pages. What it saw is checked against the CLI and the
// database: the jobs table against `fuji jobs`, the loss chart's points against `fuji losses`, the
// memory chart's series against `fuji samples`, the state history against job_events, the workers
// against `fuji workers`. Also: a wrong token is refused, no cookie leads to the login form, the
// cookie is Secure, HttpOnly and SameSite=Strict, another user's job is a 404, a prompt holding
// <script> is shown as text, a running job's page follows it to its end, and logging out ends it.
// Screenshots are kept in build/test-artifacts/dashboard/. Skipped (77) without chromium or node.
#include <sys/stat.h>

#include <chrono>
#include <cmath>
#include <map>
#include <regex>
#include <set>
#include <thread>

#include "tests/integration/process_util.h"

namespace fuji::testing {
namespace {

using namespace std::chrono_literals;
using nlohmann::json;

struct Shell {
  int exit_code;
  std::string out;
};

Shell RunShell(const std::string& command, const std::string& out_file) {
  const int status = std::system((command + " > " + Quote(out_file) + " 2>&1").c_str());
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, Slurp(out_file)};
}

const std::string kSource = FUJI_SOURCE_DIR;
const std::string kArtifacts = std::string(FUJI_BINARY_DIR) + "/test-artifacts/dashboard";

// A chart's series by label: x -> y for the points it has (uPlot's aligned data, nulls left out).
std::map<std::string, std::map<double, double>> Series(const json& chart) {
  std::map<std::string, std::map<double, double>> out;
  const json& data = chart["data"];
  for (size_t s = 0; s < chart["labels"].size(); ++s) {
    auto& points = out[chart["labels"][s].get<std::string>()];
    for (size_t i = 0; i < data[0].size(); ++i) {
      if (!data[s + 1][i].is_null()) points[data[0][i].get<double>()] = data[s + 1][i].get<double>();
    }
  }
  return out;
}

class DashboardTest : public ServiceTestBase {
 protected:
  static void SetUpTestSuite() {
    MakeRoot("dashboard_test");
    const std::string corpora = kSource + "/tests/reference/make_corpora.sh";
    ASSERT_EQ(std::system(("sh " + Quote(corpora) + " " + Quote(root_ + "/text")).c_str()), 0);
    ASSERT_EQ(Fuji({"model", "init", "--arch", "tiny", "--seed", "7", "--out", root_ + "/tiny"}).exit_code, 0);
    // Slow enough to be watched mid-run: 8 layers of 256, thousands of tokens take seconds here.
    ASSERT_EQ(Fuji({"model", "init", "--arch", "tiny", "--layers", "8", "--width", "256", "--heads", "4",
                    "--positions", "4096", "--out", root_ + "/slow"})
                  .exit_code,
              0);
  }
  static void TearDownTestSuite() { RemoveRoot(); }

  // fujid as ServiceTestBase::StartDaemon starts it, with its HTTP listener on a free port of the
  // loopback; sets http_port_ from the dashboard's startup line.
  std::unique_ptr<Service> StartDaemonWithHttp() {
    const std::string state = dir_ + "/fujid";
    auto d = std::make_unique<Service>(
        dir_ + "/fujid.log",
        std::vector<std::string>{kBin + "fujid", "--db", state + "/fujid.db", "--listen", "127.0.0.1:0",
                                 "--lease-ttl-ms", "6000", "--allow-read", root_, "--http-listen", "127.0.0.1:0"});
    const std::regex port_re("port (\\d+)"), ui_re("dashboard on https://127\\.0\\.0\\.1:(\\d+)/ui/");
    for (int i = 0; i < 1500 && http_port_ == 0; ++i) {
      std::smatch m;
      const std::string text = d->log();
      if (std::regex_search(text, m, port_re)) address_ = "127.0.0.1:" + m[1].str();
      if (std::regex_search(text, m, ui_re)) http_port_ = std::stoi(m[1].str());
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

  std::string Url(const std::string& path) const { return "https://127.0.0.1:" + std::to_string(http_port_) + path; }

  // curl with fujid's CA and `token` as the dashboard's cookie ("": none); the status line and
  // headers, then the body.
  Shell Curl(const std::string& token, const std::string& path, const std::string& extra = "") {
    std::string command = "curl -sS -i --cacert " + Quote(ca_);
    if (!token.empty()) command += " -b " + Quote("fuji_token=" + token);
    return RunShell(command + " " + extra + " " + Quote(Url(path)), dir_ + "/curl.out");
  }

  // The base64 SHA-256 of the public key of fujid's certificate: what chromium is told to trust.
  std::string Spki() {
    Shell r = RunShell("openssl x509 -in " + Quote(dir_ + "/fujid/server.crt") +
                           " -pubkey -noout | openssl pkey -pubin -outform der | openssl dgst -sha256 -binary | "
                           "base64 -w0",
                       dir_ + "/spki.out");
    EXPECT_EQ(r.exit_code, 0) << r.out;
    return r.out;
  }

  // Runs the browser with `config` (chromium, base, spki and screenshots are added).
  json Browse(json config) {
    config["chromium"] = "/usr/bin/chromium";
    config["base"] = Url("");
    config["spki"] = Spki();
    config["screenshots"] = kArtifacts;
    const std::string config_file = dir_ + "/browser.json", out_file = dir_ + "/browser.out.json";
    std::ofstream(config_file) << config.dump();
    Shell r = RunShell("node --experimental-websocket --no-warnings " + Quote(kSource + "/tests/dashboard/cdp.mjs") +
                           " " + Quote(config_file) + " " + Quote(out_file),
                       dir_ + "/browser.log");
    json seen = json::parse(Slurp(out_file), nullptr, false);
    EXPECT_EQ(r.exit_code, 0) << r.out << (seen.is_object() ? seen.dump(1) : "");
    return seen.is_object() ? seen : json::object();
  }

  int64_t Submit(const std::vector<std::string>& args, const std::string& token = "") {
    CliResult r = token.empty() ? Fuji(args, address_) : FujiAs(token, args, address_);
    EXPECT_EQ(r.exit_code, 0) << r.err;
    json j = json::parse(r.out, nullptr, false);
    return j.is_object() ? j.value("id", int64_t{0}) : 0;
  }

  int http_port_ = 0;
};

TEST_F(DashboardTest, BrowserSeesWhatTheCliSays) {
  if (::access("/usr/bin/chromium", X_OK) != 0 || std::system("command -v node >/dev/null") != 0) {
    std::printf("/usr/bin/chromium or node is missing (scripts/bootstrap installs them): skipped\n");
    std::exit(77);
  }
  auto daemon = StartDaemonWithHttp();
  auto agent = StartAgent("node-a", 1);
  const std::string bob = AddUser("bob");

  // ---- Jobs: a fine-tune with train and eval losses, a prompt holding a script, bob's job ----
  const int64_t finetune =
      Submit({"submit", "finetune", "--model", root_ + "/tiny", "--data", root_ + "/text/english.txt", "--seq-len",
              "16", "--micro-batch", "2", "--steps", "6", "--eval-every", "2", "--eval-batches", "1", "--threads",
              "1", "--save-to", dir_ + "/ckpt", "--cache-dir", dir_ + "/cache", "--resume", "never", "--output",
              "json"});
  const int64_t xss = Submit({"submit", "infer", "--model", root_ + "/tiny", "--prompt",
                              "<script>window.__fuji_xss = true</script>", "--max-new-tokens", "2", "--output", "json"});
  const int64_t foreign = Submit({"submit", "infer", "--model", root_ + "/tiny", "--prompt", "bob's", "--max-new-tokens",
                                  "2", "--output", "json"},
                                 bob);
  for (int64_t id : {finetune, xss}) ASSERT_TRUE(WaitForState(id, "SUCCEEDED", 300s)) << Show(id).dump() << agent->log();

  // ---- Over HTTP: headers, refusals, the admin's owner filter ----
  Shell page = Curl("", "/ui/");
  EXPECT_NE(page.out.find("HTTP/1.1 303"), std::string::npos) << page.out;
  EXPECT_NE(page.out.find("Location: /ui/login"), std::string::npos) << page.out;
  Shell api = Curl("", "/ui/api/jobs/" + std::to_string(finetune) + "/losses");
  EXPECT_NE(api.out.find("HTTP/1.1 401"), std::string::npos) << api.out;
  page = Curl(token_, "/ui/");
  EXPECT_NE(page.out.find("HTTP/1.1 200"), std::string::npos) << page.out;
  EXPECT_NE(page.out.find("Content-Security-Policy: default-src 'self'"), std::string::npos) << page.out;
  EXPECT_NE(page.out.find("X-Content-Type-Options: nosniff"), std::string::npos) << page.out;
  EXPECT_NE(page.out.find("Cache-Control: no-store"), std::string::npos) << page.out;
  EXPECT_EQ(page.out.find("<script>window"), std::string::npos) << "no inline script";
  const std::string bob_row = "data-id=\"" + std::to_string(foreign) + "\"";
  EXPECT_EQ(page.out.find(bob_row), std::string::npos) << "alice sees bob's job";
  page = Curl(token_, "/ui/?owner=bob");
  EXPECT_NE(page.out.find("HTTP/1.1 403"), std::string::npos) << page.out;
  page = Curl(admin_token_, "/ui/?owner=bob");
  EXPECT_NE(page.out.find(bob_row), std::string::npos) << page.out;
  EXPECT_EQ(page.out.find("data-id=\"" + std::to_string(finetune) + "\""), std::string::npos) << "only bob's";
  Shell script = Curl("", "/ui/static/uPlot.iife.min.js", "-o /dev/null -w '%{http_code} %{content_type}'");
  EXPECT_EQ(script.out.substr(script.out.rfind("200")), "200 text/javascript; charset=utf-8") << script.out;
  page = Curl("", "/ui/login", "-X POST --data-urlencode " + Quote("token=" + token_));
  EXPECT_NE(page.out.find("HTTP/1.1 303"), std::string::npos) << page.out;
  EXPECT_NE(page.out.find("Set-Cookie: fuji_token=" + token_ + "; Max-Age=28800; Path=/ui; Secure; HttpOnly; "
                          "SameSite=Strict"),
            std::string::npos)
      << page.out;

  // ---- In the browser ----
  // A long generation, watched while it runs (the browser's first page after the login) and
  // cancelled from the browser's side.
  const int64_t live = Submit({"submit", "infer", "--model", root_ + "/slow", "--prompt", "Mt. Fuji",
                               "--max-new-tokens", "4000", "--output", "json"});
  ASSERT_TRUE(WaitForState(live, "RUNNING", 120s)) << Show(live).dump();
  ::mkdir((std::string(FUJI_BINARY_DIR) + "/test-artifacts").c_str(), 0755);
  const std::string cancel = kBin + "fuji";
  json seen = Browse({{"token", token_},
                      {"finetune", finetune},
                      {"xss", xss},
                      {"foreign", foreign},
                      {"filter", "kind=finetune"},
                      {"live",
                       {{"id", live},
                        {"command", {cancel, "cancel", std::to_string(live), "--server", address_}},
                        {"env", {{"FUJI_CA", ca_}, {"FUJI_TOKEN", token_}}},
                        {"expect", "CANCELLED"}}}});
  ASSERT_TRUE(seen.value("ok", false)) << seen.dump(1);

  // Login: no cookie leads to the form; a wrong token is refused and sets nothing.
  EXPECT_EQ(seen["no_cookie_path"], "/ui/login");
  EXPECT_EQ(seen["wrong_token"]["path"], "/ui/login");
  EXPECT_EQ(seen["wrong_token"]["status"], 401);
  EXPECT_EQ(seen["wrong_token"]["cookies"], 0);
  EXPECT_NE(seen["wrong_token"]["error"].get<std::string>(), "");
  EXPECT_EQ(seen["login_path"], "/ui/");
  ASSERT_EQ(seen["cookies"].size(), 1u) << seen["cookies"];
  const json& cookie = seen["cookies"][0];
  EXPECT_EQ(cookie["name"], "fuji_token");
  EXPECT_TRUE(cookie["secure"].get<bool>());
  EXPECT_TRUE(cookie["httpOnly"].get<bool>());
  EXPECT_EQ(cookie["sameSite"], "Strict");
  EXPECT_EQ(cookie["path"], "/ui");
  EXPECT_FALSE(cookie["session"].get<bool>()) << "a bounded Max-Age";
  EXPECT_TRUE(cookie["value_is_token"].get<bool>());
  EXPECT_EQ(seen["cookie_visible_to_script"], "") << "HttpOnly";
  EXPECT_EQ(seen["jobs"]["who"], "alice");

  // The jobs table is `fuji jobs` (alice's, newest first); the live job may have moved on since.
  json cli = Json({"jobs", "--output", "json"});
  ASSERT_TRUE(cli.is_object());
  const json& rows = seen["jobs"]["rows"];
  ASSERT_EQ(rows.size(), cli["jobs"].size()) << rows << cli;
  for (size_t i = 0; i < rows.size(); ++i) {
    const json& job = cli["jobs"][i];
    EXPECT_EQ(rows[i][0], std::to_string(job["id"].get<int64_t>()));
    EXPECT_EQ(rows[i][1], job["kind"]);
    if (job["id"] != live) {
      EXPECT_EQ(rows[i][2], job["state"]) << rows[i];
    }
    EXPECT_EQ(rows[i][3], "alice");
  }
  // And the database agrees on whose they are.
  EXPECT_EQ(Sql("SELECT count(*) FROM jobs WHERE owner = 'alice'"), std::to_string(rows.size()) + "\n");
  ASSERT_EQ(seen["filtered"].size(), 1u) << seen["filtered"];
  EXPECT_EQ(seen["filtered"][0][0], std::to_string(finetune));

  // The fine-tune's page: the loss chart is `fuji losses`, the memory chart `fuji samples`.
  const json& ft = seen["finetune"];
  ASSERT_TRUE(ft["drawn"].get<bool>()) << ft;
  EXPECT_EQ(ft["state"], "SUCCEEDED");
  EXPECT_TRUE(ft["errors"].empty()) << ft["errors"];
  json losses = Json({"losses", std::to_string(finetune), "--output", "json"});
  auto loss_series = Series(ft["charts"]["loss"]);
  ASSERT_EQ(loss_series.size(), 2u) << ft["charts"]["loss"];
  for (const auto& [split, key] : {std::pair<std::string, std::string>{"train", "losses"}, {"eval", "eval_losses"}}) {
    const auto& drawn = loss_series[split];
    ASSERT_EQ(drawn.size(), losses[key].size()) << split << " " << ft["charts"]["loss"] << losses;
    ASSERT_FALSE(drawn.empty()) << split;
    for (const json& p : losses[key]) {
      auto at = drawn.find(p["step"].get<double>());
      ASSERT_NE(at, drawn.end()) << split << " step " << p["step"];
      EXPECT_NEAR(at->second, p["loss"].get<double>(), 1e-9) << split << " step " << p["step"];
    }
  }
  json samples = Json({"samples", std::to_string(finetune), "--format", "json"});
  std::map<std::string, std::map<double, double>> expected_memory;
  for (const json& s : samples["samples"]) {
    const std::string key = s["host_memory"].get<bool>()
                                ? s["worker_id"].get<std::string>() + " host memory"
                                : s["worker_id"].get<std::string>() + " device " +
                                      std::to_string(s["device_index"].get<int>()) + " (" +
                                      s["device_name"].get<std::string>() + ")";
    expected_memory[key][s["at_ms"].get<double>() / 1000] = s["used_mib"].get<double>();
  }
  ASSERT_FALSE(expected_memory.empty()) << samples;
  EXPECT_EQ(Series(ft["charts"]["memory"]), expected_memory) << ft["charts"]["memory"] << samples;
  // The state history is job_events, in order.
  std::string events = Sql("SELECT to_state FROM job_events WHERE job_id = " + std::to_string(finetune) + " ORDER BY seq");
  std::string shown;
  for (const json& row : ft["history"]) shown += row[3].get<std::string>() + "\n";
  EXPECT_EQ(shown, events);
  EXPECT_EQ(ft["timings"].size(), std::stoul(Sql("SELECT count(*) FROM job_timings WHERE job_id = " +
                                                 std::to_string(finetune))));
  EXPECT_NE(ft["plan"].get<std::string>(), "-") << "a fine-tune has a plan";

  // A prompt holding a script is text: the page's scripts are fujid's own, and none ran.
  const json& x = seen["xss"];
  EXPECT_FALSE(x["fired"].get<bool>());
  for (const json& src : x["scripts"]) {
    ASSERT_TRUE(src.is_string()) << x;
    EXPECT_EQ(src.get<std::string>().rfind("/ui/static/", 0), 0u) << x;
  }
  EXPECT_NE(x["spec"].get<std::string>().find("<script>window.__fuji_xss = true</script>"), std::string::npos) << x;

  // Bob's job is not alice's to see.
  EXPECT_EQ(seen["foreign"]["status"], 404) << seen["foreign"];
  EXPECT_FALSE(seen["foreign"]["job_shown"].get<bool>());

  // The running job's page followed it to its end, without being navigated.
  const json& l = seen["live"];
  EXPECT_EQ(l["before"], "RUNNING") << l;
  EXPECT_EQ(l["command_status"], 0) << l;
  EXPECT_TRUE(l["updated"].get<bool>()) << l;
  EXPECT_EQ(l["history"].back()[3], "CANCELLED") << l;

  // Workers: `fuji workers`, device by device.
  json workers = Json({"workers", "--output", "json"});
  ASSERT_EQ(seen["workers"].size(), workers["workers"].size()) << seen["workers"] << workers;
  EXPECT_EQ(seen["workers"][0]["id"], "node-a");
  EXPECT_EQ(seen["workers"][0]["devices"].size(), workers["workers"][0]["devices"].size());

  // Logging out clears the cookie; pages lead to the form again.
  EXPECT_EQ(seen["logout"]["path"], "/ui/login");
  EXPECT_EQ(seen["logout"]["cookies"], 0);
  EXPECT_EQ(seen["logout"]["after_path"], "/ui/login");

  // The screenshots are kept.
  for (const char* name : {"login", "jobs", "job_finetune", "workers"}) {
    const std::string png = Slurp(kArtifacts + "/" + name + ".png");
    EXPECT_GT(png.size(), 1000u) << name;
    EXPECT_EQ(png.substr(0, 4), "\x89PNG") << name;
  }
}

}  // namespace
}  // namespace fuji::testing
