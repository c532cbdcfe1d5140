// Jobs as the CLI shows them: lifecycle names, JSON objects, the `fuji jobs` table and the
// `fuji show` text. Pure functions of the proto messages (and of "now" where ages appear).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "fuji/v1/jobs.pb.h"
#include "worker/common/status.h"

namespace fuji::client {

// QUEUED, ASSIGNED, RUNNING, SUCCEEDED, FAILED, CANCELLED, RETRYING; "UNSPECIFIED" for 0.
std::string JobStateName(v1::JobState state);
// The inverse, case-insensitive; INVALID_ARGUMENT listing the names for anything else.
Result<v1::JobState> ParseJobState(const std::string& name);
// SUCCEEDED, FAILED or CANCELLED.
bool IsTerminal(v1::JobState state);

// {"id", "state", "kind", "attempts", "reason"}: the head every --output json object starts with.
nlohmann::json JobHeadJson(const v1::Job& job);
// Every field of the job; "spec" is the spec parsed from spec_json (its text if not JSON).
nlohmann::json JobToJson(const v1::Job& job);
// The head plus "result": `fuji result`, `fuji submit --wait --output json`.
nlohmann::json JobResultJson(const v1::Job& job, const nlohmann::json& result);

// ID STATE KIND PRIO ATTEMPTS AGE REASON, widths fitted.
std::string JobsTable(const std::vector<v1::Job>& jobs, int64_t now_ms);
// "field: value" lines with every field, times as local time with their age, and the spec.
std::string JobText(const v1::Job& job, int64_t now_ms);

// "job 7 FAILED: reason" (no reason: "job 7 FAILED").
std::string JobOutcome(const v1::Job& job);

}  // namespace fuji::client
