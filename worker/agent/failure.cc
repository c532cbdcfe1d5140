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
    const std::string& r = error->reason;
    f.kind = (r == "bad_input" || r == "cuda_oom" || r == "host_oom") ? r : "internal";
    f.message = error->message;
    if (f.kind == "cuda_oom" && f.message.find("CUDA out of memory") == std::string::npos) {
      f.message = "CUDA out of memory" + (f.message.empty() ? "" : ": " + f.message);
    }
    if (f.message.empty()) f.message = f.kind;
    return f;
  }
  if (exit.signal == SIGKILL && !sigkill_sent_by_fuji && oom_kills_meanwhile > 0) {
    f.kind = "host_oom";
    f.message = "killed by SIGKILL (the kernel's OOM killer killed " + std::to_string(oom_kills_meanwhile) +
                " process(es) meanwhile)";
  } else if (exit.signal == SIGKILL && !sigkill_sent_by_fuji && oom_kills_meanwhile < 0) {
    f.kind = "host_oom";
    f.message = "killed by SIGKILL (not sent by fuji; likely the kernel's OOM killer)";
  } else if (exit.signal == SIGKILL && !sigkill_sent_by_fuji) {
    f.kind = "signal";
    f.message = "killed by SIGKILL (not sent by fuji; the kernel's OOM killer killed nothing meanwhile)";
  } else if (exit.signal != 0) {
    f.kind = "signal";
    f.message = exit.Describe();
  } else if (exit.exit_code != 0) {
    f.kind = "exit_code";
    f.message = exit.Describe() + (last_stderr_line.empty() ? "" : ": " + last_stderr_line);
  } else {
    f.kind = "internal";
    f.message = "fuji-rank exited without a result" + (last_stderr_line.empty() ? "" : ": " + last_stderr_line);
  }
  return f;
}

}  // namespace fuji::agent
