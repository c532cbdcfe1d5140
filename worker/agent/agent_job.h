// The agent's per-job state and what its one supervisor (supervisor.cc) runs: an attempt as its
// kind prepares it (agent_infer.cc, agent_finetune.cc), and rank events turned into report entries.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "worker/agent/agent.h"
#include "worker/agent/failure.h"
#include "worker/agent/warm_pool.h"
#include "worker/launcher/gang.h"

namespace fuji::agent {

using Clock = std::chrono::steady_clock;

// One job attempt. `assignment` is immutable; the rest is guarded by Agent::mu_.
struct Agent::Job {
  fuji::v1::Assignment assignment;
  std::thread supervisor;
  std::vector<pid_t> pids;                        // while the ranks run
  StopReason stop = StopReason::kNone;            // what the supervisor was asked to do
  bool preempt = false;                           // checkpoint and stop asked (RequestPreempt)
  fuji::v1::JobReport pending;                    // not yet sent
  Clock::time_point last_report{};
  std::optional<fuji::v1::CompleteRequest> completion;  // set once the ranks ended
  bool finished = false;                          // the supervisor is done
  bool send_complete = true;                      // false for kUnwanted and kShutdown
  int64_t oom_kills_at_start = -1;                // OomKillCount() when the attempt started
};

// One attempt as its kind prepares it; the supervisor runs every kind's the same way.
struct Launch {
  // An inference: a request to a warm rank (WarmPool); a finetune: a gang of a rank per device.
  std::unique_ptr<launch::Runner> runner;
  std::vector<int> devices;            // the assigned devices, sampled while the ranks run
  fuji::v1::JobReport prepared;        // what preparing reported (a finetune's "prepare" timing)
  int64_t corpus_tokens = 0;           // a finetune's, shown with its "train" progress
};

// The gang options every kind shares: the rank executable, the job's id and op, the cancel grace
// and the assignment's timeout.
launch::GangOptions AttemptGangOptions(const fuji::v1::Assignment& a, const AgentConfig& config);

// An "infer" assignment: a request to the pool's rank holding the model on the first assigned
// device (started when none does), sent the spec. A refusal is INVALID_ARGUMENT when the job is at
// fault; INTERNAL and RESOURCE_EXHAUSTED are the node's.
Result<Launch> InferLaunch(const fuji::v1::Assignment& a, const AgentConfig& config,
                           const DeviceInventory& inventory, WarmPool* pool);
// A "finetune" assignment: prepared (everything refusable refused here, before any rank starts),
// then one rank per assigned device. Refusals as for InferLaunch.
Result<Launch> FinetuneLaunch(const fuji::v1::Assignment& a, const AgentConfig& config,
                              const DeviceInventory& inventory);

bool Empty(const fuji::v1::JobReport& r);
// The next report to send of what `pending` holds, taken from it: all losses and progress, then
// the oldest logs, timings and samples within limits::kMaxReportEntries each and about
// limits::kMaxReportBytes in all, so that fujid never refuses a report as too large.
fuji::v1::JobReport TakeReport(fuji::v1::JobReport* pending);

// OOM kills on this host since `at_start` (an OomKillCount reading); -1 when either is unknown.
int64_t OomKillsSince(int64_t at_start);

// Turns one rank event into report entries: progress, timings, rank 0's losses. The result and
// error events are the gang's to heed. Throws nlohmann::json::exception on a malformed event.
void HandleEvent(const nlohmann::json& e, int32_t rank, int64_t now, fuji::v1::JobReport* part, int32_t attempt);

}  // namespace fuji::agent
