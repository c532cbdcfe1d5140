// Assignment leases and the retry decision for jobs whose agent was lost. An agent holds every job
// it runs on a lease that its heartbeats renew; when the agent goes silent the leases expire and
// the daemon requeues those jobs, or fails them once their retry budget is spent.
#pragma once

#include <cstdint>
#include <map>
#include <utility>
#include <string>
#include <vector>

namespace fuji::sched {

struct ExpiredLease {
  int64_t job_id = 0;
  std::string worker_id;
  int64_t silent_ms = 0;  // since the lease was granted or last renewed

  // "agent node-a lost (no heartbeat for 15 s)"
  std::string Reason() const;
};

// Not thread-safe: the daemon's event loop owns it. Time is passed in, so tests use fake time.
class LeaseTable {
 public:
  // A new assignment (or a reassignment): `job_id` is held by `worker_id` (alone) until
  // now_ms + ttl_ms.
  void Grant(int64_t job_id, const std::string& worker_id, int64_t now_ms, int64_t ttl_ms);
  // One more holder of `job_id` (a gang across agents: each member's agent holds a lease of its
  // own), or a fresh lease for a holder it has; the job's other holders keep theirs.
  void Hold(int64_t job_id, const std::string& worker_id, int64_t now_ms, int64_t ttl_ms);
  // A heartbeat: every lease of `worker_id` now expires at now_ms + ttl_ms. Returns how many.
  int Renew(const std::string& worker_id, int64_t now_ms, int64_t ttl_ms);
  // The job ended, was cancelled or was requeued: every holder's lease goes. Unknown ids are ignored.
  void Release(int64_t job_id);
  // One holder's lease of the job goes (its part ended); the others stay.
  void Drop(int64_t job_id, const std::string& worker_id) { leases_.erase({job_id, worker_id}); }
  // Leases expired at now_ms, by job id (and holder). They stay in the table until released, so the daemon
  // drops each one only after the requeue or failure it decided is committed.
  std::vector<ExpiredLease> Expired(int64_t now_ms) const;
  size_t size() const { return leases_.size(); }

 private:
  struct Lease {
    int64_t renewed_ms;
    int64_t expires_ms;
  };
  // Leases are few (one per running job and holder) and a heartbeat renews all of an agent's: a
  // scan is simpler than a second index and costs nothing at this size. By (job, holder).
  std::map<std::pair<int64_t, std::string>, Lease> leases_;
};

struct RetryDecision {
  bool requeue = false;
  // "agent node-a lost (no heartbeat for 15 s); requeued for attempt 2 of 3", or
  // "agent node-a lost (no heartbeat for 15 s); retries exhausted (3 of 3)"
  std::string reason;
};

// What to do with a job whose run just failed because of `cause` (e.g. ExpiredLease::Reason()).
// `attempts` counts the runs started so far, this one included; max_attempts is the job's budget.
RetryDecision DecideRetry(const std::string& cause, int attempts, int max_attempts);

}  // namespace fuji::sched
