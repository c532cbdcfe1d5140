// JobStore: batched telemetry (memory samples, timings, logs) and per-attempt results; losses are
// in job_store_losses.cc.
#include "daemon/store/job_rows.h"
#include "daemon/store/job_store.h"
#include "daemon/store/sqlite.h"
#include "daemon/store/writer.h"

namespace fuji::store {
namespace {

std::string OfJob(int64_t job_id) {
  return " of job " + std::to_string(job_id);
}

}  // namespace

Status JobStore::InsertSamples(const std::vector<MemorySample>& samples) {
  if (samples.empty()) return Status::Ok();
  return writer_->Run([&](Connection& db) -> Status {
    // One prepared INSERT, rebound per row, inside the batch's single transaction.
    FUJI_ASSIGN_OR_RETURN(
        Statement insert,
        db.Prepare("INSERT INTO memory_samples (job_id, worker_id, device_index, device_name, "
                   "used_mib, total_mib, utilization_pct, process_mib, at_ms, host_memory) "
                   "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"));
    for (const MemorySample& s : samples) {
      insert.Reset();
      if (s.job_id.has_value()) {
        insert.BindInt(1, *s.job_id);
      } else {
        insert.BindNull(1);
      }
      Status status = insert.BindText(2, s.worker_id)
                          .BindInt(3, s.device_index)
                          .BindText(4, s.device_name)
                          .BindInt(5, s.used_mib)
                          .BindInt(6, s.total_mib)
                          .BindInt(7, s.utilization_pct)
                          .BindInt(8, s.process_mib)
                          .BindInt(9, s.at_ms)
                          .BindInt(10, s.host_memory ? 1 : 0)
                          .Run();
      if (!status.ok()) {
        return status.WithContext("memory sample" + (s.job_id ? OfJob(*s.job_id) : std::string()));
      }
    }
    return Status::Ok();
  });
}

Status JobStore::RecordTimings(const std::vector<Timing>& timings) {
  for (const Timing& t : timings) {
    if (t.end_ms < t.start_ms)
      return InvalidArgument("timing '" + t.phase + "' ends before it starts");
  }
  if (timings.empty()) return Status::Ok();
  return writer_->Run([&](Connection& db) -> Status {
    FUJI_ASSIGN_OR_RETURN(
        Statement insert,
        db.Prepare("INSERT INTO job_timings (job_id, attempt, rank, phase, start_ms, end_ms) "
                   "VALUES (?, ?, ?, ?, ?, ?)"));
    for (const Timing& t : timings) {
      insert.Reset();
      Status status = insert.BindInt(1, t.job_id)
                          .BindInt(2, t.attempt)
                          .BindInt(3, t.rank)
                          .BindText(4, t.phase)
                          .BindInt(5, t.start_ms)
                          .BindInt(6, t.end_ms)
                          .Run();
      if (!status.ok()) return status.WithContext("timing" + OfJob(t.job_id));
    }
    return Status::Ok();
  });
}

Status JobStore::AppendLogs(int64_t job_id, const std::vector<LogLine>& lines) {
  for (const LogLine& l : lines) {
    if (l.line.size() > kMaxLogLineBytes) {
      return ResourceExhausted("a log line" + OfJob(job_id) + " is " +
                               std::to_string(l.line.size()) + " bytes, more than the limit of " +
                               std::to_string(kMaxLogLineBytes));
    }
  }
  if (lines.empty()) return Status::Ok();
  return writer_->Run([&](Connection& db) -> Status {
    int64_t last_seq = 0;
    {
      FUJI_ASSIGN_OR_RETURN(
          Statement last,
          db.Prepare("SELECT COALESCE(MAX(seq), 0) FROM job_logs WHERE job_id = ?"));
      FUJI_RETURN_IF_ERROR(last.BindInt(1, job_id).Step().status());
      last_seq = last.Int(0);
    }
    FUJI_ASSIGN_OR_RETURN(Statement insert,
                          db.Prepare("INSERT INTO job_logs (job_id, seq, at_ms, stream, line) "
                                     "VALUES (?, ?, ?, ?, ?)"));
    for (const LogLine& l : lines) {
      insert.Reset();
      Status status = insert.BindInt(1, job_id)
                          .BindInt(2, ++last_seq)
                          .BindInt(3, l.at_ms)
                          .BindText(4, l.stream)
                          .BindText(5, l.line)
                          .Run();
      if (!status.ok()) return status.WithContext("log" + OfJob(job_id));
    }
    return Status::Ok();
  });
}

Status JobStore::SaveResult(int64_t job_id, int attempt, const std::string& result_json) {
  FUJI_RETURN_IF_ERROR(ValidateJsonObject("job result", result_json, kMaxJsonBytes));
  return writer_->Run([&](Connection& db) -> Status {
    {
      FUJI_ASSIGN_OR_RETURN(
          Statement exists,
          db.Prepare("SELECT EXISTS (SELECT 1 FROM jobs WHERE id = ?1), EXISTS (SELECT 1 FROM "
                     "results WHERE job_id = ?1 AND attempt = ?2)"));
      FUJI_RETURN_IF_ERROR(exists.BindInt(1, job_id).BindInt(2, attempt).Step().status());
      if (exists.Int(0) == 0) return NotFound("job " + std::to_string(job_id) + " not found");
      if (exists.Int(1) != 0) {
        return FailedPrecondition("the result of job " + std::to_string(job_id) + " attempt " +
                                  std::to_string(attempt) + " is already recorded");
      }
    }
    FUJI_ASSIGN_OR_RETURN(
        Statement insert,
        db.Prepare(
            "INSERT INTO results (job_id, attempt, result, saved_at_ms) VALUES (?, ?, ?, ?)"));
    return insert.BindInt(1, job_id)
        .BindInt(2, attempt)
        .BindText(3, result_json)
        .BindInt(4, clock_->NowMs())
        .Run();
  });
}

Result<std::vector<MemorySample>> JobStore::Samples(int64_t job_id) {
  FUJI_ASSIGN_OR_RETURN(ReaderPool::Lease db, readers_->Acquire());
  FUJI_ASSIGN_OR_RETURN(
      Statement select,
      db->Prepare("SELECT worker_id, device_index, device_name, used_mib, total_mib, "
                  "utilization_pct, process_mib, at_ms, host_memory FROM memory_samples "
                  "WHERE job_id = ? ORDER BY at_ms, rowid"));
  select.BindInt(1, job_id);
  return CollectRows<MemorySample>(select, [job_id](const Statement& row) {
    MemorySample s;
    s.job_id = job_id;
    s.worker_id = row.Text(0);
    s.device_index = static_cast<int>(row.Int(1));
    s.device_name = row.Text(2);
    s.used_mib = row.Int(3);
    s.total_mib = row.Int(4);
    s.utilization_pct = static_cast<int>(row.Int(5));
    s.process_mib = row.Int(6);
    s.at_ms = row.Int(7);
    s.host_memory = row.Int(8) != 0;
    return s;
  });
}

Result<std::vector<Timing>> JobStore::Timings(int64_t job_id) {
  FUJI_ASSIGN_OR_RETURN(ReaderPool::Lease db, readers_->Acquire());
  FUJI_ASSIGN_OR_RETURN(
      Statement select,
      db->Prepare("SELECT attempt, rank, phase, start_ms, end_ms FROM job_timings "
                  "WHERE job_id = ? ORDER BY attempt, rank, start_ms"));
  select.BindInt(1, job_id);
  return CollectRows<Timing>(select, [job_id](const Statement& row) {
    return Timing{job_id,
                  static_cast<int>(row.Int(0)),
                  static_cast<int>(row.Int(1)),
                  row.Text(2),
                  row.Int(3),
                  row.Int(4)};
  });
}

Result<std::vector<LogLine>> JobStore::Logs(int64_t job_id, int64_t after_seq, int limit) {
  if (limit < 0) return InvalidArgument("limit must not be negative");
  FUJI_ASSIGN_OR_RETURN(ReaderPool::Lease db, readers_->Acquire());
  FUJI_ASSIGN_OR_RETURN(Statement select,
                        db->Prepare("SELECT seq, at_ms, stream, line FROM job_logs "
                                    "WHERE job_id = ? AND seq > ? ORDER BY seq LIMIT ?"));
  select.BindInt(1, job_id).BindInt(2, after_seq).BindInt(3, limit);
  return CollectRows<LogLine>(select, [job_id](const Statement& row) {
    return LogLine{job_id, row.Int(0), row.Int(1), row.Text(2), row.Text(3)};
  });
}

Result<std::vector<JobResult>> JobStore::Results(int64_t job_id) {
  FUJI_ASSIGN_OR_RETURN(ReaderPool::Lease db, readers_->Acquire());
  FUJI_ASSIGN_OR_RETURN(Statement select,
                        db->Prepare("SELECT attempt, result, saved_at_ms FROM results "
                                    "WHERE job_id = ? ORDER BY attempt"));
  select.BindInt(1, job_id);
  return CollectRows<JobResult>(select, [job_id](const Statement& row) {
    return JobResult{job_id, static_cast<int>(row.Int(0)), row.Text(1), row.Int(2)};
  });
}

}  // namespace fuji::store
