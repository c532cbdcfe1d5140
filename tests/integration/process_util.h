// Helpers for the end-to-end tests: the built fuji CLI run with arguments (exit code, stdout,
// stderr and stdout as JSON), and fuji as a service: real fujid, fuji-agent and fuji-rank
// processes on loopback, driven by the real CLI. A fixture with a scratch directory per test
// suite and per test, the daemon on a free port, agents with CPU devices, and the fuji-rank
// processes an agent runs, read from /proc. As fuji runs for a team: fujid over TLS with its own
// CA, a user who submits, agents enrolled with join tokens and allowed the scratch root.
#pragma once

#include <dirent.h>
#include <pwd.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <regex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "worker/launcher/child_process.h"

namespace fuji::testing {

inline const std::string kBin = std::string(FUJI_BINARY_DIR) + "/bin/";

inline std::string Slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// `s` as one single-quoted shell word.
inline std::string Quote(const std::string& s) {
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

struct CliResult {
  int exit_code = -1;
  std::string out, err;
  nlohmann::json json;  // discarded when stdout is not JSON
};

// Runs the fuji binary with `args`, its stdout and stderr captured in the files `out` and `err`;
// `env` is prefixed to the command line (e.g. "FUJI_SERVER=x").
inline CliResult RunFujiInto(const std::vector<std::string>& args, const std::string& out,
                             const std::string& err, const std::string& env = "") {
  std::string cmd = env + (env.empty() ? "" : " ") + kBin + "fuji";
  for (const auto& a : args) cmd += " " + Quote(a);
  cmd += " >" + out + " 2>" + err + " </dev/null";
  CliResult r;
  const int status = std::system(cmd.c_str());
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  r.out = Slurp(out);
  r.err = Slurp(err);
  r.json = nlohmann::json::parse(r.out, nullptr, false);
  return r;
}

// RunFujiInto with the captured output in `dir`/out and `dir`/err.
inline CliResult RunFuji(const std::vector<std::string>& args, const std::string& dir,
                         const std::string& env = "") {
  return RunFujiInto(args, dir + "/out", dir + "/err", env);
}

// A long-running service process (fujid, fuji-agent) whose output goes to a log file.
class Service {
 public:
  Service(const std::string& log, const std::vector<std::string>& argv) : log_(log) {
    std::string cmd = "exec";
    for (const auto& a : argv) cmd += " " + Quote(a);
    cmd += " >>" + Quote(log) + " 2>&1";
    auto p = fuji::launch::ChildProcess::Spawn({"/bin/sh", {"-c", cmd}, {}});
    EXPECT_TRUE(p.ok()) << p.status().ToString();
    if (p.ok()) process_ = std::move(p).value();
  }
  ~Service() { Stop(); }
  pid_t pid() const { return process_ ? process_->pid() : -1; }
  void Kill9() {
    if (process_) ::kill(process_->pid(), SIGKILL);
    if (process_) process_->Wait();
    process_.reset();
  }
  int Stop() {
    if (!process_) return 0;
    auto exit = process_->Terminate(std::chrono::seconds(5));
    process_.reset();
    return exit.signal != 0 ? 128 + exit.signal : exit.exit_code;
  }
  std::string log() const { return Slurp(log_); }

 private:
  std::string log_;
  std::unique_ptr<fuji::launch::ChildProcess> process_;
};

// The live (not zombie) fuji-rank processes whose parent is `parent`. Known by argv[0], which
// stays when fuji-rank re-executes itself through /proc/self/exe (its comm then reads "exe").
inline std::vector<pid_t> RankPids(pid_t parent) {
  std::vector<pid_t> pids;
  DIR* proc = ::opendir("/proc");
  while (dirent* e = ::readdir(proc)) {
    const std::string dir = std::string("/proc/") + e->d_name;
    const std::string argv0 = Slurp(dir + "/cmdline").c_str();  // up to the first NUL
    if (argv0 != "fuji-rank" && !(argv0.size() > 10 && argv0.substr(argv0.size() - 10) == "/fuji-rank")) continue;
    const std::string stat = Slurp(dir + "/stat");
    const size_t close = stat.rfind(')');
    if (close == std::string::npos) continue;
    std::istringstream rest(stat.substr(close + 2));
    char state;
    pid_t ppid;
    rest >> state >> ppid;
    if (ppid == parent && state != 'Z') pids.push_back(static_cast<pid_t>(std::atoi(e->d_name)));
  }
  ::closedir(proc);
  return pids;
}

// Whether `pid` is a process that has not ended (a zombie has ended).
inline bool Running(pid_t pid) {
  const std::string stat = Slurp("/proc/" + std::to_string(pid) + "/stat");
  const size_t close = stat.rfind(')');
  return close != std::string::npos && close + 2 < stat.size() && stat[close + 2] != 'Z';
}

// Scratch directories: root_ for the suite (set by MakeRoot in SetUpTestSuite), dir_ per test.
class ServiceTestBase : public ::testing::Test {
 protected:
  static void MakeRoot(const std::string& name) {
    root_ = std::string(FUJI_BINARY_DIR) + "/" + name + "_" + std::to_string(::getpid());
    ASSERT_EQ(std::system(("rm -rf " + root_ + " && mkdir -p " + root_).c_str()), 0);
    GiveToRankUser(root_);
  }

  // MakeRoot, then what the fine-tuning tests share: the text corpora (root_/text) and a tiny
  // random model (root_/tiny).
  static void MakeRootWithTextAndTinyModel(const std::string& name) {
    MakeRoot(name);
    const std::string corpora = std::string(FUJI_SOURCE_DIR) + "/tests/reference/make_corpora.sh";
    ASSERT_EQ(std::system(("sh " + Quote(corpora) + " " + Quote(root_ + "/text")).c_str()), 0);
    CliResult r = Fuji({"model", "init", "--arch", "tiny", "--out", root_ + "/tiny", "--seed", "1"});
    ASSERT_EQ(r.exit_code, 0) << r.err;
  }

  // An agent started as root runs its ranks as the unprivileged user "fuji": the scratch
  // directories where tests let ranks write are theirs.
  static void GiveToRankUser(const std::string& dir) {
    if (::geteuid() != 0) return;
    const passwd* user = ::getpwnam("fuji");
    ASSERT_NE(user, nullptr) << "agents started as root run ranks as the user fuji: run scripts/bootstrap";
    ASSERT_EQ(::chown(dir.c_str(), user->pw_uid, user->pw_gid), 0) << dir;
  }
  static void RemoveRoot() { std::system(("rm -rf " + root_).c_str()); }

  void SetUp() override {
    dir_ = root_ + "/" + ::testing::UnitTest::GetInstance()->current_test_info()->name();
    ASSERT_EQ(std::system(("mkdir -p " + dir_).c_str()), 0);
    GiveToRankUser(dir_);
    cli_env_.clear();
  }

  // Runs the fuji CLI as the test's user (once StartDaemon made one), talking to `server` when
  // given.
  static CliResult Fuji(const std::vector<std::string>& args, const std::string& server = "") {
    return FujiWithEnv(cli_env_, args, server);
  }
  // Runs the fuji CLI with `token` (and the daemon's CA).
  static CliResult FujiAs(const std::string& token, const std::vector<std::string>& args,
                          const std::string& server = "") {
    return FujiWithEnv(CliEnv(token), args, server);
  }
  static CliResult FujiWithEnv(const std::string& env, const std::vector<std::string>& args,
                               const std::string& server) {
    std::vector<std::string> all = args;
    if (!server.empty()) all.insert(all.end(), {"--server", server});
    const std::string tid = std::to_string(::gettid());
    return RunFujiInto(all, root_ + "/cli.out." + tid, root_ + "/cli.err." + tid, env);
  }
  // FUJI_CA and FUJI_TOKEN for the CLI ("" before StartDaemon).
  static std::string CliEnv(const std::string& token) {
    if (ca_.empty()) return "";
    return "FUJI_CA=" + Quote(ca_) + " FUJI_TOKEN=" + Quote(token);
  }

  // Starts fujid on a free port of the loopback and sets address_ (its state, database and CA in
  // dir_/fujid); on its first start in this test, makes the user "alice" (token_) with the admin's
  // token (admin_token_), and the CLI calls as alice from then on. Its leases last 6 s: a stall of
  // this busy machine must not expire one, and no test here waits one out (an agent that comes
  // back registers, and fujid requeues at once what it no longer runs). fujid reads model configs
  // under the suite's scratch root only.
  std::unique_ptr<Service> StartDaemon(const std::string& listen = "127.0.0.1:0") {
    const std::string state = dir_ + "/fujid";
    const std::string log = dir_ + "/fujid.log";
    std::ofstream(log, std::ios::trunc).close();
    auto d = std::make_unique<Service>(log, std::vector<std::string>{kBin + "fujid", "--db", state + "/fujid.db",
                                                                     "--listen", listen, "--lease-ttl-ms", "6000",
                                                                     "--allow-read", root_});
    const std::regex port_re("port (\\d+)");
    for (int i = 0; i < 1500 && address_.empty(); ++i) {
      std::smatch m;
      const std::string text = d->log();
      if (std::regex_search(text, m, port_re)) address_ = "127.0.0.1:" + m[1].str();
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    EXPECT_FALSE(address_.empty()) << d->log();
    ca_ = state + "/ca.crt";
    if (users_of_ != dir_) {
      admin_token_ = Slurp(state + "/admin.token");
      while (!admin_token_.empty() && admin_token_.back() == '\n') admin_token_.pop_back();
      EXPECT_FALSE(admin_token_.empty()) << d->log();
      token_ = AddUser("alice");
      users_of_ = dir_;
    }
    cli_env_ = CliEnv(token_);
    return d;
  }

  // A new user's token (`fuji admin user add`).
  std::string AddUser(const std::string& name, bool admin = false) {
    std::vector<std::string> args = {"admin", "user", "add", name};
    if (admin) args.push_back("--admin");
    CliResult r = FujiAs(admin_token_, args, address_);
    EXPECT_EQ(r.exit_code, 0) << r.err;
    std::string token = r.out;
    while (!token.empty() && (token.back() == '\n' || token.back() == ' ')) token.pop_back();
    return token;
  }

  // A fuji-agent with `cpus` CPU devices, allowed to read and write the suite's scratch root.
  std::unique_ptr<Service> StartAgent(const std::string& id, int cpus) {
    return StartAgentWith(id, cpus, {"--allow-read", root_, "--allow-write", root_});
  }
  // A fuji-agent with `flags` (and no allowed roots unless they give some). Its first start in a
  // test enrolls it with a join token from the admin; later starts use the credential kept in its
  // state directory (dir_/agent-ID).
  std::unique_ptr<Service> StartAgentWith(const std::string& id, int cpus, const std::vector<std::string>& flags) {
    const std::string state = dir_ + "/agent-" + id;
    std::vector<std::string> argv = {kBin + "fuji-agent", "--server", address_, "--devices",
                                     "cpu:" + std::to_string(cpus), "--sample-interval-ms", "50", "--worker-id", id,
                                     "--state-dir", state, "--ca", ca_};
    if (!std::ifstream(state + "/credential.json").good()) {
      CliResult join = FujiAs(admin_token_, {"admin", "agent-token", "--expires", "10m"}, address_);
      EXPECT_EQ(join.exit_code, 0) << join.err;
      std::string token = join.out;
      while (!token.empty() && (token.back() == '\n' || token.back() == ' ')) token.pop_back();
      argv.insert(argv.end(), {"--join-token", token});
    }
    argv.insert(argv.end(), flags.begin(), flags.end());
    return std::make_unique<Service>(dir_ + "/agent-" + id + ".log", argv);
  }

  // `fuji <command> ID --output json` (or the given flags), parsed; a discarded value on failure.
  nlohmann::json Json(const std::vector<std::string>& args) {
    CliResult r = Fuji(args, address_);
    EXPECT_EQ(r.exit_code, 0) << r.err;
    return nlohmann::json::parse(r.out, nullptr, false);
  }

  // `fuji submit finetune` of root_/tiny on root_/text/english.txt with 2 ranks of one thread,
  // plus `extra`; the JSON it prints.
  nlohmann::json SubmitTinyFinetune(int steps, const std::vector<std::string>& extra) {
    std::vector<std::string> args = {
        "submit", "finetune", "--model", root_ + "/tiny", "--data", root_ + "/text/english.txt",
        "--ranks", "2", "--seq-len", "32", "--micro-batch", "2", "--steps", std::to_string(steps),
        "--lr", "1e-3", "--cache-dir", root_ + "/cache", "--threads", "1", "--output", "json"};
    args.insert(args.end(), extra.begin(), extra.end());
    return Json(args);
  }

  nlohmann::json Show(int64_t id) { return Json({"show", std::to_string(id), "--output", "json"}); }

  // Polls `fuji show` until the job is in `state` (or the deadline passes).
  bool WaitForState(int64_t id, const std::string& state, std::chrono::seconds deadline) {
    const auto end = std::chrono::steady_clock::now() + deadline;
    while (std::chrono::steady_clock::now() < end) {
      auto j = Show(id);
      if (j.is_object() && j.value("state", "") == state) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    return false;
  }

  // What the sqlite3 shell prints for `sql` on the daemon's database.
  std::string Sql(const std::string& sql) {
    const std::string out = dir_ + "/sql.out";
    EXPECT_EQ(std::system(("sqlite3 " + Quote(dir_ + "/fujid/fujid.db") + " " + Quote(sql) + " > " + out).c_str()), 0);
    return Slurp(out);
  }

  // The number of fuji-rank processes whose parent is `pid`.
  static int RanksOf(pid_t pid) { return static_cast<int>(RankPids(pid).size()); }

  inline static std::string root_;
  // The CLI's environment (the CA and alice's token), for the static Fuji.
  inline static std::string cli_env_, ca_;
  std::string dir_, address_;
  std::string admin_token_, token_;  // the admin's and alice's
  std::string users_of_;             // the dir_ whose fujid has them

};

}  // namespace fuji::testing
