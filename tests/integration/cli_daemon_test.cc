// The fuji CLI's daemon commands with no fujid listening: each fails at once with exactly one line
// "fuji: cannot reach fujid at ADDR: ..." and exit 1; bad flags still exit 2 before any call. Where
// the server, CA and token come from (flags, FUJI_* variables, the profile fuji login writes), and
// the one line said when one of them is missing or the profile is open to others.
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "tests/integration/process_util.h"

namespace {

using fuji::testing::CliResult;

class CliDaemonTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = std::string(FUJI_BINARY_DIR) + "/cli_daemon_test_" + std::to_string(::getpid());
    ASSERT_EQ(std::system(("rm -rf " + dir_ + " && mkdir -p " + dir_ + "/home").c_str()), 0);
    // A CA as an operator would make one; nothing here ever verifies a server with it.
    ASSERT_EQ(std::system(("openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 "
                           "-subj /CN=test-ca -keyout " + dir_ + "/ca.key -out " + dir_ + "/ca.pem 2>/dev/null")
                              .c_str()),
              0);
  }
  static void TearDownTestSuite() { std::system(("rm -rf " + dir_).c_str()); }

  // Runs the built fuji with `args`, a CA and a token in the environment and an empty home;
  // `env` is added after them (e.g. "FUJI_SERVER=x", or "FUJI_TOKEN=" to take the token away).
  static CliResult Run(const std::vector<std::string>& args, const std::string& env = "") {
    return fuji::testing::RunFuji(args, dir_, BaseEnv() + " " + env);
  }
  static std::string BaseEnv() {
    return "HOME=" + dir_ + "/home XDG_CONFIG_HOME= FUJI_SERVER= FUJI_CA=" + dir_ + "/ca.pem FUJI_TOKEN=" + kToken;
  }
  // A profile as fuji login writes it, with `mode`.
  static void WriteProfile(const std::string& server, unsigned mode) {
    const std::string dir = dir_ + "/home/.config/fuji";
    ASSERT_EQ(std::system(("mkdir -p " + dir + " && chmod 700 " + dir + " && cp " + dir_ + "/ca.pem " + dir +
                           "/ca.pem && printf '{\"server\": \"" + server + "\", \"token\": \"" + kToken +
                           "\"}' > " + dir + "/profile.json")
                              .c_str()),
              0);
    ASSERT_EQ(::chmod((dir + "/profile.json").c_str(), mode), 0);
  }
  static void RemoveProfile() { std::system(("rm -rf " + dir_ + "/home/.config").c_str()); }
  static void ExpectOneLine(const CliResult& r, int code, const std::string& words, const std::string& what) {
    EXPECT_EQ(r.exit_code, code) << what << ": " << r.err;
    EXPECT_EQ(r.err.rfind("fuji: ", 0), 0u) << what << ": " << r.err;
    EXPECT_NE(r.err.find(words), std::string::npos) << what << ": " << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << what << ": " << r.err;
    EXPECT_EQ(r.err.find("cannot reach"), std::string::npos) << what << ": " << r.err;
  }

  inline static const std::string kToken = "fuji_u_1_" + std::string(64, 'a');

  static void ExpectUnreachable(const CliResult& r, const std::string& address, const std::string& what) {
    EXPECT_EQ(r.exit_code, 1) << what << ": " << r.err;
    EXPECT_EQ(r.err.rfind("fuji: cannot reach fujid at " + address + ": ", 0), 0u) << what << ": " << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << what << ": " << r.err;
    EXPECT_EQ(r.out, "") << what;
  }

  static std::string dir_;
};

std::string CliDaemonTest::dir_;

constexpr char kNowhere[] = "127.0.0.1:1";

TEST_F(CliDaemonTest, EveryDaemonCommandReportsAnUnreachableDaemon) {
  const std::vector<std::vector<std::string>> commands = {
      {"submit", "infer", "--model", "/nonexistent-but-checked-by-the-daemon", "--prompt", "hi"},
      {"submit", "infer", "--model", "/m", "--prompt", "hi", "--wait", "--output", "json"},
      {"jobs"},
      {"jobs", "--state", "running", "--output", "json"},
      {"show", "1"},
      {"watch", "1"},
      {"cancel", "1"},
      {"logs", "1"},
      {"logs", "1", "--follow"},
      {"result", "1", "--output", "json"},
      {"timings", "1"},
      {"samples", "1", "--format", "csv"},
      {"workers"},
      {"whoami"},
      {"admin", "user", "add", "bob"},
      {"admin", "user", "list"},
      {"admin", "user", "revoke", "bob"},
      {"admin", "agent-token"},
      {"admin", "agent", "list"},
      {"admin", "agent", "revoke", "node-a"},
  };
  for (auto args : commands) {
    std::string what;
    for (const auto& a : args) what += a + " ";
    args.push_back("--server");
    args.push_back(kNowhere);
    const auto start = std::chrono::steady_clock::now();
    ExpectUnreachable(Run(args), kNowhere, what);
    EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(10)) << what;
  }
}

TEST_F(CliDaemonTest, ServerComesFromTheEnvironment) {
  ExpectUnreachable(Run({"jobs"}, "FUJI_SERVER=127.0.0.1:2"), "127.0.0.1:2", "FUJI_SERVER");
  // --server wins over the environment.
  ExpectUnreachable(Run({"workers", "--server", kNowhere}, "FUJI_SERVER=127.0.0.1:2"), kNowhere, "--server");
}

TEST_F(CliDaemonTest, TheProfileGivesWhatFlagsAndTheEnvironmentLeaveOpen) {
  WriteProfile("127.0.0.1:3", 0600);
  // The profile's server, CA and token serve when nothing else is given...
  ExpectUnreachable(Run({"jobs"}, "FUJI_CA= FUJI_TOKEN="), "127.0.0.1:3", "profile");
  // ...and FUJI_SERVER and --server win over it, in that order.
  ExpectUnreachable(Run({"jobs"}, "FUJI_SERVER=127.0.0.1:2"), "127.0.0.1:2", "FUJI_SERVER over the profile");
  ExpectUnreachable(Run({"jobs", "--server", kNowhere}, "FUJI_SERVER=127.0.0.1:2"), kNowhere, "--server");
  // A profile others may read is refused, saying how to fix it, before anything is sent.
  WriteProfile("127.0.0.1:3", 0644);
  ExpectOneLine(Run({"jobs"}, "FUJI_TOKEN="), 2, "chmod 600", "a profile others may read");
  // It is not read at all while flags and the environment give everything.
  ExpectUnreachable(Run({"jobs", "--server", kNowhere}), kNowhere, "everything given");
  // A link in its place is refused too.
  RemoveProfile();
  WriteProfile("127.0.0.1:3", 0600);
  const std::string profile = dir_ + "/home/.config/fuji/profile.json";
  ASSERT_EQ(std::system(("mv " + profile + " " + dir_ + "/elsewhere.json && ln -s " + dir_ + "/elsewhere.json " +
                         profile).c_str()),
            0);
  ExpectOneLine(Run({"jobs"}, "FUJI_TOKEN="), 2, "symbolic link", "a linked profile");
  RemoveProfile();
}

TEST_F(CliDaemonTest, NoTokenOrNoCaIsOneLineBeforeAnyCall) {
  ExpectOneLine(Run({"jobs", "--server", kNowhere}, "FUJI_TOKEN="), 1, "no token", "no token");
  ExpectOneLine(Run({"jobs", "--server", kNowhere}, "FUJI_CA="), 2, "no CA", "no CA");
  ExpectOneLine(Run({"jobs", "--server", kNowhere, "--ca", dir_ + "/absent.pem"}), 2, "absent.pem", "a missing CA");
  ExpectOneLine(Run({"jobs", "--server", kNowhere, "--ca", dir_ + "/ca.key"}), 2, "no PEM certificate", "a key as CA");
  // Plaintext only to the loopback.
  ExpectOneLine(Run({"jobs", "--server", "192.0.2.1:7070", "--insecure"}), 2, "loopback", "--insecure");
  ExpectUnreachable(Run({"jobs", "--server", kNowhere, "--insecure"}, "FUJI_CA="), kNowhere, "--insecure loopback");
}

TEST_F(CliDaemonTest, LoginChecksTheTokenBeforeKeepingAnything) {
  ExpectUnreachable(Run({"login", "--server", kNowhere, "--ca", dir_ + "/ca.pem", "--token", kToken}), kNowhere,
                    "login");
  EXPECT_NE(::access((dir_ + "/home/.config/fuji/profile.json").c_str(), F_OK), 0) << "no profile on failure";
  ExpectOneLine(Run({"login", "--server", kNowhere, "--ca", dir_ + "/ca.pem"}, "FUJI_TOKEN="), 2, "token",
                "login without a token");
  ExpectOneLine(Run({"login", "--server", kNowhere, "--token", kToken}, "FUJI_CA="), 2, "--ca", "login without a CA");
}

TEST_F(CliDaemonTest, BadInputExitsTwoBeforeAnyCall) {
  struct Case {
    std::vector<std::string> args;
    std::string expected;
  };
  const std::vector<Case> cases = {
      {{"submit", "infer", "--model", "/m", "--prompt", "hi", "--timeout", "5 minutes"}, "--timeout"},
      {{"submit", "infer", "--model", "/m", "--prompt-ids", "1,x"}, "fuji: "},
      {{"jobs", "--state", "DONE"}, "unknown job state"},
      {{"show", "seven"}, "fuji: "},
      {{"samples", "1", "--format", "xml"}, "fuji: "},
      {{"admin", "agent-token", "--expires", "soon"}, "--expires"},
      {{"admin", "agent-token", "--expires", "0s"}, "--expires"},
      {{"admin", "user", "add"}, "fuji: "},
  };
  for (auto c : cases) {
    std::string what;
    for (const auto& a : c.args) what += a + " ";
    c.args.push_back("--server");
    c.args.push_back(kNowhere);
    const CliResult r = Run(c.args);
    EXPECT_EQ(r.exit_code, 2) << what << ": " << r.err;
    EXPECT_EQ(r.err.rfind("fuji: ", 0), 0u) << what << ": " << r.err;
    EXPECT_NE(r.err.find(c.expected), std::string::npos) << what << ": " << r.err;
    EXPECT_EQ(r.err.find("cannot reach"), std::string::npos) << what << ": " << r.err;
  }
}

}  // namespace
