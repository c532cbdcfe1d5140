// JobStore: deleting the telemetry of jobs that ended long ago, and online backups of the database.
#include <sqlite3.h>

#include <memory>

#include "daemon/store/job_store.h"
#include "daemon/store/sqlite.h"
#include "daemon/store/writer.h"

namespace fuji::store {
namespace {

// One batch of a table's rows of ended jobs: the subquery walks the ended jobs by the time they
// ended (index jobs_by_finish) and each one's rows by the table's key, and stops at :limit rows.
// Built from the fixed names below only: every value is bound.
std::string PurgeSql(JobStore::Telemetry table) {
  struct Names {
    const char* table;
    const char* key;         // the table's primary key
    const char* joined_key;  // the same, of the joined table t
  };
  static constexpr Names kNames[] = {
      {"job_logs", "job_id, seq", "t.job_id, t.seq"},
      {"memory_samples", "rowid", "t.rowid"},
      {"losses", "job_id, step, split, attempt", "t.job_id, t.step, t.split, t.attempt"},
  };
  const Names& names = kNames[static_cast<int>(table)];
  return std::string("DELETE FROM ") + names.table + " WHERE (" + names.key + ") IN (SELECT " +
         names.joined_key + " FROM jobs j JOIN " + names.table + " t ON t.job_id = j.id " +
         "WHERE j.finished_at_ms >= :from AND j.finished_at_ms < :before "
         "AND j.state IN ('SUCCEEDED', 'FAILED', 'CANCELLED') LIMIT :limit)";
}

struct BackupCloser {
  void operator()(sqlite3_backup* backup) const { sqlite3_backup_finish(backup); }
};

}  // namespace

Result<int> JobStore::PurgeEnded(Telemetry table, int64_t ended_from_ms, int64_t ended_before_ms,
                                 int max_rows) {
  if (max_rows < 1 || max_rows > kMaxPurgeRows) {
    return InvalidArgument("a purge deletes 1 to " + std::to_string(kMaxPurgeRows) + " rows at a time");
  }
  const std::string sql = PurgeSql(table);
  int deleted = 0;
  FUJI_RETURN_IF_ERROR(writer_->Run([&](Connection& db) -> Status {
    FUJI_ASSIGN_OR_RETURN(Statement purge, db.Prepare(sql));
    FUJI_RETURN_IF_ERROR(purge.BindInt(purge.Param(":from"), ended_from_ms)
                             .BindInt(purge.Param(":before"), ended_before_ms)
                             .BindInt(purge.Param(":limit"), max_rows)
                             .Run());
    deleted = db.Changes();
    return Status::Ok();
  }));
  return deleted;
}

Status JobStore::BackupTo(const std::string& dest_path) {
  FUJI_ASSIGN_OR_RETURN(ReaderPool::Lease source, readers_->Acquire());
  sqlite3* raw = nullptr;
  // No CREATE: the caller made the file, privately; SQLite takes an empty file as a new database.
  int rc = sqlite3_open_v2(dest_path.c_str(), &raw, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, nullptr);
  DbPtr dest(raw);
  if (rc != SQLITE_OK) return SqliteError(dest.get(), rc, "backup: open the copy");
  std::unique_ptr<sqlite3_backup, BackupCloser> backup(
      sqlite3_backup_init(dest.get(), "main", source->raw(), "main"));
  if (backup == nullptr) {
    return SqliteError(dest.get(), sqlite3_errcode(dest.get()), "backup: start");
  }
  // Every page in one step: one read transaction on the source, so the copy is of one moment
  // (in WAL mode the writer goes on meanwhile).
  rc = sqlite3_backup_step(backup.get(), -1);
  if (rc != SQLITE_DONE) {
    return SqliteError(dest.get(), rc == SQLITE_OK ? SQLITE_INTERNAL : rc, "backup: copy");
  }
  rc = sqlite3_backup_finish(backup.release());
  if (rc != SQLITE_OK) return SqliteError(dest.get(), rc, "backup: finish");
  return Status::Ok();
}

}  // namespace fuji::store
