// Failure classification of a job attempt.
#include "worker/agent/failure.h"

#include <csignal>

namespace fuji::agent {

Failure ClassifyFailure(const std::optional<RankError>& error, const launch::ExitInfo& exit,
                        bool sigkill_sent_by_fuji, const std::string& last_stderr_line,
                        int64_t oom_kills_meanwhile) {
  Failure f;
  f.exit_code = exit.signal == 0 ? exit.exit_code : 0;
  f.signal = exit.signal;
  if (error) {
    const FailureKind r = error->reason;
    f.kind = (r == FailureKind::kBadInput || r == FailureKind::kCudaOom || r == FailureKind::kHostOom)
                 ? r
                 : FailureKind::kInternal;
    f.message = error->message;
    if (f.kind == FailureKind::kCudaOom && f.message.find("CUDA out of memory") == std::string::npos) {
      f.message = "CUDA out of memory" + (f.message.empty() ? "" : ": " + f.message);
    }
    if (f.message.empty()) f.message = FailureKindName(f.kind);
    return f;
  }
  if (exit.signal == SIGKILL && !sigkill_sent_by_fuji && oom_kills_meanwhile > 0) {
    f.kind = FailureKind::kHostOom;
    f.message = "killed by SIGKILL (the kernel's OOM killer killed " + std::to_string(oom_kills_meanwhile) +
                " process(es) meanwhile)";
  } else if (exit.signal == SIGKILL && !sigkill_sent_by_fuji && oom_kills_meanwhile < 0) {
    f.kind = FailureKind::kHostOom;
    f.message = "killed by SIGKILL (not sent by fuji; likely the kernel's OOM killer)";
  } else if (exit.signal == SIGKILL && !sigkill_sent_by_fuji) {
    f.kind = FailureKind::kSignal;
    f.message = "killed by SIGKILL (not sent by fuji; the kernel's OOM killer killed nothing meanwhile)";
  } else if (exit.signal != 0) {
    f.kind = FailureKind::kSignal;
    f.message = exit.Describe();
  } else if (exit.exit_code != 0) {
    f.kind = FailureKind::kExitCode;
    f.message = exit.Describe() + (last_stderr_line.empty() ? "" : ": " + last_stderr_line);
  } else {
    f.kind = FailureKind::kInternal;
    f.message = "fuji-rank exited without a result" + (last_stderr_line.empty() ? "" : ": " + last_stderr_line);
  }
  return f;
}

}  // namespace fuji::agent
