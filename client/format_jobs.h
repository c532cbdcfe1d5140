// Jobs as the CLI shows them: lifecycle names, JSON objects, the `fuji jobs` table and the
// `fuji show` text. Pure functions of the proto messages (and of "now" where ages appear).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "fuji/v1/jobs.pb.h"
#include "lib/common/status.h"

namespace fuji::client {

// QUEUED, ASSIGNED, RUNNING, SUCCEEDED, FAILED, CANCELLED, RETRYING; "UNSPECIFIED" for 0.
std::string JobStateName(v1::JobState state);
// The inverse, case-insensitive; INVALID_ARGUMENT listing the names for anything else.
Result<v1::JobState> ParseJobState(const std::string& name);
// SUCCEEDED, FAILED or CANCELLED.
bool IsTerminal(v1::JobState state);

// {"id", "state", "kind", "attempts", "reason"}: the head every --output json object starts with.
nlohmann::json JobHeadJson(const v1::Job& job);
// Every field of the job; "spec" is the spec parsed from spec_json (its text if not JSON);
// "progress" {phase, done, total, loss, tokens_per_s, at_ms, corpus_tokens} and "last_loss"
// {step, loss} when the daemon sent them (GetJob of a running job, of a finetune); "estimate"
// (RunningTrainEstimate) when there is one.
nlohmann::json JobToJson(const v1::Job& job);
// The head plus "result": `fuji result`, `fuji submit --wait --output json`.
nlohmann::json JobResultJson(const v1::Job& job, const nlohmann::json& result);

// ID STATE KIND PRIO ATTEMPTS AGE REASON, widths fitted; with_owner adds OWNER after ID.
std::string JobsTable(const std::vector<v1::Job>& jobs, int64_t now_ms, bool with_owner = false);
// The plan a job was placed with (Job.plan_json): "zero 2, offload optimizer (predicted 3.7 GiB
// of host memory, 1.728 s per step)"; on GPUs the bytes per device come first.
std::string PlanText(const std::string& plan_json);
// "field: value" lines with every field, times as local time with their age, the plan, progress,
// the time to train (RunningTrainEstimate) and last loss when known, and the spec.
std::string JobText(const v1::Job& job, int64_t now_ms);

// Milliseconds left for a run at `done` of `total` steps at time at_ms, at the rate seen since
// an earlier sighting (done_then at then_ms); -1 when the rate is unknown (no progress between
// the two, or time did not advance).
int64_t EtaMs(int64_t done_then, int64_t then_ms, int64_t done, int64_t at_ms, int64_t total);
// A running finetune's time to train one epoch of its corpus at the rate its latest train progress
// carries, when it carries both (tokens_per_s > 0, corpus_tokens > 0): {"corpus_tokens",
// "tokens_per_s", "epochs": 1, "ranks", "seconds", "duration"}; null otherwise.
nlohmann::json RunningTrainEstimate(const v1::Job& job);
// That object as "1 epoch of 1,234,567 tokens at 3,400 tok/s on 2 ranks: 6.1 min".
std::string TrainEstimateText(const nlohmann::json& estimate);

// A finetune's progress: "step 3/10  loss 3.4000  2000 tok/s  ETA 12s" (loss and tok/s left out
// when 0, the ETA when eta_ms < 0).
std::string TrainProgressText(const v1::Progress& progress, int64_t eta_ms);

// "job 7 FAILED: reason" (no reason: "job 7 FAILED").
std::string JobOutcome(const v1::Job& job);

}  // namespace fuji::client
