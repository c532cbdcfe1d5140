// Failure classification of a job attempt from the rank's error event and its exit.
#include <csignal>

#include <gtest/gtest.h>

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
      {"bad input event", RankError{"bad_input", "max_new_tokens: must be positive"}, Exited(2), false, "",
       "bad_input", "max_new_tokens: must be positive", 2, 0},
      {"cuda oom event", RankError{"cuda_oom", "CUDA out of memory. Tried to allocate 2 GiB"}, Exited(1), false, "",
       "cuda_oom", "CUDA out of memory. Tried to allocate 2 GiB", 1, 0},
      {"cuda oom without the words", RankError{"cuda_oom", "allocating the KV cache"}, Exited(1), false, "",
       "cuda_oom", "CUDA out of memory: allocating the KV cache", 1, 0},
      {"host oom event", RankError{"host_oom", "std::bad_alloc"}, Exited(1), false, "", "host_oom", "std::bad_alloc",
       1, 0},
      {"internal event", RankError{"internal", "checkpoint shape mismatch"}, Exited(1), false, "", "internal",
       "checkpoint shape mismatch", 1, 0},
      {"unknown reason is internal", RankError{"weird", "x"}, Exited(1), false, "", "internal", "x", 1, 0},
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
  EXPECT_EQ(oom.kind, "host_oom");
  EXPECT_EQ(oom.message, "killed by SIGKILL (the kernel's OOM killer killed 1 process(es) meanwhile)");
  Failure killed = ClassifyFailure(std::nullopt, Signalled(SIGKILL), false, "", 0);
  EXPECT_EQ(killed.kind, "signal");
  EXPECT_EQ(killed.message, "killed by SIGKILL (not sent by fuji; the kernel's OOM killer killed nothing meanwhile)");
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    const Failure f = ClassifyFailure(c.error, c.exit, c.sigkill_by_fuji, c.last_stderr, -1);
    EXPECT_EQ(f.kind, c.kind);
    EXPECT_EQ(f.message, c.message);
    EXPECT_EQ(f.exit_code, c.exit_code);
    EXPECT_EQ(f.signal, c.signal);
  }
}

}  // namespace
}  // namespace fuji::agent
