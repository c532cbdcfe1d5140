// Tests of the rank launcher with real child processes (/bin/sh scripts standing in for the
// rank's side of the pipes): events and logs, requests, exit reporting, process-group kills.
#include <signal.h>

#include <chrono>
#include <thread>

#include <gtest/gtest.h>

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

}  // namespace
}  // namespace fuji::launch
