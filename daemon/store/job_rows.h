// Internal to fuji_store: SQL and row decoding shared by the JobStore's .cc files (and its tests).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "daemon/store/records.h"
#include "daemon/store/sqlite.h"
#include "lib/common/status.h"

namespace fuji::store {

// The columns ReadJob expects, in order: "SELECT " + kJobColumns + " FROM jobs ...".
extern const char kJobColumns[];
constexpr int kJobColumnCount = 22;  // columns in kJobColumns: a query's own columns follow them
Result<JobRecord> ReadJob(const Statement& row);

// The List query for a filter combination. Its rows carry a summary of the spec (its "device"
// only) and no plans, so that a page stays small whatever the specs' sizes. Parameters: :before (ids below it), and :state and
// :kind when filtered, :limit. Every variant is served by an index in id order (no sort).
std::string ListJobsSql(bool by_state, bool by_kind, bool by_owner);

// The columns ReadAssignment expects, in order, from assignments.
extern const char kAssignmentColumns[];
Result<Assignment> ReadAssignment(const Statement& row);

// The columns ReadGangMember expects, in order, from gang_members.
extern const char kGangMemberColumns[];
Result<GangMemberRecord> ReadGangMember(const Statement& row);
// The gang parts of the job's latest placement (empty when it was on one agent), on `db`.
Result<std::vector<GangMemberRecord>> ReadGang(Connection& db, int64_t job_id);

// Appends the job's next job_events row. Runs on the writer connection inside the state change's
// transaction, so the event and the change commit together.
Status InsertEvent(Connection& db, int64_t job_id, std::optional<JobState> from, JobState to,
                   const std::string& message, int64_t at_ms);

// INVALID_ARGUMENT unless text is a JSON object; RESOURCE_EXHAUSTED beyond max_bytes.
Status ValidateJsonObject(std::string_view what, std::string_view text, size_t max_bytes);

// Steps stmt to the end, decoding each row with read_row (returning T or Result<T>).
template <typename T, typename ReadRow>
Result<std::vector<T>> CollectRows(Statement& stmt, ReadRow read_row) {
  std::vector<T> rows;
  while (true) {
    FUJI_ASSIGN_OR_RETURN(bool has_row, stmt.Step());
    if (!has_row) return rows;
    Result<T> row = read_row(stmt);
    if (!row.ok()) return row.status();
    rows.push_back(std::move(row).value());
  }
}

}  // namespace fuji::store
