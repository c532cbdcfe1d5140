// Dispatcher: the daemon's live state around the job store. It runs scheduling passes, hands
// placements to agents' long polls, keeps the leases, fails over the jobs of lost agents, and
// carries out what agents report (start, completion) and what users ask (cancel).
#pragma once

#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "daemon/scheduler/lease_table.h"
#include "daemon/scheduler/scheduler.h"
#include "daemon/server/event_hub.h"
#include "daemon/store/clock.h"
#include "daemon/store/job_store.h"
#include "fuji/v1/worker.pb.h"
#include "worker/common/status.h"

namespace fuji::daemon {

struct DispatcherOptions {
  int64_t lease_ttl_ms = 10000;
  int64_t max_poll_wait_ms = 30000;  // PollAssignments holds a call at most this long
};

// Thread-safe: the services call it from gRPC threads, the event loop from its own thread. The
// store, clock and hub are not owned and must outlive it. In-memory state (who waits for
// assignments, which jobs have a cancel request, why queued jobs wait) is lost on restart; the
// store holds everything else.
class Dispatcher {
 public:
  using PollDone = std::function<void(std::vector<v1::Assignment>)>;
  // Called (from any thread) whenever a scheduling pass is worth running soon.
  using PassRequester = std::function<void()>;
  // What passes need to know of each placed job until its attempt ends: the memory its plan was
  // promised, whether it shares its devices, and when it is expected to end.
  struct Placed {
    std::optional<sched::MemoryOption> promise;
    sched::RunningJob running;
  };

  Dispatcher(store::JobStore* store, const store::Clock* clock, EventHub* hub,
             DispatcherOptions options);

  // After a restart: every live assignment gets a fresh lease, longer than lease_ttl_ms by the
  // agents' reconnect time (v1::RecoveredLeaseMs), so agents that reconnect keep their jobs.
  Status Recover();
  void SetPassRequester(PassRequester requester) { pass_requester_ = std::move(requester); }
  void RequestPass();

  // A job the store has just committed as QUEUED (a submit): it joins the in-memory queue.
  void Enqueued(const store::JobRecord& job);

  // ---- The event loop (one thread) ----
  // One scheduling pass over the queue; placements are committed and handed out.
  void RunPass();
  // Jobs of agents whose leases expired: requeued or failed (cancelled if a cancel was asked).
  void CheckLeases();
  // Long polls that waited long enough get an empty answer.
  void ExpirePolls();
  // Every waiting poll gets an empty answer now, and later polls are answered at once.
  void Drain();

  // ---- JobService ----
  // OK when the job could ever run on the registered agents (or none ever registered).
  Status CheckSatisfiable(const sched::JobRequest& job);
  // The agents as the next pass sees them: devices, holders and free memory.
  Result<std::vector<sched::AgentView>> CurrentAgents();
  // Why a QUEUED job waits, from the latest pass ("" if unknown).
  // Past the first waiting jobs of a pass, count_ahead counts the queue ahead of the job (a scan
  // of the queue: for one job, not for a listing).
  std::string WaitingReason(int64_t job_id, bool count_ahead) const;
  // QUEUED/RETRYING: cancelled now. ASSIGNED/RUNNING: cancel requested (the agent is told).
  // Terminal: FAILED_PRECONDITION. Returns the job as it is now.
  Result<store::JobRecord> Cancel(int64_t job_id);
  bool CancelRequested(int64_t job_id) const;

  // ---- WorkerService ----
  // Registers the worker; returns the ids in `running` it must stop.
  Result<std::vector<int64_t>> Register(const v1::RegisterRequest& request);
  // Renews leases. NOT_FOUND for a worker the store does not know.
  Result<v1::HeartbeatResponse> Heartbeat(const v1::HeartbeatRequest& request);
  // Calls done exactly once: at once if assignments are pending, else when the next pass places
  // something on the worker or after wait_ms (capped), with an empty list.
  void Poll(const std::string& worker_id, int64_t wait_ms, PollDone done);
  // Stores what the report carries and tells watchers; returns whether the job should be
  // cancelled. Loss points the store cannot take (not finite, negative step, unknown split) are
  // dropped and the drop is written to the job's log; tokens_per_s that is negative or not finite
  // becomes 0; of more than JobStore::kMaxLossesPerCall points only the last are kept.
  Result<bool> Report(const v1::JobReport& report);
  // The latest progress of the job's current attempt (phase empty when none was reported since
  // the daemon started). A report with train losses but no "train" progress counts as one.
  v1::Progress LatestProgress(int64_t job_id) const;
  Status Complete(const v1::CompleteRequest& request);

 private:
  struct Waiter {
    int64_t deadline_ms;
    PollDone done;
  };

  // Ends the current attempt of `job` after it failed for `cause`: CANCELLED when a cancel was
  // asked, else RETRYING -> QUEUED while retries are left (when retryable), else FAILED.
  void EndAttempt(const store::JobRecord& job, const std::string& cause, bool retryable);
  // A job its agent no longer runs: an ASSIGNED one goes back to the queue (no attempt used),
  // a RUNNING one ends its attempt as EndAttempt does.
  void Abandoned(const store::JobRecord& job, const std::string& cause);
  bool IsPending(const std::string& worker_id, int64_t job_id) const;
  // Moves the job and tells watchers; false if the job had moved meanwhile.
  bool Move(int64_t job_id, store::JobState from, store::JobState to, const std::string& reason);
  void PublishState(int64_t job_id);
  void Forget(int64_t job_id);  // lease, cancel request, pending hand-outs, progress
  // The report's losses as the store takes them; the reasons for points dropped go to `dropped`.
  std::vector<store::Loss> AcceptLosses(const v1::JobReport& report, std::string* dropped) const;
  // The report's progress, with a "train" progress made from its latest train loss when it has
  // none; each is stamped with now when it carries no time, and the latest is kept.
  std::vector<v1::Progress> TakeProgress(const v1::JobReport& report, const store::JobRecord& job,
                                         const std::vector<store::Loss>& losses);
  // Hands assignments to the worker's waiting poll, if any (call with mu_ not held).
  void Deliver(const std::string& worker_id);
  // The agents with their free memory (sched::AgentsWithFreeMemory): the store's latest
  // readings, and what the plans of the jobs in `live` were promised.
  Result<std::vector<sched::AgentView>> Agents(const std::vector<store::Assignment>& live);
  // The in-memory queue follows every change the daemon makes to the store (it is the store's
  // only writer): a pass reads no job rows, so its cost does not grow with SQLite reads.
  void AddQueued(const store::JobRecord& job);
  void RemoveQueued(int64_t job_id);

  store::JobStore* store_;
  const store::Clock* clock_;
  EventHub* hub_;
  const DispatcherOptions options_;
  PassRequester pass_requester_;

  mutable std::mutex mu_;
  sched::LeaseTable leases_;
  std::set<int64_t> cancel_requested_;
  std::map<int64_t, std::string> waiting_reasons_;
  std::map<int64_t, sched::JobRequest> queued_;  // QUEUED jobs by id
  bool no_agent_connected_ = false;               // as the latest pass found
  std::map<std::string, std::deque<v1::Assignment>> pending_;  // placed, not yet polled
  std::map<std::string, Waiter> waiters_;                       // one poll per worker
  std::map<int64_t, v1::Progress> progress_;  // latest of each running attempt
  std::map<int64_t, Placed> placed_;
  bool draining_ = false;
  std::mutex pass_mu_;  // one pass at a time
};

}  // namespace fuji::daemon
