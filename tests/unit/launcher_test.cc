// Tests of the rank launcher with real child processes (/bin/sh scripts standing in for the
// rank's side of the pipes): events and logs, requests, exit reporting, process-group kills, and
// confined children (a minimal environment, umask 077, another user when started as root).
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <map>
#include <thread>

#include <gtest/gtest.h>

#include "lib/common/limits.h"
#include "worker/launcher/child_process.h"

namespace fuji::launch {
namespace {

using std::chrono::milliseconds;

std::unique_ptr<ChildProcess> Shell(const std::string& script) {
  auto rank = ChildProcess::Spawn({"/bin/sh", {"-c", script}, {{"FUJI_TEST_VAR", "on"}}});
  EXPECT_TRUE(rank.ok()) << rank.status().ToString();
  return rank.ok() ? std::move(rank).value() : nullptr;
}

// Drains a rank's output until both pipes close.
std::vector<ChildOutput> Drain(ChildProcess* rank) {
  std::vector<ChildOutput> out;
  for (;;) {
    auto next = rank->Next(milliseconds(10000));
    EXPECT_TRUE(next.ok()) << next.status().ToString();
    if (!next.ok() || !next->has_value()) return out;
    out.push_back(std::move(**next));
  }
}

TEST(LauncherTest, SeparatesEventsFromLogsAndReportsExit) {
  auto rank = Shell(R"(echo '{"event":"result","x":1}' >&3; echo "log $FUJI_TEST_VAR" >&2;
                       echo 'not json' >&3; exit 3)");
  ASSERT_TRUE(rank);
  auto out = Drain(rank.get());
  ASSERT_EQ(out.size(), 3u);
  int events = 0, logs = 0;
  for (const auto& o : out) {
    if (o.kind == ChildOutput::Kind::kEvent) {
      ++events;
      EXPECT_EQ(o.event["x"], 1);
    } else {
      ++logs;
      EXPECT_TRUE(o.line == "log on" || o.line == "not json") << o.line;
    }
  }
  EXPECT_EQ(events, 1);
  EXPECT_EQ(logs, 2);
  ExitInfo exit = rank->Wait();
  EXPECT_EQ(exit.exit_code, 3);
  EXPECT_FALSE(exit.Succeeded());
  EXPECT_EQ(exit.Describe(), "exit code 3");
}

TEST(LauncherTest, ARankStderrLineOfTwoMebibytesIsCutAndTheRankIsStillRead) {
  // Once the agent stopped reading such a rank, which then blocked on its full pipe.
  auto rank = Shell(R"(head -c 2097152 /dev/zero | tr '\0' x >&2; echo >&2; echo after >&2;
                       echo '{"event":"result","x":2}' >&3)");
  ASSERT_TRUE(rank);
  auto out = Drain(rank.get());
  ASSERT_EQ(out.size(), 3u);
  std::vector<std::string> logs;
  for (const auto& o : out) {
    if (o.kind == ChildOutput::Kind::kLog) logs.push_back(o.line);
    else EXPECT_EQ(o.event["x"], 2);
  }
  ASSERT_EQ(logs.size(), 2u);
  EXPECT_EQ(logs[0].size(), limits::kMaxLogLineBytes);
  EXPECT_NE(logs[0].find("[cut: line longer than"), std::string::npos);
  EXPECT_EQ(logs[1], "after");
  EXPECT_TRUE(rank->Wait().Succeeded());
}

TEST(LauncherTest, SendsRequestsOnStdin) {
  auto rank = Shell(R"(while read line; do echo "$line" >&3; done)");
  ASSERT_TRUE(rank);
  ASSERT_TRUE(rank->Send({{"op", "infer"}, {"id", "a"}}).ok());
  ASSERT_TRUE(rank->Send({{"op", "infer"}, {"id", "b"}}).ok());
  rank->CloseInput();
  auto out = Drain(rank.get());
  ASSERT_EQ(out.size(), 2u);
  EXPECT_EQ(out[0].event["id"], "a");
  EXPECT_EQ(out[1].event["id"], "b");
  EXPECT_TRUE(rank->Wait().Succeeded());
  EXPECT_FALSE(rank->Send({{"op", "x"}}).ok());  // input closed
}

TEST(LauncherTest, NextTimesOutWhileTheRankIsQuiet) {
  auto rank = Shell("sleep 5");
  ASSERT_TRUE(rank);
  auto next = rank->Next(milliseconds(50));
  EXPECT_EQ(next.status().code(), StatusCode::kUnavailable);
  EXPECT_FALSE(rank->Poll().has_value());
}

TEST(LauncherTest, TerminateKillsTheWholeGroupEvenWhenTermIsIgnored) {
  // The rank ignores SIGTERM and has a child of its own.
  auto rank = Shell(R"(trap '' TERM; sleep 100 & echo '{"event":"started"}' >&3; wait)");
  ASSERT_TRUE(rank);
  auto first = rank->Next(milliseconds(10000));
  ASSERT_TRUE(first.ok() && first->has_value());
  const pid_t group = rank->pid();
  const auto start = std::chrono::steady_clock::now();
  ExitInfo exit = rank->Terminate(milliseconds(200));
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(5));
  EXPECT_EQ(exit.signal, SIGKILL);
  EXPECT_EQ(exit.Describe(), "killed by signal 9 (SIGKILL)");
  EXPECT_NE(::kill(-group, 0), 0);  // nothing of the group is left
}

TEST(LauncherTest, TerminateIsGracefulWhenTheRankObeys) {
  auto rank = Shell("sleep 100");
  ASSERT_TRUE(rank);
  ExitInfo exit = rank->Terminate(milliseconds(5000));
  EXPECT_EQ(exit.signal, SIGTERM);
}

TEST(LauncherTest, MissingExecutableIsNotFound) {
  auto rank = ChildProcess::Spawn({"/nonexistent/fuji-rank", {}, {}});
  EXPECT_EQ(rank.status().code(), StatusCode::kNotFound);
}

// What a confined shell says about itself: "key=value" lines of its ids, umask, directory and
// environment.
std::map<std::string, std::string> ConfinedShellReport(const Confinement& confinement) {
  auto child = ChildProcess::Spawn({"/bin/sh",
                                    {"-c", "echo uid=$(id -u); echo groups=\"$(id -G)\"; echo umask=$(umask); "
                                           "echo cwd=$(pwd); env"},
                                    {{"FUJI_ADDED", "1"}},
                                    confinement});
  EXPECT_TRUE(child.ok()) << child.status().ToString();
  std::map<std::string, std::string> said;
  if (!child.ok()) return said;
  for (const ChildOutput& line : Drain(child->get())) {
    const size_t eq = line.line.find('=');
    if (eq != std::string::npos) said[line.line.substr(0, eq)] = line.line.substr(eq + 1);
  }
  EXPECT_TRUE((*child)->Wait().Succeeded());
  return said;
}

// Plants variables in this process's environment for the life of a test.
class PlantedEnvironment {
 public:
  PlantedEnvironment() {
    for (const auto& [k, v] : kPlanted) ::setenv(k, v, 1);
  }
  ~PlantedEnvironment() {
    for (const auto& [k, v] : kPlanted) ::unsetenv(k);
  }
  static constexpr std::pair<const char*, const char*> kPlanted[] = {
      {"AGENT_SECRET", "x"}, {"FUJI_JOIN_TOKEN", "t"}, {"FUJI_PLANTED", "p"}, {"CUDA_PLANTED", "c"}};
};

TEST(LauncherTest, AConfinedChildSeesAMinimalEnvironmentAndAPrivateUmask) {
  PlantedEnvironment planted;
  auto said = ConfinedShellReport(Confinement{});
  EXPECT_EQ(said.count("AGENT_SECRET"), 0u);
  EXPECT_EQ(said.count("FUJI_JOIN_TOKEN"), 0u);  // credentials stay with the agent
  EXPECT_EQ(said["FUJI_PLANTED"], "p");
  EXPECT_EQ(said["CUDA_PLANTED"], "c");
  EXPECT_EQ(said["FUJI_ADDED"], "1");
  EXPECT_EQ(said.count("PATH"), 1u);
  EXPECT_EQ(said["umask"], "0077");
  EXPECT_EQ(said["uid"], std::to_string(::geteuid()));

  // Unconfined (a service the tests start), it inherits everything.
  auto open = ChildProcess::Spawn({"/bin/sh", {"-c", "echo \"secret=$AGENT_SECRET\""}, {}});
  ASSERT_TRUE(open.ok());
  auto out = Drain(open->get());
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].line, "secret=x");
}

TEST(LauncherTest, PassesToConfinedChildKeepsWhatRanksNeed) {
  for (const char* yes : {"PATH", "HOME", "LANG", "LC_ALL", "TZ", "CUDA_VISIBLE_DEVICES", "NCCL_DEBUG",
                          "OMP_NUM_THREADS", "GLOO_SOCKET_IFNAME", "FUJI_VOCAB_DIR", "ASAN_OPTIONS"}) {
    EXPECT_TRUE(PassesToConfinedChild(yes)) << yes;
  }
  for (const char* no : {"AGENT_SECRET", "LD_PRELOAD", "LD_LIBRARY_PATH", "FUJI_TOKEN", "FUJI_JOIN_TOKEN",
                         "PATHX", "SSH_AUTH_SOCK", "LC_CTYPE", "TMPDIR"}) {
    EXPECT_FALSE(PassesToConfinedChild(no)) << no;
  }
}

TEST(LauncherTest, AnAgentNotRunAsRootKeepsItsUserForItsRanks) {
  if (::geteuid() == 0) GTEST_SKIP() << "runs as root";
  auto none = RankUser("");
  ASSERT_TRUE(none.ok());
  EXPECT_FALSE(none->has_value());
  auto root = RankUser("root");
  EXPECT_EQ(root.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(root.status().message().find("--run-as root"), std::string::npos);
}

TEST(LauncherTest, ARootAgentRunsItsRanksAsAnUnprivilegedUser) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root";
  EXPECT_EQ(RankUser("root").status().message(), "--run-as root: ranks never run as root");
  auto missing = RankUser("no-such-fuji-user");
  EXPECT_EQ(missing.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(missing.status().message().find("useradd --system"), std::string::npos);
  // fuji when scripts/bootstrap has made it, else nobody: the mechanism is the same.
  Result<std::optional<UnixUser>> who = RankUser(LookUpUser("fuji").ok() ? "fuji" : "nobody");
  ASSERT_TRUE(who.ok()) << who.status().ToString();
  ASSERT_TRUE(who->has_value());
  const UnixUser& rank = **who;

  PlantedEnvironment planted;
  auto said = ConfinedShellReport(Confinement{rank});
  EXPECT_NE(said["uid"], "0");
  EXPECT_EQ(said["uid"], std::to_string(rank.uid));
  EXPECT_EQ(said["groups"], std::to_string(rank.gid));  // no supplementary groups
  EXPECT_EQ(said["HOME"], rank.home);
  EXPECT_EQ(said["cwd"], "/");
  EXPECT_EQ(said["umask"], "0077");
  EXPECT_EQ(said.count("AGENT_SECRET"), 0u);
  EXPECT_EQ(said["FUJI_PLANTED"], "p");
}

}  // namespace
}  // namespace fuji::launch
