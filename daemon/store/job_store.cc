// JobStore: open (checks, pragmas, migrations), submit, reads and state transitions of jobs.
#include "daemon/store/job_store.h"

#include <unistd.h>

#include <algorithm>
#include <limits>
#include <utility>

#include "daemon/store/job_rows.h"
#include "daemon/store/migrate.h"
#include "daemon/store/sqlite.h"
#include "daemon/store/writer.h"
#include "lib/common/file_util.h"

namespace fuji::store {
namespace {

// Readers kept open between reads; more are opened under load and closed after.
constexpr size_t kMaxIdleReaders = 8;
constexpr int kDefaultPageSize = 100;

// Per-connection settings of the write connection. WAL lets readers run beside the writer;
// synchronous=FULL fsyncs the WAL at every commit (see the durability note in job_store.h).
Status ConfigureWriter(Connection& db, const std::string& path, JobStore::Durability durability) {
  FUJI_ASSIGN_OR_RETURN(Statement wal, db.Prepare("PRAGMA journal_mode=WAL"));
  FUJI_RETURN_IF_ERROR(wal.Step().status());
  if (std::string mode = wal.Text(0); mode != "wal") {
    return FailedPrecondition(path + ": cannot use WAL journal mode (got '" + mode + "')");
  }
  FUJI_RETURN_IF_ERROR(db.Exec(durability == JobStore::Durability::kFsyncEachCommit ? "PRAGMA synchronous=FULL"
                                                                                     : "PRAGMA synchronous=NORMAL"));
  return db.Exec("PRAGMA foreign_keys=ON");
}

Status ValidateNewJob(const JobRecord& job) {
  FUJI_RETURN_IF_ERROR(ValidateJsonObject("job spec", job.spec, JobStore::kMaxJsonBytes));
  if (job.devices < 1) return InvalidArgument("a job needs at least 1 device");
  if (job.max_attempts < 1) return InvalidArgument("max_attempts must be at least 1");
  if (job.timeout_ms < 0) return InvalidArgument("timeout_ms must not be negative");
  if (!job.plans.empty()) {
    FUJI_RETURN_IF_ERROR(ValidateJsonObject("job plans", job.plans, JobStore::kMaxJsonBytes));
  }
  return Status::Ok();
}

// Inserts the job and its submit event; stores the new id in *id.
Status InsertJob(Connection& db, const JobRecord& job, int64_t now_ms, int64_t* id) {
  FUJI_ASSIGN_OR_RETURN(
      Statement insert,
      db.Prepare("INSERT INTO jobs (kind, state, priority, spec, devices, attempts, max_attempts, "
                 "timeout_ms, reason, submitted_at_ms, updated_at_ms, shareable, plans, owner, notify_url) "
                 "VALUES (?1, 'QUEUED', ?2, ?3, ?4, 0, ?5, ?6, ?7, ?8, ?8, ?9, NULLIF(?10, ''), ?11, "
                 "NULLIF(?12, ''))"));
  FUJI_RETURN_IF_ERROR(insert.BindText(1, JobKindName(job.kind))
                           .BindInt(2, job.priority)
                           .BindText(3, job.spec)
                           .BindInt(4, job.devices)
                           .BindInt(5, job.max_attempts)
                           .BindInt(6, job.timeout_ms)
                           .BindText(7, job.reason)
                           .BindInt(8, now_ms)
                           .BindInt(9, job.shareable ? 1 : 0)
                           .BindText(10, job.plans)
                           .BindText(11, job.owner)
                           .BindText(12, job.notify_url)
                           .Run());
  *id = db.LastInsertRowId();
  // A note from the submit check (e.g. an offload a CPU device runs as none) joins the event.
  return InsertEvent(db, *id, std::nullopt, JobState::kQueued,
                     job.reason.empty() ? "submitted" : "submitted; " + job.reason, now_ms);
}

std::string JobNotFound(int64_t id) {
  return "job " + std::to_string(id) + " not found";
}

}  // namespace

JobStore::JobStore(std::string path, const Clock* clock, std::unique_ptr<Writer> writer,
                   std::unique_ptr<ReaderPool> readers)
    : path_(std::move(path)), clock_(clock), writer_(std::move(writer)), readers_(std::move(readers)) {}

JobStore::~JobStore() = default;

Result<std::unique_ptr<JobStore>> JobStore::Open(const std::string& path, const Clock* clock,
                                                   Durability durability) {
  if (clock == nullptr) return InvalidArgument("JobStore::Open needs a clock");
  FUJI_ASSIGN_OR_RETURN(bool existing, CheckDatabasePath(path));
  if (existing) {
    FUJI_ASSIGN_OR_RETURN(std::unique_ptr<Connection> reader, Connection::Open(path, true));
    FUJI_RETURN_IF_ERROR(CheckDatabase(*reader, path));
  } else if (::access(path.c_str(), F_OK) != 0) {
    // SQLite would create it 0644 under the usual umask; jobs' specs and tokens' hashes are
    // nobody else's business. An empty file is a new database to SQLite.
    FUJI_ASSIGN_OR_RETURN(int fd, CreateExclusiveFile(path, 0600));
    ::close(fd);
  }
  FUJI_ASSIGN_OR_RETURN(std::unique_ptr<Connection> db, Connection::Open(path, false));
  FUJI_RETURN_IF_ERROR(ConfigureWriter(*db, path, durability));
  FUJI_RETURN_IF_ERROR(Migrate(*db, *clock).WithContext(path));
  auto readers = std::make_unique<ReaderPool>(path, kMaxIdleReaders);
  auto writer = std::make_unique<Writer>(std::move(db));
  return std::unique_ptr<JobStore>(new JobStore(path, clock, std::move(writer), std::move(readers)));
}

Result<int64_t> JobStore::Submit(const JobRecord& job) {
  FUJI_RETURN_IF_ERROR(ValidateNewJob(job));
  int64_t id = 0;
  FUJI_RETURN_IF_ERROR(
      writer_->Run([&](Connection& db) { return InsertJob(db, job, clock_->NowMs(), &id); }));
  return id;
}

void JobStore::SubmitAsync(JobRecord job, std::function<void(Result<int64_t>)> done) {
  if (Status status = ValidateNewJob(job); !status.ok()) {
    done(status);
    return;
  }
  // The id travels from the operation to its completion; both run on the writer thread.
  auto id = std::make_shared<int64_t>(0);
  writer_->Enqueue([this, job = std::move(job),
                    id](Connection& db) { return InsertJob(db, job, clock_->NowMs(), id.get()); },
                   [id, done = std::move(done)](const Status& status) {
                     if (status.ok()) {
                       done(*id);
                     } else {
                       done(status);
                     }
                   });
}

Result<JobRecord> JobStore::Get(int64_t id) {
  FUJI_ASSIGN_OR_RETURN(ReaderPool::Lease db, readers_->Acquire());
  FUJI_ASSIGN_OR_RETURN(Statement select, db->Prepare(std::string("SELECT ") + kJobColumns +
                                                      " FROM jobs WHERE id = ?"));
  FUJI_ASSIGN_OR_RETURN(bool found, select.BindInt(1, id).Step());
  if (!found) return NotFound(JobNotFound(id));
  FUJI_ASSIGN_OR_RETURN(JobRecord job, ReadJob(select));
  FUJI_ASSIGN_OR_RETURN(job.gang, ReadGang(*db, id));
  return job;
}

Result<JobPage> JobStore::List(const ListFilter& filter) {
  if (filter.limit < 0) return InvalidArgument("limit must not be negative");
  if (filter.page_token < 0) return InvalidArgument("bad page token");
  if (!filter.state.empty()) FUJI_RETURN_IF_ERROR(ParseJobState(filter.state).status());
  if (!filter.kind.empty()) FUJI_RETURN_IF_ERROR(ParseJobKind(filter.kind).status());
  int limit = filter.limit == 0 ? kDefaultPageSize : std::min(filter.limit, kMaxPageSize);

  FUJI_ASSIGN_OR_RETURN(ReaderPool::Lease db, readers_->Acquire());
  FUJI_ASSIGN_OR_RETURN(Statement select,
                        db->Prepare(ListJobsSql(!filter.state.empty(), !filter.kind.empty(),
                                                    filter.owner.has_value())));
  select.BindInt(select.Param(":before"),
                 filter.page_token == 0 ? std::numeric_limits<int64_t>::max() : filter.page_token);
  if (!filter.state.empty()) select.BindText(select.Param(":state"), filter.state);
  if (!filter.kind.empty()) select.BindText(select.Param(":kind"), filter.kind);
  if (filter.owner.has_value()) select.BindText(select.Param(":owner"), *filter.owner);
  // One row more than asked tells whether another page follows.
  select.BindInt(select.Param(":limit"), limit + 1);
  FUJI_ASSIGN_OR_RETURN(std::vector<JobRecord> jobs, CollectRows<JobRecord>(select, ReadJob));
  JobPage page;
  if (jobs.size() > static_cast<size_t>(limit)) {
    jobs.resize(limit);
    page.next_page_token = jobs.back().id;
  }
  page.jobs = std::move(jobs);
  return page;
}

Result<std::vector<JobRecord>> JobStore::QueuedJobs(int limit) {
  if (limit < 0) return InvalidArgument("limit must not be negative");
  FUJI_ASSIGN_OR_RETURN(ReaderPool::Lease db, readers_->Acquire());
  // "state = 'QUEUED'" is spelled out so the planner can use the partial index jobs_queue.
  FUJI_ASSIGN_OR_RETURN(Statement select, db->Prepare(std::string("SELECT ") + kJobColumns +
                                                      " FROM jobs WHERE state = 'QUEUED' "
                                                      "ORDER BY priority DESC, id ASC LIMIT ?"));
  select.BindInt(1, limit);
  return CollectRows<JobRecord>(select, ReadJob);
}

Status JobStore::SetPriority(int64_t id, int64_t priority) {
  if (priority < limits::kMinPriority || priority > limits::kMaxPriority) {
    return InvalidArgument("priority " + std::to_string(priority) + " is outside " +
                           std::to_string(limits::kMinPriority) + ".." + std::to_string(limits::kMaxPriority));
  }
  return writer_->Run([&](Connection& db) -> Status {
    FUJI_ASSIGN_OR_RETURN(Statement update,
                          db.Prepare("UPDATE jobs SET priority = ?, updated_at_ms = ? "
                                     "WHERE id = ? AND state = 'QUEUED'"));
    FUJI_RETURN_IF_ERROR(update.BindInt(1, priority).BindInt(2, clock_->NowMs()).BindInt(3, id).Run());
    if (db.Changes() > 0) return Status::Ok();
    FUJI_ASSIGN_OR_RETURN(Statement current, db.Prepare("SELECT state FROM jobs WHERE id = ?"));
    FUJI_ASSIGN_OR_RETURN(bool found, current.BindInt(1, id).Step());
    if (!found) return NotFound(JobNotFound(id));
    return FailedPrecondition("job " + std::to_string(id) + " is " + current.Text(0) +
                              ": only a QUEUED job's priority can change");
  });
}

Status JobStore::SetPlans(int64_t id, const std::string& plans) {
  FUJI_RETURN_IF_ERROR(ValidateJsonObject("job plans", plans, kMaxJsonBytes));
  return writer_->Run([&](Connection& db) -> Status {
    FUJI_ASSIGN_OR_RETURN(Statement update, db.Prepare("UPDATE jobs SET plans = ? WHERE id = ?"));
    FUJI_RETURN_IF_ERROR(update.BindText(1, plans).BindInt(2, id).Run());
    if (db.Changes() == 0) return NotFound(JobNotFound(id));
    return Status::Ok();
  });
}

Status JobStore::Transition(int64_t id, JobState from, JobState to, const std::string& reason) {
  if (to == JobState::kAssigned) {
    return InvalidArgument("jobs become ASSIGNED through Assign, which also records the lease");
  }
  if (!IsValidTransition(from, to)) {
    return FailedPrecondition(std::string("a job cannot go from ") + JobStateName(from) + " to " +
                              JobStateName(to));
  }
  bool releases = to != JobState::kRunning;  // leaving ASSIGNED/RUNNING ends the lease
  return writer_->Run([&](Connection& db) -> Status {
    int64_t now_ms = clock_->NowMs();
    FUJI_ASSIGN_OR_RETURN(
        Statement update,
        db.Prepare("UPDATE jobs SET state = :to, reason = :reason, updated_at_ms = :now, "
                   "attempts = attempts + :add_attempt, "
                   "started_at_ms = CASE WHEN :starts THEN :now ELSE started_at_ms END, "
                   "finished_at_ms = CASE WHEN :finishes THEN :now ELSE finished_at_ms END, "
                   "worker_id = CASE WHEN :releases THEN NULL ELSE worker_id END "
                   "WHERE id = :id AND state = :from"));
    FUJI_RETURN_IF_ERROR(update.BindText(update.Param(":to"), JobStateName(to))
                             .BindText(update.Param(":reason"), reason)
                             .BindInt(update.Param(":now"), now_ms)
                             .BindInt(update.Param(":add_attempt"), to == JobState::kRetrying)
                             .BindInt(update.Param(":starts"), to == JobState::kRunning)
                             .BindInt(update.Param(":finishes"), IsTerminal(to))
                             .BindInt(update.Param(":releases"), releases)
                             .BindInt(update.Param(":id"), id)
                             .BindText(update.Param(":from"), JobStateName(from))
                             .Run());
    if (db.Changes() == 0) {
      FUJI_ASSIGN_OR_RETURN(Statement current, db.Prepare("SELECT state FROM jobs WHERE id = ?"));
      FUJI_ASSIGN_OR_RETURN(bool found, current.BindInt(1, id).Step());
      if (!found) return NotFound(JobNotFound(id));
      return FailedPrecondition("job " + std::to_string(id) + " is " + current.Text(0) + ", not " +
                                JobStateName(from));
    }
    if (releases) {
      FUJI_ASSIGN_OR_RETURN(Statement release,
                            db.Prepare("UPDATE assignments SET released_at_ms = ? "
                                       "WHERE job_id = ? AND released_at_ms IS NULL"));
      FUJI_RETURN_IF_ERROR(release.BindInt(1, now_ms).BindInt(2, id).Run());
      FUJI_ASSIGN_OR_RETURN(Statement release_gang,
                            db.Prepare("UPDATE gang_members SET released_at_ms = ? "
                                       "WHERE job_id = ? AND released_at_ms IS NULL"));
      FUJI_RETURN_IF_ERROR(release_gang.BindInt(1, now_ms).BindInt(2, id).Run());
    }
    return InsertEvent(db, id, from, to, reason, now_ms);
  });
}

Result<std::vector<JobEvent>> JobStore::Events(int64_t job_id) {
  FUJI_ASSIGN_OR_RETURN(ReaderPool::Lease db, readers_->Acquire());
  FUJI_ASSIGN_OR_RETURN(Statement select,
                        db->Prepare("SELECT seq, at_ms, from_state, to_state, message "
                                    "FROM job_events WHERE job_id = ? ORDER BY seq"));
  select.BindInt(1, job_id);
  return CollectRows<JobEvent>(select, [job_id](const Statement& row) -> Result<JobEvent> {
    JobEvent event;
    event.job_id = job_id;
    event.seq = row.Int(0);
    event.at_ms = row.Int(1);
    if (!row.IsNull(2)) {
      FUJI_ASSIGN_OR_RETURN(event.from, ParseJobState(row.Text(2)));
    }
    FUJI_ASSIGN_OR_RETURN(event.to, ParseJobState(row.Text(3)));
    event.message = row.Text(4);
    return event;
  });
}

Status JobStore::RequestCancel(int64_t job_id) {
  return writer_->Run([&](Connection& db) -> Status {
    FUJI_ASSIGN_OR_RETURN(Statement update,
                          db.Prepare("UPDATE jobs SET cancel_requested_at_ms = COALESCE(cancel_requested_at_ms, ?) "
                                     "WHERE id = ? AND state NOT IN ('SUCCEEDED', 'FAILED', 'CANCELLED')"));
    FUJI_RETURN_IF_ERROR(update.BindInt(1, clock_->NowMs()).BindInt(2, job_id).Run());
    if (db.Changes() > 0) return Status::Ok();
    FUJI_ASSIGN_OR_RETURN(Statement exists, db.Prepare("SELECT state FROM jobs WHERE id = ?"));
    FUJI_ASSIGN_OR_RETURN(bool row, exists.BindInt(1, job_id).Step());
    if (!row) return NotFound("job " + std::to_string(job_id) + " not found");
    return FailedPrecondition("job " + std::to_string(job_id) + " is already " + exists.Text(0));
  });
}

std::string JobStore::StorageFault() const { return writer_->Fault(); }

}  // namespace fuji::store
