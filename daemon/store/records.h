// The job store's records: plain structs for rows of jobs, workers, assignments and telemetry.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "daemon/store/job_state.h"

namespace fuji::store {

// One agent's part of a gang across agents (migration 10): ranks first_rank ..
// first_rank + device_indices.size() - 1 of the attempt, on worker_id's devices.
struct GangMemberRecord {
  int64_t job_id = 0;
  int attempt = 0;
  std::string worker_id;
  std::string advertise_addr;  // where the other agents' ranks reach its ranks
  int first_rank = 0;
  std::vector<int> device_indices;
  int port = 0;  // rank 0's part: the port of the gang's rendezvous on its advertise_addr; else 0
  int64_t lease_expires_ms = 0;
  std::optional<int64_t> released_at_ms;
};

// A row of jobs. Submit reads kind, priority, spec, devices, max_attempts, timeout_ms and reason;
// the store sets the rest.
struct JobRecord {
  int64_t id = 0;
  JobKind kind = JobKind::kInfer;
  JobState state = JobState::kQueued;
  int64_t priority = 0;  // higher runs first
  std::string spec;      // a JSON object, at most JobStore::kMaxJsonBytes
  int devices = 1;       // ranks the job needs, one device each
  int attempts = 0;      // RETRYINGs so far: the current attempt's number, from 0
  int max_attempts = 1;
  int64_t timeout_ms = 0;  // 0: none
  std::string reason;      // why it failed or was cancelled, or why it still waits
  std::string worker_id;   // empty unless ASSIGNED or RUNNING
  int64_t submitted_at_ms = 0;
  std::optional<int64_t> started_at_ms;   // start of the latest attempt
  std::optional<int64_t> finished_at_ms;  // set in terminal states
  int64_t updated_at_ms = 0;
  bool shareable = false;  // may share devices with other shareable jobs
  std::string plans;       // JSON: the plans placement may choose from ("" when none recorded)
  std::string plan;        // JSON: the one the latest placement chose ("" before the first)
  std::string owner;       // the user who submitted it
  int64_t cancel_requested_at_ms = 0;  // when its cancel was asked for while an agent ran it; 0: never
  // Placements so far (Assign adds one): with `attempts`, the current holder's fencing token.
  int64_t lease_epoch = 0;
  // fuji submit --notify (migration 11): where fujid POSTs the job's final state; "" for none.
  std::string notify_url;
  // Get only: the parts of the latest placement when it was a gang across agents (rank 0's
  // first); empty when one agent held it.
  std::vector<GangMemberRecord> gang = {};
};

// Filters for JobStore::List. Strings because they come from users; List validates them.
struct ListFilter {
  std::string state;       // "" for any, else a JobStateName
  std::string kind;        // "" for any, else a JobKindName
  int limit = 100;         // 0 means 100; larger than 1000 is cut to 1000
  int64_t page_token = 0;  // 0 for the first page, else the previous page's next_page_token
  std::optional<std::string> owner;  // only this user's jobs; nullopt for everyone's
};

// Jobs newest first (id descending). Each carries a summary of its spec, {"device": ...} (or {}),
// and no plans: Get reads a job whole.
struct JobPage {
  std::vector<JobRecord> jobs;
  int64_t next_page_token = 0;  // 0 when this is the last page
};

// One row of job_events: a state change, written with the change itself.
struct JobEvent {
  int64_t job_id = 0;
  int64_t seq = 0;  // 1, 2, ... per job
  int64_t at_ms = 0;
  std::optional<JobState> from;  // empty for the submit event
  JobState to = JobState::kQueued;
  std::string message;
};

// The latest memory reading of a device or of a worker's host, from its agent's Register or
// Heartbeat.
struct MemoryReading {
  int64_t used_mib = 0;   // by everything
  int64_t total_mib = 0;
  int64_t fuji_mib = 0;   // of used_mib, by the agent's ranks
  int64_t at_ms = 0;
};

struct DeviceRecord {
  int index = 0;
  std::string name;  // e.g. "NVIDIA H100 80GB HBM3"
  int64_t total_mib = 0;
  std::string kind;  // "cuda" or "cpu"
  std::optional<MemoryReading> reading = std::nullopt;  // read back by ListWorkers; empty before the first
};

// One credential (migration 6): a user's token, an agent's credential or a join token. Only a
// salted hash of its secret is kept.
struct CredentialRecord {
  int64_t id = 0;             // the number in the token (lib/security/token.h)
  std::string kind;           // "user" | "agent" | "join"
  std::string name;           // user name, worker id; "" for join tokens
  bool admin = false;         // users only
  std::string salt, hash;     // hex
  int64_t created_at_ms = 0;
  std::optional<int64_t> expires_at_ms;  // join tokens
  std::optional<int64_t> revoked_at_ms;
};

struct WorkerRecord {
  std::string id;
  std::string host;
  int64_t registered_at_ms = 0;
  int64_t last_heartbeat_ms = 0;
  std::string state;  // "ONLINE" or "LOST"
  std::vector<DeviceRecord> devices;
  std::optional<MemoryReading> host_memory = std::nullopt;  // read back by ListWorkers; empty before the first
  // When an admin drained it (no new job is placed on it); empty while it takes work. Kept by
  // RegisterWorker and Heartbeat; changed by SetDrained only.
  std::optional<int64_t> drained_at_ms = std::nullopt;
  // Drained with requeue (migration 12): its fine-tunes are preempted. False while not drained.
  bool drain_requeue = false;
  // Gangs across agents (migration 10): where other agents' ranks reach its ranks ("" = it takes
  // no part) and the ports a gang's rendezvous may use on it (0 0: none). Set by RegisterWorker.
  std::string advertise_addr = {};
  int gang_port_lo = 0;
  int gang_port_hi = 0;
};

// A job attempt placed on a worker's devices; live while released_at_ms is empty.
struct Assignment {
  int64_t job_id = 0;
  int attempt = 0;
  std::string worker_id;
  std::vector<int> device_indices;
  int64_t assigned_at_ms = 0;
  int64_t lease_expires_ms = 0;
  std::optional<int64_t> released_at_ms;
};

struct Timing {
  int64_t job_id = 0;
  int attempt = 0;
  int rank = 0;
  std::string phase;  // e.g. "load", "generate"
  int64_t start_ms = 0;
  int64_t end_ms = 0;
  int64_t duration_ms() const { return end_ms - start_ms; }
};

// One nvidia-smi style reading of a device (or of the host's memory).
struct MemorySample {
  std::optional<int64_t> job_id;  // empty for an idle device
  std::string worker_id;
  int device_index = 0;  // -1 for host memory
  std::string device_name;
  int64_t used_mib = 0;
  int64_t total_mib = 0;
  int utilization_pct = 0;
  int64_t process_mib = 0;  // held by the job's own processes
  int64_t at_ms = 0;
  bool host_memory = false;
};

// One loss of a fine-tuning job at one step of one attempt.
struct Loss {
  int64_t job_id = 0;
  int attempt = 0;
  int64_t step = 0;             // 0 .. JobStore::kMaxLossStep
  std::string split = "train";  // "train" or "eval"
  double loss = 0;              // finite
  double tokens_per_s = 0;      // finite, >= 0; 0 when unknown
  int64_t at_ms = 0;
};

// Which losses JobStore::Losses reads.
struct LossQuery {
  std::string split;                // "" for both, else "train" or "eval"
  std::optional<int64_t> after_step;  // only steps above this
  int limit = 1000;                 // points per page, 1 .. JobStore::kMaxLossPageSize
};

// Points by step, then split; the latest attempt's point of each (split, step).
struct LossPage {
  std::vector<Loss> losses;
  bool more = false;  // points after the last step of this page
};

struct LogLine {
  int64_t job_id = 0;
  int64_t seq = 0;  // assigned by AppendLogs
  int64_t at_ms = 0;
  std::string stream;  // e.g. "rank0/stderr"
  std::string line;
};

struct JobResult {
  int64_t job_id = 0;
  int attempt = 0;
  std::string result;  // JSON
  int64_t saved_at_ms = 0;
};

// What JobStore::Usage adds up (fuji usage).
enum class UsageBy { kUser, kModel, kKind };
struct UsageQuery {
  int64_t since_ms = 0;              // jobs submitted at or after this
  UsageBy by = UsageBy::kUser;
  std::optional<std::string> owner;  // only this user's jobs; nullopt for everyone's
};

// One group of JobStore::Usage. device_ms: over every attempt of the group's jobs that was placed,
// (its release, or now while it runs) - (its placement) times the job's devices; placement to
// release covers loading, running and the end of the attempt. tokens: over every attempt's stored
// result, an inference's prompt plus generated tokens, a fine-tune's tokens trained (the result's
// "tokens"); attempts that left no result count none.
struct UsageRow {
  std::string key;  // the owner, the spec's model ("" when none), or the kind
  int64_t jobs = 0;
  int64_t attempts = 0;  // attempts placed on devices
  int64_t device_ms = 0;
  int64_t tokens = 0;
};

// A notification owed (fuji submit --notify): the ended job and its delivery so far.
struct PendingNotification {
  JobRecord job;        // as Get reads it, but without the gang
  int attempts = 0;     // POSTs tried so far
};

// How one POST of a notification went: delivered, to be tried again, or given up.
enum class NotifyOutcome { kRetry = 0, kDelivered = 1, kGaveUp = 2 };
// A job's notification as it stands (tests and diagnostics).
struct NotifyStatus {
  int attempts = 0;
  int64_t done_at_ms = 0;  // 0 while owed
  std::string outcome;     // "delivered", "gave_up", "" while owed
};

}  // namespace fuji::store
