// The fuji CLI's daemon commands with no fujid listening: each fails at once with exactly one line
// "fuji: cannot reach fujid at ADDR: ..." and exit 1; bad flags still exit 2 before any call.
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
    ASSERT_EQ(std::system(("rm -rf " + dir_ + " && mkdir -p " + dir_).c_str()), 0);
  }
  static void TearDownTestSuite() { std::system(("rm -rf " + dir_).c_str()); }

  // Runs the built fuji with `args`; `env` is prefixed to the command line (e.g. "FUJI_SERVER=x").
  static CliResult Run(const std::vector<std::string>& args, const std::string& env = "") {
    return fuji::testing::RunFuji(args, dir_, env);
  }

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
