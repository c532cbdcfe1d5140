// The agent's per-job state and the translation of rank events into report entries, shared by
// the supervisor of single-rank jobs (agent.cc) and of fine-tuning gangs (agent_finetune.cc).
#pragma once

#include <chrono>
#include <optional>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "worker/agent/agent.h"
#include "worker/agent/failure.h"

namespace fuji::agent {

using Clock = std::chrono::steady_clock;

// One job attempt. `assignment` is immutable; the rest is guarded by Agent::mu_.
struct Agent::Job {
  fuji::v1::Assignment assignment;
  std::thread supervisor;
  std::vector<pid_t> pids;                        // while the ranks run
  StopReason stop = StopReason::kNone;            // what the supervisor was asked to do
  fuji::v1::JobReport pending;                    // not yet sent
  Clock::time_point last_report{};
  std::optional<fuji::v1::CompleteRequest> completion;  // set once the ranks ended
  bool finished = false;                          // the supervisor is done
  bool send_complete = true;                      // false for kUnwanted and kShutdown
  int64_t oom_kills_at_start = -1;                // OomKillCount() when the attempt started
};

bool Empty(const fuji::v1::JobReport& r);

// OOM kills on this host since `at_start` (an OomKillCount reading); -1 when either is unknown.
int64_t OomKillsSince(int64_t at_start);

// Turns one rank event into report entries (progress, timings, rank 0's losses), or the result /
// error of the attempt.
void HandleEvent(const nlohmann::json& e, int32_t rank, int64_t now, fuji::v1::JobReport* part,
                 std::optional<nlohmann::json>* result, std::optional<RankError>* error, int32_t attempt);

}  // namespace fuji::agent
