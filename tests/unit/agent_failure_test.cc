// Failure classification of a job attempt from the rank's error event and its exit, and the wire
// words of FailureKind.
#include <csignal>
#include <string>
#include <utility>
#include <vector>

#include <gtest/gtest.h>

#include "lib/common/limits.h"
#include "worker/agent/agent_job.h"
#include "worker/agent/failure.h"

namespace fuji::agent {
namespace {

launch::ExitInfo Exited(int code) {
  launch::ExitInfo e;
  e.exit_code = code;
  return e;
}
launch::ExitInfo Signalled(int sig) {
  launch::ExitInfo e;
  e.signal = sig;
  return e;
}
// An error event as the rank words it.
RankError Said(const char* reason, const char* message) { return RankError{ParseFailureKind(reason), message}; }

struct Case {
  const char* name;
  std::optional<RankError> error;
  launch::ExitInfo exit;
  bool sigkill_by_fuji;
  std::string last_stderr;
  std::string kind;
  std::string message;
  int exit_code;
  int signal;
};

TEST(AgentFailureTest, Table) {
  const std::vector<Case> cases = {
      {"bad input event", Said("bad_input", "max_new_tokens: must be positive"), Exited(2), false, "",
       "bad_input", "max_new_tokens: must be positive", 2, 0},
      {"cuda oom event", Said("cuda_oom", "CUDA out of memory. Tried to allocate 2 GiB"), Exited(1), false, "",
       "cuda_oom", "CUDA out of memory. Tried to allocate 2 GiB", 1, 0},
      {"cuda oom without the words", Said("cuda_oom", "allocating the KV cache"), Exited(1), false, "",
       "cuda_oom", "CUDA out of memory: allocating the KV cache", 1, 0},
      {"host oom event", Said("host_oom", "std::bad_alloc"), Exited(1), false, "", "host_oom", "std::bad_alloc",
       1, 0},
      {"internal event", Said("internal", "checkpoint shape mismatch"), Exited(1), false, "", "internal",
       "checkpoint shape mismatch", 1, 0},
      {"unknown reason is internal", Said("weird", "x"), Exited(1), false, "", "internal", "x", 1, 0},
      {"sigkill not ours", std::nullopt, Signalled(SIGKILL), false, "loading", "host_oom",
       "killed by SIGKILL (not sent by fuji; likely the kernel's OOM killer)", 0, SIGKILL},
      {"sigkill ours", std::nullopt, Signalled(SIGKILL), true, "", "signal", "killed by signal 9 (SIGKILL)", 0,
       SIGKILL},
      {"segfault", std::nullopt, Signalled(SIGSEGV), false, "", "signal", "killed by signal 11 (SIGSEGV)", 0, SIGSEGV},
      {"exit code with stderr", std::nullopt, Exited(3), false, "terminate called after throwing", "exit_code",
       "exit code 3: terminate called after throwing", 3, 0},
      {"exit code alone", std::nullopt, Exited(3), false, "", "exit_code", "exit code 3", 3, 0},
      {"clean exit, no result", std::nullopt, Exited(0), false, "", "internal", "fuji-rank exited without a result", 0,
       0},
  };
  // A SIGKILL fuji did not send is host_oom only when the OOM killer killed something meanwhile.
  Failure oom = ClassifyFailure(std::nullopt, Signalled(SIGKILL), false, "", 1);
  EXPECT_EQ(FailureKindName(oom.kind), "host_oom");
  EXPECT_EQ(oom.message, "killed by SIGKILL (the kernel's OOM killer killed 1 process(es) meanwhile)");
  Failure killed = ClassifyFailure(std::nullopt, Signalled(SIGKILL), false, "", 0);
  EXPECT_EQ(FailureKindName(killed.kind), "signal");
  EXPECT_EQ(killed.message, "killed by SIGKILL (not sent by fuji; the kernel's OOM killer killed nothing meanwhile)");
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    const Failure f = ClassifyFailure(c.error, c.exit, c.sigkill_by_fuji, c.last_stderr, -1);
    EXPECT_EQ(FailureKindName(f.kind), c.kind);
    EXPECT_EQ(f.message, c.message);
    EXPECT_EQ(f.exit_code, c.exit_code);
    EXPECT_EQ(f.signal, c.signal);
  }
}

// Every kind's wire word parses back to it; words nobody knows (an older or newer peer's) and ""
// are kInternal.
TEST(FailureKindTest, WireWordsRoundTripAndUnknownIsInternal) {
  const std::vector<std::pair<FailureKind, std::string>> words = {
      {FailureKind::kInternal, "internal"},   {FailureKind::kExitCode, "exit_code"},
      {FailureKind::kSignal, "signal"},       {FailureKind::kHostOom, "host_oom"},
      {FailureKind::kCudaOom, "cuda_oom"},    {FailureKind::kBadInput, "bad_input"},
      {FailureKind::kTimeout, "timeout"},     {FailureKind::kCancelled, "cancelled"},
      {FailureKind::kCollectiveTimeout, "collective_timeout"},
  };
  for (const auto& [kind, word] : words) {
    EXPECT_EQ(FailureKindName(kind), word);
    EXPECT_EQ(ParseFailureKind(word), kind) << word;
  }
  for (const char* unknown : {"", "device_oom", "weird", "Cancelled", "cancelled "}) {
    EXPECT_EQ(ParseFailureKind(unknown), FailureKind::kInternal) << unknown;
  }
}

}  // namespace
}  // namespace fuji::agent

namespace fuji::agent {
namespace {

// A backlog (fujid away for a while) goes out in reports fujid takes: at most
// limits::kMaxReportEntries entries of a kind and about limits::kMaxReportBytes each, oldest first,
// losses and progress in the first.
TEST(AgentReportTest, ABacklogIsSentInReportsThatFit) {
  fuji::v1::JobReport pending;
  pending.set_started(true);
  for (int i = 0; i < 2000; ++i) pending.add_logs()->set_line(std::to_string(i) + std::string(16 << 10, 'x'));
  for (int i = 0; i < 700; ++i) pending.add_samples()->set_used_mib(i);
  pending.add_losses()->set_step(3);
  std::vector<fuji::v1::JobReport> sent;
  while (!Empty(pending)) sent.push_back(TakeReport(&pending));
  ASSERT_GE(sent.size(), 4u);
  EXPECT_TRUE(sent[0].started());
  EXPECT_EQ(sent[0].losses_size(), 1);
  int logs = 0, samples = 0;
  for (const auto& r : sent) {
    EXPECT_LE(r.logs_size(), limits::kMaxReportEntries);
    EXPECT_LE(r.ByteSizeLong(), limits::kMaxReportBytes + (64u << 10));
    for (const auto& l : r.logs()) EXPECT_EQ(l.line().substr(0, l.line().find('x')), std::to_string(logs++));
    for (const auto& s : r.samples()) EXPECT_EQ(s.used_mib(), samples++);
  }
  EXPECT_EQ(logs, 2000);
  EXPECT_EQ(samples, 700);
}

}  // namespace
}  // namespace fuji::agent
