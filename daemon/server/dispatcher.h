// Dispatcher: the daemon's live state around the job store: the job lifecycle. It keeps the
// in-memory queue, runs scheduling passes, keeps the leases, fails over the jobs of lost agents,
// registers agents and takes their heartbeats, and carries out what users ask (cancel). It
// composes the two parts with state of their own: the long-poll hand-out of placements
// (PollHandout) and the ingestion of agents' reports and completions (ReportIngest), whose
// lifecycle it is. What cannot be written to the store during a pass or a lease check goes to
// fujid's log (lib/common/log.h).
#pragma once

#include <cstdint>
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
#include "daemon/server/poll_handout.h"
#include "daemon/server/report_ingest.h"
#include "daemon/store/clock.h"
#include "daemon/store/job_store.h"
#include "fuji/v1/worker.pb.h"
#include "lib/common/status.h"

namespace fuji::daemon {

struct DispatcherOptions {
  int64_t lease_ttl_ms = 10000;
  int64_t max_poll_wait_ms = 30000;  // PollAssignments holds a call at most this long
};

// Thread-safe: the services call it from gRPC threads, the event loop from its own thread.
//  - mu_ guards the lifecycle's in-memory state: leases, cancel requests, the queue, waiting
//    reasons, what was placed. PollHandout and ReportIngest each guard their own state with their
//    own mutex. These three are leaves: none is held while another is taken, nor while the store,
//    the hub, a poll's callback or the pass requester is called.
//  - pass_mu_ runs passes one at a time. It is held through a whole pass (store calls and the
//    hand-out's callbacks included) and taken only by RunPass, never under another mutex.
// The store, clock and hub are not owned and must outlive it. In-memory state (who waits for
// assignments, which jobs have a cancel request, why queued jobs wait, progress) is lost on
// restart; the store holds everything else.
class Dispatcher : private ReportIngest::Lifecycle {
 public:
  using PollDone = PollHandout::PollDone;
  // Called (from any thread) whenever a scheduling pass is worth running soon.
  using PassRequester = std::function<void()>;
  // What passes need to know of each placed job until its attempt ends: the memory its plan was
  // promised, whether it shares its devices, and when it is expected to end.
  struct Placed {
    std::optional<sched::MemoryOption> promise;
    sched::RunningJob running;
    std::string warm_key;  // an inference job's model key (WarmKeyOf)
    int64_t placed_lease_ms = 0;  // lease_clock's time of the placement (or of fujid's recovery)
  };

  // `clock` stamps what the store keeps and people read (wall time); `lease_clock` times leases,
  // hand-outs and agents' silence (a steady clock: a step of the time of day neither requeues
  // running jobs nor hides dead agents). Tests may pass the same fake clock for both.
  Dispatcher(store::JobStore* store, const store::Clock* clock, const store::Clock* lease_clock, EventHub* hub,
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
  void ExpirePolls() { handout_.ExpirePolls(); }
  // Every waiting poll gets an empty answer now, and later polls are answered at once.
  void Drain() { handout_.Drain(); }

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
  bool CancelRequested(int64_t job_id) const override;

  // ---- WorkerService ----
  // Registers the worker; returns the ids in `running` it must stop.
  Result<std::vector<int64_t>> Register(const v1::RegisterRequest& request);
  // Renews leases. NOT_FOUND for a worker the store does not know.
  Result<v1::HeartbeatResponse> Heartbeat(const v1::HeartbeatRequest& request);
  // See PollHandout::Poll: answered when the next pass places something on the worker.
  void Poll(const std::string& worker_id, int64_t wait_ms, PollDone done) {
    handout_.Poll(worker_id, wait_ms, std::move(done));
  }
  // See ReportIngest.
  Result<bool> Report(const v1::JobReport& report) { return reports_.Report(report); }
  v1::Progress LatestProgress(int64_t job_id) const { return reports_.LatestProgress(job_id); }
  std::vector<v1::TokenDelta> Tokens(int64_t job_id) const { return reports_.Tokens(job_id); }
  // The warm models each agent said it holds in its latest Register or Heartbeat (in memory: an
  // agent says it again within a heartbeat of fujid's restart).
  std::vector<v1::WarmModel> Warm(const std::string& worker_id) const;
  Status Complete(const v1::CompleteRequest& request) { return reports_.Complete(request); }

 private:
  // ---- The lifecycle, as ReportIngest sees it ----
  // Ends the current attempt of `job` after it failed for `cause`: CANCELLED when a cancel was
  // asked, else RETRYING -> QUEUED while retries are left (when retryable), else FAILED.
  void EndAttempt(const store::JobRecord& job, const std::string& cause, bool retryable) override;
  // A preempted attempt (ReportIngest::Lifecycle): QUEUED again with its attempt count as it was.
  void Preempted(const store::JobRecord& job, const std::string& cause) override;
  // A gang across agents about to go back to the queue waits for its agents (gang_holds_).
  void HoldGang(const store::JobRecord& job);
  // A job its agent no longer runs: an ASSIGNED one goes back to the queue (no attempt used),
  // a RUNNING one ends its attempt as EndAttempt does.
  void Abandoned(const store::JobRecord& job, const std::string& cause) override;
  // Moves the job and tells watchers; false if the job had moved meanwhile. A failure other
  // than that is logged.
  bool Move(int64_t job_id, store::JobState from, store::JobState to,
            const std::string& reason) override;
  // Move, saying why it did not: FAILED_PRECONDITION when the job had moved meanwhile,
  // UNAVAILABLE when the store cannot be written now (logged; the caller tries again later).
  Status TryMove(int64_t job_id, store::JobState from, store::JobState to, const std::string& reason);
  // Forget, then a pass.
  void Ended(int64_t job_id) override;

  void PublishState(int64_t job_id);
  // fuji_job_transitions_total, and the queue wait or run time of a move into or out of RUNNING.
  void CountMove(int64_t job_id, store::JobState from, store::JobState to);
  void CountAssigned();  // a placement: QUEUED -> ASSIGNED
  // Marks the agent LOST in the store; false (and logged) when that fails.
  bool MarkLost(const std::string& worker_id);
  // Whether the job was placed (or recovered) less than a lease ago by lease_clock: its hand-out
  // may still be on its way to the agent.
  bool PlacedWithinLease(int64_t job_id, int64_t now_lease_ms) const;
  // An agent was heard from (Register, Heartbeat) at now_lease_ms.
  void Heard(const std::string& worker_id, int64_t now_lease_ms);
  void Forget(int64_t job_id);  // lease, cancel request, placement, pending hand-outs, progress
  void SetWarm(const std::string& worker_id, const google::protobuf::RepeatedPtrField<v1::WarmModel>& warm);
  // The agents with their free memory (sched::AgentsWithFreeMemory): the store's latest
  // readings, and what the plans of the jobs in `live` were promised (a gang's members in
  // `gangs` hold their devices and their share of its host memory).
  Result<std::vector<sched::AgentView>> Agents(const std::vector<store::Assignment>& live,
                                               const std::vector<store::GangMemberRecord>& gangs);
  // Policy 8's placement: AssignGang, then an Assignment for every member, leases for each.
  // False when it could not be committed (the job stays queued, or left the queue).
  bool PlaceGang(const store::JobRecord& job, const sched::Placement& placement, const std::string& plan,
                 int64_t now_ms, std::set<std::string>* workers);
  // A port of the agent's gang range that no other live gang of it uses, varied by the job and its
  // placement (a retry does not take the port of the last attempt); 0 when none is free.
  int GangPort(const std::string& worker_id, int64_t job_id, int64_t lease_epoch) const;
  // INVALID_ARGUMENT for an advertise address or gang port range a Register cannot carry.
  static Status CheckGangAddress(const v1::RegisterRequest& request);
  // The live assignments, and `worker_id`'s gang parts that are not rank 0's as assignments of it.
  Result<std::vector<store::Assignment>> LiveParts(const std::string& worker_id);
  // The live gang parts `worker_id` holds that are not rank 0's (those are its assignments rows).
  std::vector<store::GangMemberRecord> MemberParts(const std::vector<store::GangMemberRecord>& gangs,
                                                   const std::string& worker_id) const;
  // The in-memory queue follows every change the daemon makes to the store (it is the store's
  // only writer): a pass reads no job rows, so its cost does not grow with SQLite reads.
  void AddQueued(const store::JobRecord& job);
  void RemoveQueued(int64_t job_id);

  store::JobStore* store_;
  const store::Clock* clock_;
  const store::Clock* lease_clock_;
  EventHub* hub_;
  const DispatcherOptions options_;
  PassRequester pass_requester_;

  PollHandout handout_;   // guarded by its own mutex
  ReportIngest reports_;  // guarded by its own mutex

  mutable std::mutex mu_;  // guards what follows
  sched::LeaseTable leases_;
  std::set<int64_t> cancel_requested_;
  std::map<int64_t, std::string> waiting_reasons_;
  std::map<int64_t, sched::JobRequest> queued_;  // QUEUED jobs by id
  bool no_agent_connected_ = false;              // as the latest pass found
  std::map<int64_t, Placed> placed_;
  // When each agent was last heard from, by lease_clock; agents not heard from since fujid started
  // count from their first lease check.
  std::map<std::string, int64_t> heard_lease_ms_;
  std::map<std::string, std::vector<v1::WarmModel>> warm_;  // by agent, as it last said
  // A gang across agents whose attempt just ended and went back to the queue waits until every
  // agent of that attempt has been heard from since (a Register or Heartbeat), is lost, or two
  // leases have passed: an agent killed a moment ago still looks connected until its lease
  // expires, and placing the retry on it would spend an attempt on a gang that cannot form.
  struct GangHold {
    int64_t ended_lease_ms = 0;
    std::set<std::string> unheard;  // the members not heard from since
  };
  std::map<int64_t, GangHold> gang_holds_;  // by job id
  // Each agent's part in gangs across agents, as its latest Register said (the store keeps it:
  // Agents reads it back, so a restarted fujid knows it before the agent registers again).
  struct GangAddress {
    std::string addr;  // RegisterRequest.advertise_addr; "" = no gangs
    int port_lo = 0, port_hi = 0;
  };
  std::map<std::string, GangAddress> gang_addrs_;
  // The rendezvous port of each live gang, with its rank 0's agent, by job.
  std::map<int64_t, std::pair<std::string, int>> gang_ports_;

  std::mutex pass_mu_;  // one pass at a time
};

}  // namespace fuji::daemon
