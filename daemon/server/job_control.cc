// Dispatcher: agents' registration and heartbeats (the leases they renew, the jobs they no longer
// run) and users' cancel; see dispatcher.h. Reports and completions are ReportIngest's.
#include <algorithm>
#include <optional>
#include <set>
#include <vector>

#include "daemon/server/dispatcher.h"
#include "fuji/v1/worker_contract.h"

namespace fuji::daemon {

using store::JobState;

bool Dispatcher::CancelRequested(int64_t job_id) const {
  std::lock_guard<std::mutex> lock(mu_);
  return cancel_requested_.count(job_id) > 0;
}

Result<store::JobRecord> Dispatcher::Cancel(int64_t job_id) {
  const std::string reason = "cancelled by request";
  for (int tries = 0; tries < 5; ++tries) {
    FUJI_ASSIGN_OR_RETURN(store::JobRecord job, store_->Get(job_id));
    if (store::IsTerminal(job.state)) {
      return FailedPrecondition("job " + std::to_string(job_id) + " is already " +
                                store::JobStateName(job.state));
    }
    if (job.state == JobState::kQueued || job.state == JobState::kRetrying) {
      if (!Move(job_id, job.state, JobState::kCancelled, reason)) continue;
      Forget(job_id);
      return store_->Get(job_id);
    }
    // Recorded before it is acknowledged: a restarted fujid still stops the job and ends it
    // CANCELLED, whatever the agent then reports.
    if (Status recorded = store_->RequestCancel(job_id); !recorded.ok()) {
      if (recorded.code() == StatusCode::kFailedPrecondition) continue;  // it ended meanwhile
      return recorded;
    }
    {
      std::lock_guard<std::mutex> lock(mu_);
      cancel_requested_.insert(job_id);
    }
    // Still waiting for the agent's poll: cancelled here. Checked once the request is recorded,
    // so that a poll taking the job meanwhile hands it to an agent told to stop it.
    if (handout_.IsPending(job.worker_id, job_id)) {
      if (!Move(job_id, job.state, JobState::kCancelled, reason)) continue;
      Ended(job_id);
      return store_->Get(job_id);
    }
    job.reason = "cancel requested; the agent is stopping it";
    return job;
  }
  return Unavailable("job " + std::to_string(job_id) + " changes too fast to cancel; try again");
}

void Dispatcher::Abandoned(const store::JobRecord& job, const std::string& cause) {
  // Never started: back to the queue without using an attempt.
  if (job.state == JobState::kAssigned && !CancelRequested(job.id)) {
    if (Move(job.id, JobState::kAssigned, JobState::kQueued, cause + "; requeued")) Ended(job.id);
    return;
  }
  EndAttempt(job, cause, /*retryable=*/true);
}

void Dispatcher::SetWarm(const std::string& worker_id,
                         const google::protobuf::RepeatedPtrField<v1::WarmModel>& warm) {
  // At most one entry per device and a few models each: an agent's list is small, and bounded here.
  constexpr int kMaxWarmPerAgent = 1024;
  std::vector<v1::WarmModel> models(warm.begin(), warm.begin() + std::min(warm.size(), kMaxWarmPerAgent));
  std::lock_guard<std::mutex> lock(mu_);
  warm_[worker_id] = std::move(models);
}

std::vector<v1::WarmModel> Dispatcher::Warm(const std::string& worker_id) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = warm_.find(worker_id);
  return it == warm_.end() ? std::vector<v1::WarmModel>() : it->second;
}

Status Dispatcher::CheckGangAddress(const v1::RegisterRequest& request) {
  constexpr size_t kMaxAddrBytes = 255;
  const std::string& addr = request.advertise_addr();
  if (addr.size() > kMaxAddrBytes ||
      std::any_of(addr.begin(), addr.end(), [](char c) { return c <= ' ' || c == 0x7f || c == '/'; })) {
    return InvalidArgument("advertise address must be a host name or IP address of at most 255 bytes");
  }
  const int lo = request.gang_port_lo(), hi = request.gang_port_hi();
  if (!((lo == 0 && hi == 0) || (lo >= 1 && lo <= hi && hi <= 65535))) {
    return InvalidArgument("gang ports must be 0 0 (none) or LO-HI within 1-65535, got " + std::to_string(lo) + "-" +
                           std::to_string(hi));
  }
  return Status::Ok();
}

Result<std::vector<store::Assignment>> Dispatcher::LiveParts(const std::string& worker_id) {
  FUJI_ASSIGN_OR_RETURN(std::vector<store::Assignment> live, store_->ActiveAssignments());
  FUJI_ASSIGN_OR_RETURN(std::vector<store::GangMemberRecord> gangs, store_->ActiveGangMembers());
  for (const store::GangMemberRecord& member : MemberParts(gangs, worker_id)) {
    store::Assignment& part = live.emplace_back();
    part.job_id = member.job_id;
    part.attempt = member.attempt;
    part.worker_id = member.worker_id;
    part.device_indices = member.device_indices;
    part.lease_expires_ms = member.lease_expires_ms;
  }
  return live;
}

Result<std::vector<int64_t>> Dispatcher::Register(const v1::RegisterRequest& request) {
  store::WorkerRecord worker;
  worker.id = request.worker_id();
  worker.host = request.host();
  for (const v1::Device& device : request.devices()) {
    worker.devices.push_back({device.index(), device.name(), device.total_mib(), device.kind(), std::nullopt});
  }
  FUJI_RETURN_IF_ERROR(CheckGangAddress(request));
  worker.advertise_addr = request.advertise_addr();
  worker.gang_port_lo = request.gang_port_lo();
  worker.gang_port_hi = request.gang_port_hi();
  FUJI_RETURN_IF_ERROR(
      store_->RegisterWorker(worker, SamplesOf(request.samples(), worker.id, std::nullopt)));
  const std::string& id = worker.id;
  {
    std::lock_guard<std::mutex> lock(mu_);
    gang_addrs_[id] = {request.advertise_addr(), request.gang_port_lo(), request.gang_port_hi()};
  }
  const int64_t now_ms = clock_->NowMs();
  const int64_t now_lease_ms = lease_clock_->NowMs();
  Heard(id, now_lease_ms);
  SetWarm(id, request.warm());
  std::vector<int64_t> stop;
  std::set<int64_t> continuing;
  for (const v1::RunningJob& running : request.running()) {
    Result<store::JobRecord> job = store_->Get(running.job_id());
    if (job.ok() && HoldsAttempt(*job, id, running.attempt(), running.lease_epoch())) {
      continuing.insert(job->id);
      std::lock_guard<std::mutex> lock(mu_);
      leases_.Hold(job->id, id, now_lease_ms, v1::RequeueAfterMs(options_.lease_ttl_ms));
    } else {
      stop.push_back(running.job_id());
    }
  }
  // Jobs handed to this agent that it no longer runs (the agent restarted): they failed over.
  // A hand-out younger than a lease may still be on its way to the agent (it registers again
  // while its poll is answered): the heartbeats' rule requeues it if it never arrives.
  // A gang's member parts count as the agent's too: the attempt ends for every member.
  FUJI_ASSIGN_OR_RETURN(std::vector<store::Assignment> live, LiveParts(id));
  for (const store::Assignment& a : live) {
    if (a.worker_id != id || continuing.count(a.job_id) > 0 || handout_.IsPending(id, a.job_id)) {
      continue;
    }
    Result<store::JobRecord> job = store_->Get(a.job_id);
    if (!job.ok() || !HoldsAttempt(*job, id, a.attempt, job->lease_epoch)) continue;
    if (job->state == JobState::kAssigned && PlacedWithinLease(a.job_id, now_lease_ms)) continue;
    Abandoned(*job, "agent " + id + " restarted");
  }
  FUJI_RETURN_IF_ERROR(store_->RenewLeases(id, now_ms + options_.lease_ttl_ms).status());
  RequestPass();
  return stop;
}

Result<v1::HeartbeatResponse> Dispatcher::Heartbeat(const v1::HeartbeatRequest& request) {
  v1::HeartbeatResponse response;
  const std::string& id = request.worker_id();
  Status beat = store_->Heartbeat(id, SamplesOf(request.samples(), id, std::nullopt));
  if (beat.code() == StatusCode::kNotFound) {
    response.set_reregister(true);
    return response;
  }
  FUJI_RETURN_IF_ERROR(beat);
  const int64_t now_ms = clock_->NowMs();
  const int64_t now_lease_ms = lease_clock_->NowMs();
  FUJI_RETURN_IF_ERROR(store_->RenewLeases(id, now_ms + options_.lease_ttl_ms).status());
  Heard(id, now_lease_ms);
  SetWarm(id, request.warm());
  std::vector<int64_t> cancel_requested;
  {
    std::lock_guard<std::mutex> lock(mu_);
    leases_.Renew(id, now_lease_ms, v1::RequeueAfterMs(options_.lease_ttl_ms));
    cancel_requested.assign(cancel_requested_.begin(), cancel_requested_.end());
  }
  std::set<int64_t> cancel;
  std::set<int64_t> listed;
  for (const v1::RunningJob& running : request.running()) {
    listed.insert(running.job_id());
    Result<store::JobRecord> job = store_->Get(running.job_id());
    if (!job.ok() || !HoldsAttempt(*job, id, running.attempt(), running.lease_epoch())) cancel.insert(running.job_id());
  }
  // Jobs held by this agent for a whole lease that it does not list (a hand-out lost with its
  // poll, a rank that died unreported): requeued, and the agent is told to stop them. A gang's
  // member part too: its attempt ends for every member.
  FUJI_ASSIGN_OR_RETURN(std::vector<store::Assignment> live, LiveParts(id));
  for (const store::Assignment& a : live) {
    if (a.worker_id != id || listed.count(a.job_id) > 0 || handout_.IsPending(id, a.job_id) ||
        PlacedWithinLease(a.job_id, now_lease_ms)) {
      continue;
    }
    Result<store::JobRecord> job = store_->Get(a.job_id);
    if (!job.ok() || !HoldsAttempt(*job, id, a.attempt, job->lease_epoch)) continue;
    Abandoned(*job, "agent " + id + " no longer runs it");
    cancel.insert(a.job_id);
  }
  for (int64_t job_id : cancel_requested) {
    Result<store::JobRecord> job = store_->Get(job_id);
    if (job.ok() && HoldsPart(*job, id)) cancel.insert(job_id);
  }
  for (int64_t job_id : cancel) response.add_cancel_job_ids(job_id);
  // Fine-tunes with a part on an agent drained with requeue: asked on every heartbeat until their
  // attempt ends, from the drain as the store keeps it, so an agent that missed an answer, or a
  // restarted fujid, still has them checkpoint and stop.
  FUJI_ASSIGN_OR_RETURN(std::set<std::string> requeue_drained, store_->RequeueDrainedWorkers());
  if (requeue_drained.empty()) return response;
  for (const v1::RunningJob& running : request.running()) {
    if (cancel.count(running.job_id()) > 0) continue;
    Result<store::JobRecord> job = store_->Get(running.job_id());
    if (job.ok() && !RequeueDrainedAgent(*job, requeue_drained).empty()) {
      response.add_preempt_job_ids(running.job_id());
    }
  }
  return response;
}

}  // namespace fuji::daemon
