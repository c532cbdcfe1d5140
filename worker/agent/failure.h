// How a job attempt failed, in the words CompleteRequest carries: a kind and a message a person can
// act on. Pure functions, table-tested.
#pragma once

#include <optional>
#include <string>

#include "worker/launcher/child_process.h"

namespace fuji::agent {

// A rank's {"event": "error"}: reason is bad_input, cuda_oom, host_oom or internal.
struct RankError {
  std::string reason;
  std::string message;
};

struct Failure {
  std::string kind;     // exit_code, signal, host_oom, cuda_oom, bad_input, internal
  std::string message;
  int exit_code = 0;
  int signal = 0;
};

// The rank's own error event wins; else the exit: a SIGKILL fuji did not send is the kernel's OOM
// killer (host_oom) when it killed something while the attempt ran (`oom_kills_meanwhile` > 0, the
// change of OomKillCount; -1 when unknown: then it is presumed), and "signal" when it killed
// nothing (someone else's kill -9: the job is retried as after any other signal, not narrowed to
// smaller plans); other signals are "signal", a non-zero exit is "exit_code" with the last stderr
// line. An exit 0 without a result is "internal".
Failure ClassifyFailure(const std::optional<RankError>& error, const launch::ExitInfo& exit,
                        bool sigkill_sent_by_fuji, const std::string& last_stderr_line,
                        int64_t oom_kills_meanwhile);

}  // namespace fuji::agent
