// JobStore: fujid's durable record of jobs, workers, leases and telemetry, on SQLite in WAL mode.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "daemon/store/clock.h"
#include "daemon/store/job_state.h"
#include "daemon/store/records.h"
#include "lib/common/limits.h"
#include "lib/common/status.h"

namespace fuji::store {

class ReaderPool;
class Writer;

// The daemon's job store. fujid is the database's only writer.
//
// Durability: every write returns (or calls back) only after its transaction COMMITted and the
// WAL holding it was fsynced (journal_mode=WAL, synchronous=FULL): a job the client was told about
// survives a crash of the process, of the kernel and a power cut. Group commit (below) shares one
// fsync among every write that arrived while the last one ran. Durability::kFsyncAtCheckpoint
// (synchronous=NORMAL: fsync only at checkpoints, so a power cut may lose the last commits) exists
// for benchmarks that measure what the fsync costs; fujid never uses it.
//
// Writes go through a group-commit Writer (one thread, one connection): concurrent writes share a
// transaction, each isolated by a savepoint, so one failing write never fails another. Reads use a
// pool of read-only connections and see every write that returned before they started.
//
// Thread-safe: every method may be called from any thread. Async callbacks run on the writer
// thread: they must be quick and must not call the blocking write methods (those return INTERNAL
// there rather than deadlock). Destroying the store finishes the writes already queued; it must
// not race with calls still in flight.
class JobStore {
 public:
  // Cap on spec and result JSON (RESOURCE_EXHAUSTED beyond).
  static constexpr size_t kMaxJsonBytes = size_t{16} << 20;
  static constexpr size_t kMaxLogLineBytes = limits::kMaxLogLineBytes;  // the agent cuts to it
  static constexpr int kMaxPageSize = 1000;
  static constexpr int kMaxLossPageSize = 10000;
  static constexpr int64_t kMaxLossStep = int64_t{1} << 40;
  // RecordLosses takes at most this many points in one call.
  static constexpr size_t kMaxLossesPerCall = 100000;

  // Opens or creates the database at path and applies pending migrations. A new database file
  // is made mode 0600 whatever the umask (SQLite gives its -wal and -shm files the same mode). Refuses, leaving the
  // file untouched: a file that is not SQLite or is corrupt (DATA_LOSS), a schema newer than this
  // binary or another program's database (FAILED_PRECONDITION). An unwritable file or directory
  // is FAILED_PRECONDITION. clock is not owned and must outlive the store.
  enum class Durability { kFsyncEachCommit, kFsyncAtCheckpoint };
  static Result<std::unique_ptr<JobStore>> Open(const std::string& path, const Clock* clock,
                                                Durability durability = Durability::kFsyncEachCommit);
  ~JobStore();
  JobStore(const JobStore&) = delete;
  JobStore& operator=(const JobStore&) = delete;

  // Why the database cannot be written now (disk full, read-only, I/O errors: every write fails
  // UNAVAILABLE meanwhile), as the latest write found; "" while writes commit.
  std::string StorageFault() const;

  // ---- Jobs ----

  // Inserts a QUEUED job and its submit event; returns the new id once committed. INVALID_ARGUMENT
  // for a spec that is not a JSON object, devices < 1, max_attempts < 1 or timeout_ms < 0.
  Result<int64_t> Submit(const JobRecord& job);
  // Submit for callback-style servers: done runs on the writer thread after the commit (or at
  // once, on the calling thread, for invalid input).
  void SubmitAsync(JobRecord job, std::function<void(Result<int64_t>)> done);

  // NOT_FOUND "job N not found".
  Result<JobRecord> Get(int64_t id);
  // A page of jobs, newest first, by keyset paging on id. INVALID_ARGUMENT for an unknown state
  // or kind, a negative limit or page token.
  Result<JobPage> List(const ListFilter& filter);
  // QUEUED jobs in dispatch order: priority descending, then id ascending.
  Result<std::vector<JobRecord>> QueuedJobs(int limit);

  // Sets a QUEUED job's priority (limits::kMinPriority..kMaxPriority, else INVALID_ARGUMENT),
  // durably, before it returns: QueuedJobs orders by it from then on, across restarts.
  // NOT_FOUND for an unknown job; FAILED_PRECONDITION unless the job is QUEUED.
  Status SetPriority(int64_t id, int64_t priority);

  // Compare-and-set of the job's state with its event row, in one transaction. FAILED_PRECONDITION
  // when the job is not in `from` or the lifecycle has no edge from -> to (see IsValidTransition);
  // NOT_FOUND for an unknown job. ASSIGNED is entered only through Assign. Effects: reason is
  // replaced; RUNNING sets started_at; RETRYING adds an attempt; terminal states set finished_at;
  // leaving ASSIGNED/RUNNING releases the live assignment (and gang parts) and clears worker_id.
  Status Transition(int64_t id, JobState from, JobState to, const std::string& reason);
  // Replaces the plans placement may choose from (a JSON object, as Submit takes them).
  // NOT_FOUND for an unknown job.
  Status SetPlans(int64_t id, const std::string& plans);
  // The job's state changes, oldest first.
  Result<std::vector<JobEvent>> Events(int64_t job_id);

  // ---- Workers and leases ----

  // Adds a worker or re-registers it (ONLINE, heartbeat now); its device list is replaced.
  // `samples` (the node's memory now: host_memory ones and per device) become the latest
  // readings of its host and devices; samples of devices it does not have are skipped.
  Status RegisterWorker(const WorkerRecord& worker, const std::vector<MemorySample>& samples = {});
  // Records a heartbeat now and marks the worker ONLINE, with the node's memory as
  // RegisterWorker takes it. NOT_FOUND for an unknown worker.
  Status Heartbeat(const std::string& worker_id, const std::vector<MemorySample>& samples = {});
  // Marks a worker LOST (its leases are left for ExpiredAssignments to report).
  Status MarkWorkerLost(const std::string& worker_id);
  // Workers by id, each with its devices.
  Result<std::vector<WorkerRecord>> ListWorkers();
  // Drains the worker (no new job is placed on it; the jobs it runs go on) or takes the drain
  // back, durably, before it returns. Returns when the worker was drained (a second drain keeps
  // the first time), nullopt once undrained. NOT_FOUND for a worker that never registered.
  // `requeue` (with drained): its fine-tunes are preempted (migration 12); the latest drain says.
  Result<std::optional<int64_t>> SetDrained(const std::string& worker_id, bool drained, bool requeue = false);
  // The workers drained with requeue, by id (one read of the small workers table per heartbeat).
  Result<std::set<std::string>> RequeueDrainedWorkers();

  // QUEUED -> ASSIGNED with a live assignment for the job's current attempt, in one transaction.
  // INVALID_ARGUMENT unless device_indices has one distinct index per device the job needs;
  // NOT_FOUND for an unknown job or worker; FAILED_PRECONDITION unless the job is QUEUED.
  // `plan` (a JSON object, or "") becomes the job's plan: the one this placement chose.
  Status Assign(int64_t job_id, const std::string& worker_id,
                const std::vector<int>& device_indices, int64_t lease_expires_ms,
                const std::string& plan = "");
  // Assign for a gang across agents (migration 10): the job's ranks on several workers, rank 0's
  // first, their first_ranks consecutive from 0 and their devices together the job's. The
  // assignments row is members[0]'s; every member gets a gang_members row, released with the
  // attempt. INVALID_ARGUMENT for fewer than 2 or more than kMaxGangMembers members, an agent
  // twice, ranks out of order, no advertise address or a port outside 0-65535; otherwise as Assign.
  static constexpr int kMaxGangMembers = 64;
  Status AssignGang(int64_t job_id, const std::vector<GangMemberRecord>& members, int64_t lease_expires_ms,
                    const std::string& plan = "");
  // Releases one member's part of the attempt (it ended there) while the others run on.
  Status ReleaseGangMember(int64_t job_id, int attempt, const std::string& worker_id);
  // Every live gang member, by job and first rank, for recovery after a restart.
  Result<std::vector<GangMemberRecord>> ActiveGangMembers();
  // Extends every live lease of the worker (its gang parts' too); returns how many assignments.
  Result<int> RenewLeases(const std::string& worker_id, int64_t lease_expires_ms);
  // Live assignments whose lease expired at or before now_ms.
  Result<std::vector<Assignment>> ExpiredAssignments(int64_t now_ms);
  // Every live assignment, for recovery after a daemon restart.
  Result<std::vector<Assignment>> ActiveAssignments();
  // The jobs each worker holds a part of now (ASSIGNED or RUNNING there, as its agent or as a
  // member of a gang), by worker id: ActiveAssignments and the gangs' other members.
  Result<std::map<std::string, std::vector<int64_t>>> LiveJobsByWorker();

  // ---- Credentials (job_store_credentials.cc) ----

  // Inserts a credential; returns its id. ALREADY_EXISTS for a user name that was ever given, or
  // a worker id that holds a live agent credential. INVALID_ARGUMENT for an unknown kind.
  Result<int64_t> InsertCredential(const CredentialRecord& credential);
  // Marks the credential revoked now (a second revoke keeps the first time). NOT_FOUND for an
  // unknown id.
  Status RevokeCredential(int64_t id);

  // Records that the job's cancel was asked for (the first time only), durably, so that it holds
  // across restarts. NOT_FOUND for no such job; FAILED_PRECONDITION when it has already ended.
  Status RequestCancel(int64_t job_id);
  // Every credential, by id.
  Result<std::vector<CredentialRecord>> Credentials();

  // ---- Telemetry ----

  // Each call is one transaction. Every referenced job must exist (FAILED_PRECONDITION).
  Status InsertSamples(const std::vector<MemorySample>& samples);
  Status RecordTimings(const std::vector<Timing>& timings);
  // Losses of job attempts (job_store_losses.cc), one group-committed transaction. A point
  // reported again for the same (job, attempt, split, step) replaces the earlier one; another
  // attempt's point for the same step is kept beside it (Losses reads the latest attempt's).
  // INVALID_ARGUMENT, writing nothing, for a point CheckLoss refuses or more than
  // kMaxLossesPerCall points; FAILED_PRECONDITION for an unknown job.
  Status RecordLosses(const std::vector<Loss>& losses);
  // Why a point cannot be stored ("" when it can): a loss that is not finite, a step outside
  // 0..kMaxLossStep, a split other than train and eval, tokens_per_s negative or not finite.
  static std::string CheckLoss(const Loss& loss);
  // Appends lines to one job's log, numbering them after its last line (LogLine::seq and job_id
  // are ignored). Lines longer than kMaxLogLineBytes are RESOURCE_EXHAUSTED.
  Status AppendLogs(int64_t job_id, const std::vector<LogLine>& lines);
  // Records the result of one attempt. Exactly once: a second result for the same job and
  // attempt is FAILED_PRECONDITION and leaves the first in place.
  Status SaveResult(int64_t job_id, int attempt, const std::string& result_json);

  Result<std::vector<MemorySample>> Samples(int64_t job_id);  // by time
  Result<std::vector<Timing>> Timings(int64_t job_id);        // by attempt, rank, start
  // A page of the job's losses (see LossQuery, LossPage). INVALID_ARGUMENT for an unknown split
  // or a limit outside 1..kMaxLossPageSize.
  Result<LossPage> Losses(int64_t job_id, const LossQuery& query = {});
  // The job's last train loss (the latest attempt's at the highest step); nullopt when none.
  Result<std::optional<Loss>> LastLoss(int64_t job_id);
  // Up to limit lines with seq > after_seq, in order.
  Result<std::vector<LogLine>> Logs(int64_t job_id, int64_t after_seq, int limit = 1000);
  Result<std::vector<JobResult>> Results(int64_t job_id);  // by attempt

  // ---- Usage and notifications (job_store_usage.cc) ----

  // What the jobs submitted since query.since_ms used, grouped by query.by (see UsageRow for what
  // is counted), the groups with most device time first, at most kMaxUsageRows of them. One
  // query over the jobs submitted since then (indexed by submit time, and by owner).
  static constexpr int kMaxUsageRows = 1000;
  Result<std::vector<UsageRow>> Usage(const UsageQuery& query);
  // Up to `limit` ended jobs whose notification is owed and due now (its next try not later),
  // the longest due first.
  Result<std::vector<PendingNotification>> DueNotifications(int limit);
  // Records one POST of the job's notification, durably: kDelivered and kGaveUp end it; kRetry
  // sets its next try at next_at_ms. NOT_FOUND when none is owed.
  Status RecordNotifyAttempt(int64_t job_id, NotifyOutcome outcome, int64_t next_at_ms = 0);
  // The job's notification as it stands. NOT_FOUND for an unknown job.
  Result<NotifyStatus> NotifyState(int64_t job_id);

  // ---- Retention and backup (job_store_retention.cc) ----

  // The telemetry fujid --retain deletes of ended jobs; the job rows themselves stay.
  enum class Telemetry { kLogs, kSamples, kLosses };
  static constexpr int kMaxPurgeRows = 10000;
  // Deletes up to max_rows rows of `table` that belong to jobs which ended (SUCCEEDED, FAILED or
  // CANCELLED) at a time in [ended_from_ms, ended_before_ms), in one write; returns how many. Fewer
  // than max_rows: none is left in that range. INVALID_ARGUMENT for max_rows outside
  // 1..kMaxPurgeRows. One call is one small write among the others, so callers go batch by batch.
  Result<int> PurgeEnded(Telemetry table, int64_t ended_from_ms, int64_t ended_before_ms, int max_rows);

  // Copies the database as of one moment (SQLite's online backup, from a read snapshot: writes
  // go on meanwhile) into the file at dest_path, which must exist and be empty (the caller
  // creates it, privately). The copy is a database JobStore::Open takes.
  Status BackupTo(const std::string& dest_path);
  // The database file this store opened.
  const std::string& path() const { return path_; }

 private:
  JobStore(std::string path, const Clock* clock, std::unique_ptr<Writer> writer,
           std::unique_ptr<ReaderPool> readers);

  const std::string path_;
  const Clock* clock_;
  std::unique_ptr<Writer> writer_;
  std::unique_ptr<ReaderPool> readers_;
};

}  // namespace fuji::store
