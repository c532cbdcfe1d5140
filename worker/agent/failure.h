// How a job attempt failed, in the words CompleteRequest carries: a kind and a message a person can
// act on. Pure functions, table-tested.
#pragma once

#include <optional>
#include <string>

#include "lib/common/failure_kind.h"
#include "worker/launcher/child_process.h"

namespace fuji::agent {

// A rank's {"event": "error"}: its reason (bad_input, cuda_oom, host_oom, collective_timeout,
// internal) and message.
struct RankError {
  FailureKind reason = FailureKind::kInternal;
  std::string message;
};

struct Failure {
  FailureKind kind = FailureKind::kInternal;  // exit_code, signal, host_oom, cuda_oom, bad_input, internal
  std::string message;
  int exit_code = 0;
  int signal = 0;
};

// The rank's own error event wins (a reason other than bad_input, cuda_oom and host_oom is
// internal); else the exit: a SIGKILL fuji did not send is the kernel's OOM
// killer (host_oom) when it killed something while the attempt ran (`oom_kills_meanwhile` > 0, the
// change of OomKillCount; -1 when unknown: then it is presumed), and "signal" when it killed
// nothing (someone else's kill -9: the job is retried as after any other signal, not narrowed to
// smaller plans); other signals are "signal", a non-zero exit is "exit_code" with the last stderr
// line. An exit 0 without a result is "internal".
Failure ClassifyFailure(const std::optional<RankError>& error, const launch::ExitInfo& exit,
                        bool sigkill_sent_by_fuji, const std::string& last_stderr_line,
                        int64_t oom_kills_meanwhile);

}  // namespace fuji::agent
