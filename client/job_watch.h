// Following a job through WatchJob until it is terminal: `fuji watch` and `fuji submit --wait`.
#pragma once

#include <cstdint>
#include <cstdio>
#include <functional>

#include "client/daemon_client.h"
#include "fuji/v1/jobs.pb.h"
#include "lib/common/status.h"

namespace fuji::client {

struct WatchDisplay {
  enum class Mode {
    kNone,      // nothing: `submit --wait` off a terminal
    kTerminal,  // a progress bar and state on one line redrawn with \r; logs printed above it
    kLines,     // "state RUNNING", "progress generate 12/64" and log lines, one per event
  };
  Mode mode = Mode::kNone;
  bool show_logs = true;
  FILE* out = stdout;
  // Set: an inference job's generated tokens are watched too, each run given here once, in order
  // (a watch that is resumed does not repeat them; a retry starts again with attempt > 0).
  std::function<void(const v1::TokenDelta&)> on_tokens;
};

// Watches job `id` until it is SUCCEEDED, FAILED or CANCELLED and returns it as it ended. A
// stream that ends early is resumed (logs after the last seen), and a daemon that goes away is
// waited for up to `reconnect_for_ms` before its UNAVAILABLE is returned.
Result<v1::Job> FollowJob(DaemonClient& client, int64_t id, const WatchDisplay& display,
                          int64_t reconnect_for_ms = 30000);

// 0 for a SUCCEEDED job; otherwise prints "fuji: job N FAILED: reason" and returns 1.
int ReportJobOutcome(const v1::Job& job);

}  // namespace fuji::client
