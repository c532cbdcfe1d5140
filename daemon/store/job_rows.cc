// SQL and row decoding shared by the JobStore: job and assignment rows, List queries, events.
#include "daemon/store/job_rows.h"

#include <nlohmann/json.hpp>

namespace fuji::store {

const char kJobColumns[] =
    "id, kind, state, priority, spec, devices, attempts, max_attempts, timeout_ms, reason, "
    "worker_id, submitted_at_ms, started_at_ms, finished_at_ms, updated_at_ms, shareable, "
    "COALESCE(plans, ''), COALESCE(plan, ''), owner, COALESCE(cancel_requested_at_ms, 0), lease_epoch, "
    "COALESCE(notify_url, '')";

// kJobColumns with the two columns that may be megabytes cut down: the spec to its "device" (all
// that a listing shows of it) and no plans.
const char kJobSummaryColumns[] =
    "id, kind, state, priority, "
    "CASE WHEN json_type(spec, '$.device') = 'text' "
    "THEN json_object('device', substr(json_extract(spec, '$.device'), 1, 64)) ELSE '{}' END, "
    "devices, attempts, max_attempts, timeout_ms, reason, "
    "worker_id, submitted_at_ms, started_at_ms, finished_at_ms, updated_at_ms, shareable, "
    "'', COALESCE(plan, ''), owner, COALESCE(cancel_requested_at_ms, 0), lease_epoch, "
    "COALESCE(notify_url, '')";

Result<JobRecord> ReadJob(const Statement& row) {
  JobRecord job;
  job.id = row.Int(0);
  Result<JobKind> kind = ParseJobKind(row.Text(1));
  Result<JobState> state = ParseJobState(row.Text(2));
  if (!kind.ok()) return DataLoss("job " + std::to_string(job.id) + ": " + kind.status().message());
  if (!state.ok())
    return DataLoss("job " + std::to_string(job.id) + ": " + state.status().message());
  job.kind = *kind;
  job.state = *state;
  job.priority = row.Int(3);
  job.spec = row.Text(4);
  job.devices = static_cast<int>(row.Int(5));
  job.attempts = static_cast<int>(row.Int(6));
  job.max_attempts = static_cast<int>(row.Int(7));
  job.timeout_ms = row.Int(8);
  job.reason = row.Text(9);
  job.worker_id = row.Text(10);
  job.submitted_at_ms = row.Int(11);
  if (!row.IsNull(12)) job.started_at_ms = row.Int(12);
  if (!row.IsNull(13)) job.finished_at_ms = row.Int(13);
  job.updated_at_ms = row.Int(14);
  job.shareable = row.Int(15) != 0;
  job.plans = row.Text(16);
  job.plan = row.Text(17);
  job.owner = row.Text(18);
  job.cancel_requested_at_ms = row.Int(19);
  job.lease_epoch = row.Int(20);
  job.notify_url = row.Text(21);
  return job;
}

std::string ListJobsSql(bool by_state, bool by_kind, bool by_owner) {
  // Built from fixed fragments only: values are always bound.
  std::string sql = std::string("SELECT ") + kJobSummaryColumns + " FROM jobs WHERE id < :before";
  if (by_owner) sql += " AND owner = :owner";
  if (by_state) sql += " AND state = :state";
  if (by_kind) sql += " AND kind = :kind";
  sql += " ORDER BY id DESC LIMIT :limit";
  return sql;
}

const char kAssignmentColumns[] =
    "job_id, attempt, worker_id, device_indices, assigned_at_ms, lease_expires_ms, released_at_ms";

Result<Assignment> ReadAssignment(const Statement& row) {
  Assignment a;
  a.job_id = row.Int(0);
  a.attempt = static_cast<int>(row.Int(1));
  a.worker_id = row.Text(2);
  nlohmann::json indices = nlohmann::json::parse(row.Text(3), nullptr, /*allow_exceptions=*/false);
  if (!indices.is_array()) {
    return DataLoss("assignment of job " + std::to_string(a.job_id) + ": bad device_indices");
  }
  for (const nlohmann::json& index : indices) {
    if (!index.is_number_integer()) {
      return DataLoss("assignment of job " + std::to_string(a.job_id) + ": bad device index");
    }
    a.device_indices.push_back(index.get<int>());
  }
  a.assigned_at_ms = row.Int(4);
  a.lease_expires_ms = row.Int(5);
  if (!row.IsNull(6)) a.released_at_ms = row.Int(6);
  return a;
}

namespace {

// A JSON array of device indices, or nullopt.
std::optional<std::vector<int>> ParseIndices(const std::string& text) {
  nlohmann::json indices = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (!indices.is_array()) return std::nullopt;
  std::vector<int> out;
  for (const nlohmann::json& index : indices) {
    if (!index.is_number_integer()) return std::nullopt;
    out.push_back(index.get<int>());
  }
  return out;
}

}  // namespace

const char kGangMemberColumns[] =
    "job_id, attempt, worker_id, advertise_addr, first_rank, device_indices, port, lease_expires_ms, "
    "released_at_ms";

Result<GangMemberRecord> ReadGangMember(const Statement& row) {
  GangMemberRecord m;
  m.job_id = row.Int(0);
  m.attempt = static_cast<int>(row.Int(1));
  m.worker_id = row.Text(2);
  m.advertise_addr = row.Text(3);
  m.first_rank = static_cast<int>(row.Int(4));
  std::optional<std::vector<int>> indices = ParseIndices(row.Text(5));
  if (!indices) return DataLoss("gang member of job " + std::to_string(m.job_id) + ": bad device_indices");
  m.device_indices = std::move(*indices);
  m.port = static_cast<int>(row.Int(6));
  m.lease_expires_ms = row.Int(7);
  if (!row.IsNull(8)) m.released_at_ms = row.Int(8);
  return m;
}

Result<std::vector<GangMemberRecord>> ReadGang(Connection& db, int64_t job_id) {
  FUJI_ASSIGN_OR_RETURN(Statement select,
                        db.Prepare(std::string("SELECT ") + kGangMemberColumns +
                                   " FROM gang_members WHERE job_id = ?1 AND attempt = "
                                   "(SELECT MAX(attempt) FROM assignments WHERE job_id = ?1) ORDER BY first_rank"));
  select.BindInt(1, job_id);
  return CollectRows<GangMemberRecord>(select, ReadGangMember);
}

Status InsertEvent(Connection& db, int64_t job_id, std::optional<JobState> from, JobState to,
                   const std::string& message, int64_t at_ms) {
  FUJI_ASSIGN_OR_RETURN(
      Statement insert,
      db.Prepare("INSERT INTO job_events (job_id, seq, at_ms, from_state, to_state, message) "
                 "SELECT ?1, COALESCE(MAX(seq), 0) + 1, ?2, ?3, ?4, ?5 "
                 "FROM job_events WHERE job_id = ?1"));
  insert.BindInt(1, job_id).BindInt(2, at_ms);
  if (from.has_value()) {
    insert.BindText(3, JobStateName(*from));
  } else {
    insert.BindNull(3);
  }
  return insert.BindText(4, JobStateName(to)).BindText(5, message).Run();
}

Status ValidateJsonObject(std::string_view what, std::string_view text, size_t max_bytes) {
  if (text.size() > max_bytes) {
    return ResourceExhausted(std::string(what) + " is " + std::to_string(text.size()) +
                             " bytes, more than the limit of " + std::to_string(max_bytes));
  }
  size_t first = text.find_first_not_of(" \t\r\n");
  if (first == std::string_view::npos || text[first] != '{' || !nlohmann::json::accept(text)) {
    return InvalidArgument(std::string(what) + " must be a JSON object");
  }
  return Status::Ok();
}

}  // namespace fuji::store
