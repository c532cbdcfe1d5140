// ReportIngest: what agents send about the attempts they run. A Report (started, log lines,
// timings, memory samples, losses, progress) is written to the store and passed on to watchers; a
// Complete (the result, or how the attempt failed) is saved and decides how the attempt ends. It
// owns the latest progress of each running attempt. The job's lifecycle (state moves, retries,
// leases, cancel requests) is not its own: it asks the Lifecycle, which the Dispatcher is.
#pragma once

#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "daemon/server/event_hub.h"
#include "daemon/store/clock.h"
#include "daemon/store/job_store.h"
#include "fuji/v1/worker.pb.h"
#include "lib/common/status.h"

namespace fuji::daemon {

// Whether `worker_id` holds a part of `job`'s latest placement: it is the job's agent (rank 0's,
// for a gang across agents) or a member of its gang.
bool HoldsPart(const store::JobRecord& job, const std::string& worker_id);
// Whether `job` is held by `worker_id`'s run of `attempt` placed as `lease_epoch` (ASSIGNED or
// RUNNING there, on the agent or as a member of its gang: the current fencing token): what an
// agent says of any other run is stale. Every member of a gang reports; the first "started"
// makes the job RUNNING. A member's success ends its part only; rank 0's agent's ends the job
// with its result; any member's failure ends the attempt for all.
bool HoldsAttempt(const store::JobRecord& job, const std::string& worker_id, int attempt, int64_t lease_epoch);

// The agent among `requeue_drained` (drained with requeue) that holds a part of `job`'s latest
// placement, when `job` is a fine-tune: rank 0's agent first, then the gang's members; "" when
// none does (an inference job is never preempted: it runs to its end).
std::string RequeueDrainedAgent(const store::JobRecord& job, const std::set<std::string>& requeue_drained);

// The store's rows for memory samples an agent sent: of a job's ranks, or (no job) of its node.
std::vector<store::MemorySample> SamplesOf(
    const google::protobuf::RepeatedPtrField<v1::MemorySample>& in, const std::string& worker_id,
    std::optional<int64_t> job_id);

// Thread-safe: gRPC threads call it. mu_ guards the progress map only, and is never held while
// the store, the hub or the Lifecycle is called. store, clock, hub and lifecycle are not owned
// and must outlive it.
class ReportIngest {
 public:
  // What ingestion asks of the job's lifecycle. Called with no lock of ReportIngest held.
  class Lifecycle {
   public:
    virtual ~Lifecycle() = default;
    virtual bool CancelRequested(int64_t job_id) const = 0;
    // Moves the job and tells watchers; false if the job had moved meanwhile.
    virtual bool Move(int64_t job_id, store::JobState from, store::JobState to,
                      const std::string& reason) = 0;
    // The attempt is over and the job has moved on (succeeded, cancelled): what the daemon held
    // for the attempt is dropped (ReportIngest::Forget included) and a pass is requested.
    virtual void Ended(int64_t job_id) = 0;
    // The agent no longer runs the job: requeued, or its attempt ends as EndAttempt's.
    virtual void Abandoned(const store::JobRecord& job, const std::string& cause) = 0;
    // The attempt failed for `cause`: cancelled, retried or failed.
    virtual void EndAttempt(const store::JobRecord& job, const std::string& cause,
                            bool retryable) = 0;
    // The ranks stopped at a step boundary because fujid asked (a drain with requeue): the job
    // goes back to the queue without using an attempt, `cause` in its history (CANCELLED instead
    // when a cancel was asked).
    virtual void Preempted(const store::JobRecord& job, const std::string& cause) = 0;
  };

  ReportIngest(store::JobStore* store, const store::Clock* clock, EventHub* hub,
               Lifecycle* lifecycle);

  // Stores what the report carries and tells watchers; returns whether the job should be
  // cancelled. A report of a run that is not the job's current one is ignored (true: stop it).
  // Loss points the store cannot take (not finite, negative step, unknown split) are dropped and
  // the drop is written to the job's log; tokens_per_s that is negative or not finite becomes 0;
  // of more than JobStore::kMaxLossesPerCall points only the last are kept.
  Result<bool> Report(const v1::JobReport& report);
  // Ends the current attempt as the agent says: succeeded (its result saved), preempted (queued
  // again, no attempt used: "requeued: agent X drained (checkpointed at step N)"), cancelled (by
  // request, or requeued when nobody asked), or failed (retried unless the failure would recur;
  // an out-of-memory failure narrows the plans the retry may use). A completion of a run that
  // is not current is ignored. UNAVAILABLE when the store could not record the end (its disk
  // full, read-only): the agent sends the completion again.
  Status Complete(const v1::CompleteRequest& request);
  // The latest progress of the job's current attempt (phase empty when none was reported since
  // the daemon started). A report with train losses but no "train" progress counts as one.
  v1::Progress LatestProgress(int64_t job_id) const;
  // The job's attempt ended: its progress and tokens are dropped.
  void Forget(int64_t job_id);
  // The tokens the job's current attempt generated so far, in order (an inference's; none once
  // the attempt ended: its result has the whole text). Kept in memory only, at most
  // kMaxTokenBytes of text and kMaxTokenRuns runs per job (beyond them watchers read the result).
  std::vector<v1::TokenDelta> Tokens(int64_t job_id) const;
  static constexpr size_t kMaxTokenBytes = 4u << 20;
  static constexpr size_t kMaxTokenRuns = 65536;

 private:
  // UNAVAILABLE when `job` is still where it was (same state and placement) because the store
  // cannot be written; OK when it moved on (or it stands still for another reason).
  Status Unrecorded(const store::JobRecord& job);
  // The report's losses as the store takes them; the reasons for points dropped go to `dropped`.
  std::vector<store::Loss> AcceptLosses(const v1::JobReport& report, std::string* dropped) const;
  // The report's progress, with a "train" progress made from its latest train loss when it has
  // none; each is stamped with now when it carries no time, and the latest is kept.
  std::vector<v1::Progress> TakeProgress(const v1::JobReport& report, const store::JobRecord& job,
                                         const std::vector<store::Loss>& losses);
  // Appends lines to the job's log and tells watchers.
  Status AppendLogs(int64_t job_id, const std::vector<store::LogLine>& lines);

  store::JobStore* store_;
  const store::Clock* clock_;
  EventHub* hub_;
  Lifecycle* lifecycle_;

  mutable std::mutex mu_;
  std::map<int64_t, v1::Progress> progress_;  // latest of each running attempt
  struct TokenLog {
    int32_t attempt = 0;
    std::vector<v1::TokenDelta> runs;
    size_t bytes = 0;
    int64_t next_index = 0;  // the first index not yet taken (a resent run is dropped)
  };
  std::map<int64_t, TokenLog> tokens_;  // of each running inference attempt
};

}  // namespace fuji::daemon
