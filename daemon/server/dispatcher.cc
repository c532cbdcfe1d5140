// Dispatcher: the queue, scheduling passes, leases, fail-over and the lifecycle's moves; see
// dispatcher.h. Registration, heartbeats and cancel are in job_control.cc.
#include "daemon/server/dispatcher.h"

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <limits>

#include <nlohmann/json.hpp>

#include "daemon/scheduler/free_memory.h"
#include "daemon/server/grpc_status.h"
#include "daemon/server/job_plans.h"
#include "daemon/server/metrics.h"
#include "fuji/v1/worker_contract.h"
#include "lib/common/log.h"

namespace fuji::daemon {

using store::JobState;

// Queued jobs (in queue order) whose waiting reason a pass writes; WaitingReason counts the
// queue for the rest when asked.
constexpr int kPassReasons = 1000;

namespace {

// An inference job's model key as agents name their warm models (WarmModel.key):
// "REALPATH|PRECISION|OFFLOAD" of its spec; "" for other jobs and for a model path that does not
// resolve. An "auto" offload counts as none, the planner's first choice where memory allows.
std::string WarmKeyOf(const store::JobRecord& job) {
  if (job.kind != store::JobKind::kInfer) return "";
  const nlohmann::json spec = nlohmann::json::parse(job.spec, nullptr, false);
  if (!spec.is_object()) return "";
  auto text = [&spec](const char* name, const char* fallback) {
    auto it = spec.find(name);
    return it != spec.end() && it->is_string() ? it->get<std::string>() : std::string(fallback);
  };
  char* resolved = ::realpath(text("model", "").c_str(), nullptr);
  if (resolved == nullptr) return "";
  const std::string model(resolved);
  std::free(resolved);
  const std::string offload = text("offload", "none");
  return model + "|" + text("precision", "fp32") + "|" + (offload == "params" ? "params" : "none");
}

Dispatcher::Placed PlacedOf(const store::JobRecord& job, int64_t assigned_ms, const std::string& plan) {
  Dispatcher::Placed placed;
  placed.warm_key = WarmKeyOf(job);
  placed.running.warm_key = placed.warm_key;
  placed.promise = ReadPlan(plan);
  placed.running.job_id = job.id;
  placed.running.shareable = job.shareable;
  placed.running.expected_end_ms = job.timeout_ms > 0 ? assigned_ms + job.timeout_ms : sched::kUnknownMs;
  placed.running.host_mib = placed.promise ? placed.promise->host_mib : 0;
  return placed;
}

// A store error that has no caller to go back to: what failed, the error's code and what follows
// from it. The code only: a store error's message carries the SQL statement.
void LogDropped(const std::string& what, const Status& status, const std::string& outcome = "") {
  log::Warn(what + " failed (" + StatusCodeName(status.code()) + ")" +
            (outcome.empty() ? "" : "; " + outcome));
}

sched::MemoryReading ReadingOf(const store::MemoryReading& reading) {
  return {reading.used_mib, reading.fuji_mib};
}

}  // namespace

Dispatcher::Dispatcher(store::JobStore* store, const store::Clock* clock, const store::Clock* lease_clock,
                       EventHub* hub, DispatcherOptions options)
    : store_(store),
      clock_(clock),
      lease_clock_(lease_clock),
      hub_(hub),
      options_(options),
      handout_(clock, options.max_poll_wait_ms),
      reports_(store, clock, hub, this) {}

Status Dispatcher::Recover() {
  FUJI_ASSIGN_OR_RETURN(std::vector<store::JobRecord> queued,
                        store_->QueuedJobs(std::numeric_limits<int>::max()));
  for (const store::JobRecord& job : queued) AddQueued(job);
  FUJI_ASSIGN_OR_RETURN(std::vector<store::Assignment> live, store_->ActiveAssignments());
  const int64_t now_ms = clock_->NowMs();
  const int64_t now_lease_ms = lease_clock_->NowMs();
  std::set<std::string> workers;
  for (const store::Assignment& a : live) {
    Result<store::JobRecord> job = store_->Get(a.job_id);
    if (!job.ok()) {
      LogDropped("recovery: reading job " + std::to_string(a.job_id), job.status(),
                 "its plan's memory is not counted");
    }
    std::lock_guard<std::mutex> lock(mu_);
    leases_.Grant(a.job_id, a.worker_id, now_lease_ms, v1::RecoveredLeaseMs(options_.lease_ttl_ms));
    if (job.ok()) {
      placed_[a.job_id] = PlacedOf(*job, a.assigned_at_ms, job->plan);
      placed_[a.job_id].placed_lease_ms = now_lease_ms;
    }
    // A cancel asked for before the restart still stands: the agent is told again at its next
    // heartbeat, and the attempt ends the job CANCELLED.
    if (job.ok() && job->cancel_requested_at_ms > 0) cancel_requested_.insert(a.job_id);
    workers.insert(a.worker_id);
  }
  // Gangs across agents: every member's agent holds a lease of its own; rank 0's kept its port.
  FUJI_ASSIGN_OR_RETURN(std::vector<store::GangMemberRecord> gangs, store_->ActiveGangMembers());
  for (const store::GangMemberRecord& member : gangs) {
    std::lock_guard<std::mutex> lock(mu_);
    leases_.Hold(member.job_id, member.worker_id, now_lease_ms, v1::RecoveredLeaseMs(options_.lease_ttl_ms));
    if (member.first_rank == 0 && member.port > 0) gang_ports_[member.job_id] = {member.worker_id, member.port};
    workers.insert(member.worker_id);
  }
  for (const std::string& worker : workers) {
    FUJI_RETURN_IF_ERROR(
        store_->RenewLeases(worker, now_ms + v1::RecoveredLeaseMs(options_.lease_ttl_ms)).status());
  }
  return Status::Ok();
}

void Dispatcher::RequestPass() {
  if (pass_requester_) pass_requester_();
}

Result<std::vector<sched::AgentView>> Dispatcher::Agents(const std::vector<store::Assignment>& live,
                                                         const std::vector<store::GangMemberRecord>& gangs) {
  FUJI_ASSIGN_OR_RETURN(std::vector<store::WorkerRecord> workers, store_->ListWorkers());
  // A gang's ranks by job: each member's share of the host memory is ranks / all of its ranks.
  std::map<int64_t, int> gang_ranks;
  for (const store::GangMemberRecord& member : gangs) {
    gang_ranks[member.job_id] += static_cast<int>(member.device_indices.size());
  }
  std::vector<sched::Holding> holdings;
  holdings.reserve(live.size() + gangs.size());
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (const store::Assignment& a : live) {
      if (gang_ranks.count(a.job_id) > 0) continue;  // its members below, rank 0's included
      const auto it = placed_.find(a.job_id);
      holdings.push_back({a.job_id, a.worker_id, a.device_indices,
                          it == placed_.end() ? std::nullopt : it->second.promise,
                          it == placed_.end() ? std::string() : it->second.warm_key});
    }
    for (const store::GangMemberRecord& member : gangs) {
      const auto it = placed_.find(member.job_id);
      std::optional<sched::MemoryOption> share = it == placed_.end() ? std::nullopt : it->second.promise;
      if (share) {
        const int64_t ranks = static_cast<int64_t>(member.device_indices.size());
        const int64_t total = std::max(1, gang_ranks[member.job_id]);
        share->host_mib = (share->host_mib * ranks + total - 1) / total;
      }
      holdings.push_back({member.job_id, member.worker_id, member.device_indices, share, std::string()});
    }
  }
  {
    // The agents' gang addresses as the store keeps them (from their latest registration, before
    // fujid restarted too), for the placements of this pass.
    std::lock_guard<std::mutex> lock(mu_);
    for (const store::WorkerRecord& worker : workers) {
      gang_addrs_[worker.id] = {worker.advertise_addr, worker.gang_port_lo, worker.gang_port_hi};
    }
  }
  std::vector<sched::AgentMemory> agents;
  agents.reserve(workers.size());
  for (const store::WorkerRecord& worker : workers) {
    sched::AgentMemory& agent = agents.emplace_back();
    agent.worker_id = worker.id;
    agent.connected = worker.state == "ONLINE";
    agent.drained = worker.drained_at_ms.has_value();  // persisted intent: no new work on it
    if (worker.host_memory) {
      agent.host = sched::HostMemory{worker.host_memory->total_mib, ReadingOf(*worker.host_memory)};
    }
    for (const store::DeviceRecord& device : worker.devices) {
      agent.devices.push_back(
          {device.index, device.kind, device.total_mib,
           device.reading ? std::optional(ReadingOf(*device.reading)) : std::nullopt});
    }
  }
  std::vector<sched::AgentView> views = sched::AgentsWithFreeMemory(agents, holdings);
  // What each agent keeps loaded, as its latest heartbeat said.
  std::lock_guard<std::mutex> lock(mu_);
  for (sched::AgentView& view : views) {
    // Policy 8: an agent takes part in gangs with an advertise address and a gang port range (its
    // part may be rank 0's, which hosts the rendezvous).
    if (const auto gang = gang_addrs_.find(view.worker_id);
        gang != gang_addrs_.end() && !gang->second.addr.empty() && gang->second.port_lo > 0) {
      int in_use = 0;
      for (const auto& [job, port] : gang_ports_) in_use += port.first == view.worker_id;
      if (in_use <= gang->second.port_hi - gang->second.port_lo) view.advertise_addr = gang->second.addr;
    }
    auto warm = warm_.find(view.worker_id);
    if (warm == warm_.end()) continue;
    for (const v1::WarmModel& w : warm->second) {
      for (sched::DeviceView& device : view.devices) {
        if (device.index != w.device_index()) continue;
        device.warm.push_back({w.key(), w.mib(), w.idle_ms(), w.active(), w.serving_job_id() > 0});
      }
    }
  }
  return views;
}

Result<std::vector<sched::AgentView>> Dispatcher::CurrentAgents() {
  FUJI_ASSIGN_OR_RETURN(std::vector<store::Assignment> live, store_->ActiveAssignments());
  FUJI_ASSIGN_OR_RETURN(std::vector<store::GangMemberRecord> gangs, store_->ActiveGangMembers());
  return Agents(live, gangs);
}

Status Dispatcher::CheckSatisfiable(const sched::JobRequest& job) {
  FUJI_ASSIGN_OR_RETURN(std::vector<sched::AgentView> agents, Agents({}, {}));
  if (agents.empty()) return Status::Ok();  // nobody registered yet: the job waits
  return sched::CheckSatisfiable(job, agents);
}

std::string Dispatcher::WaitingReason(int64_t job_id, bool count_ahead) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = waiting_reasons_.find(job_id);
  if (it != waiting_reasons_.end()) return it->second;
  auto job = queued_.find(job_id);
  if (job == queued_.end()) return std::string();
  if (no_agent_connected_) return "waiting for an agent: none is connected";
  if (!count_ahead) {
    return "waiting behind more than " + std::to_string(kPassReasons) + " queued jobs";
  }
  // Past the reasons a pass writes: count what is ahead of it in queue order.
  int64_t ahead = 0;
  for (const auto& [id, other] : queued_) {
    const bool before = other.priority != job->second.priority
                            ? other.priority > job->second.priority
                            : id < job_id;
    ahead += before ? 1 : 0;
  }
  return "waiting behind " + std::to_string(ahead) + " queued jobs of higher or equal priority";
}

void Dispatcher::AddQueued(const store::JobRecord& job) {
  sched::JobRequest request;
  request.id = job.id;
  request.priority = static_cast<int>(job.priority);
  request.devices = job.devices;
  request.device_kind = DeviceKindOfSpec(job.spec);
  request.estimated_run_ms = job.timeout_ms;
  request.shareable = job.shareable;
  request.plans = ReadPlans(job.plans);
  request.warm_key = WarmKeyOf(job);
  request.may_span = job.kind == store::JobKind::kFinetune;
  request.nodes = NodesOfSpec(job.spec);
  std::lock_guard<std::mutex> lock(mu_);
  queued_[job.id] = std::move(request);
}

void Dispatcher::RemoveQueued(int64_t job_id) {
  std::lock_guard<std::mutex> lock(mu_);
  queued_.erase(job_id);
  waiting_reasons_.erase(job_id);
}

void Dispatcher::Enqueued(const store::JobRecord& job) {
  AddQueued(job);
  RequestPass();
}

void Dispatcher::RunPass() {
  std::lock_guard<std::mutex> pass_lock(pass_mu_);
  const auto started = std::chrono::steady_clock::now();
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (queued_.empty()) {
      waiting_reasons_.clear();
      return;
    }
  }
  Result<std::vector<store::Assignment>> live = store_->ActiveAssignments();
  if (!live.ok()) {
    return LogDropped("scheduling pass: reading the live assignments", live.status(),
                      "the pass is skipped");
  }
  Result<std::vector<store::GangMemberRecord>> gangs = store_->ActiveGangMembers();
  if (!gangs.ok()) {
    return LogDropped("scheduling pass: reading the live gangs", gangs.status(), "the pass is skipped");
  }
  Result<std::vector<sched::AgentView>> agents = Agents(*live, *gangs);
  if (!agents.ok()) {
    return LogDropped("scheduling pass: reading the agents", agents.status(),
                      "the pass is skipped");
  }
  // With no agent connected nothing can be placed: skip the pass (a burst of submits before any
  // agent registers would otherwise pay for a pass over the whole queue each time).
  const bool none_connected = std::none_of(agents->begin(), agents->end(),
                                           [](const sched::AgentView& a) { return a.connected; });
  {
    std::lock_guard<std::mutex> lock(mu_);
    no_agent_connected_ = none_connected;
    if (none_connected) waiting_reasons_.clear();
  }
  if (none_connected) return;
  int64_t now_ms = clock_->NowMs();
  std::vector<sched::JobRequest> requests;
  std::vector<sched::RunningJob> running;
  {
    std::lock_guard<std::mutex> lock(mu_);
    requests.reserve(queued_.size());
    const int64_t now_lease_ms = lease_clock_->NowMs();
    for (auto it = gang_holds_.begin(); it != gang_holds_.end();) {
      const bool over = it->second.unheard.empty() || !queued_.count(it->first) ||
                        now_lease_ms - it->second.ended_lease_ms >= 2 * options_.lease_ttl_ms;
      it = over ? gang_holds_.erase(it) : std::next(it);
    }
    for (const auto& [id, request] : queued_) {
      if (!gang_holds_.count(id)) requests.push_back(request);
    }
    for (const store::Assignment& a : *live) {
      const auto it = placed_.find(a.job_id);
      if (it != placed_.end()) running.push_back(it->second.running);
    }
  }
  sched::ScheduleOptions schedule_options;
  schedule_options.max_reasons = kPassReasons;
  sched::PassResult pass = sched::Schedule(requests, *agents, running, now_ms, schedule_options);
  const std::chrono::duration<double> took = std::chrono::steady_clock::now() - started;
  metrics::Registry::Default().Observe("fuji_scheduler_pass_seconds", {}, took.count());
  std::set<std::string> workers;
  for (const sched::Placement& placement : pass.placements) {
    Result<store::JobRecord> job = store_->Get(placement.job_id);
    const std::string plan = job.ok() ? PlanAt(job->plans, placement.option) : std::string();
    if (!placement.parts.empty()) {
      if (!job.ok()) {
        LogDropped("scheduling pass: reading job " + std::to_string(placement.job_id), job.status(),
                   "it stays queued");
      } else if (PlaceGang(*job, placement, plan, now_ms, &workers)) {
        PublishState(job->id);
      }
      continue;
    }
    Status assigned = job.ok() ? store_->Assign(job->id, placement.worker_id, placement.device_indices,
                                                now_ms + options_.lease_ttl_ms, plan)
                               : job.status();
    if (!assigned.ok()) {
      // FAILED_PRECONDITION: cancelled meanwhile, it left the queue with its transition. Else the
      // job stays queued for the next pass.
      if (assigned.code() != StatusCode::kFailedPrecondition) {
        LogDropped("scheduling pass: placing job " + std::to_string(placement.job_id) +
                       " on agent " + placement.worker_id,
                   assigned, "it stays queued");
      }
      if (job.ok() && job->state != JobState::kQueued) RemoveQueued(job->id);
      continue;
    }
    CountAssigned();
    RemoveQueued(job->id);
    v1::Assignment assignment;
    assignment.set_job_id(job->id);
    assignment.set_attempt(job->attempts);
    assignment.set_lease_epoch(job->lease_epoch + 1);  // Assign added one (passes run one at a time)
    assignment.set_kind(store::JobKindName(job->kind));
    assignment.set_spec_json(SpecForPlacement(job->kind, job->spec, plan));
    for (int index : placement.device_indices) assignment.add_device_indices(index);
    for (const auto& [device, key] : placement.evict) {
      v1::WarmRef* evict = assignment.add_evict();
      evict->set_device_index(device);
      evict->set_key(key);
    }
    assignment.set_timeout_ms(job->timeout_ms);
    Placed placed = PlacedOf(*job, now_ms, plan);
    placed.placed_lease_ms = lease_clock_->NowMs();
    {
      std::lock_guard<std::mutex> lock(mu_);
      leases_.Grant(job->id, placement.worker_id, placed.placed_lease_ms, v1::RequeueAfterMs(options_.lease_ttl_ms));
      placed_[job->id] = placed;
    }
    handout_.Add(placement.worker_id, std::move(assignment));
    workers.insert(placement.worker_id);
    PublishState(job->id);
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto it = pass.waiting_reasons.begin(); it != pass.waiting_reasons.end();) {
      // Jobs that left the queue while the pass ran keep no reason.
      it = queued_.count(it->first) ? std::next(it) : pass.waiting_reasons.erase(it);
    }
    waiting_reasons_ = std::move(pass.waiting_reasons);
    for (const auto& [id, hold] : gang_holds_) {
      std::string names;
      for (const std::string& w : hold.unheard) names += (names.empty() ? "" : ", ") + w;
      waiting_reasons_[id] = "its gang's last attempt just ended: it waits until " + names +
                             " has been heard from again (or is lost) before it is placed";
    }
  }
  for (const std::string& worker : workers) handout_.Deliver(worker);
}

void Dispatcher::CheckLeases() {
  const int64_t now_lease_ms = lease_clock_->NowMs();
  std::vector<sched::ExpiredLease> expired;
  {
    std::lock_guard<std::mutex> lock(mu_);
    expired = leases_.Expired(now_lease_ms);
  }
  std::set<std::string> lost;
  // Agents silent for a whole lease are LOST even when they hold nothing, so no pass places a job
  // on them; a heartbeat or a registration brings them back. Their jobs wait for the fencing
  // margin on top (their leases above).
  Result<std::vector<store::WorkerRecord>> workers = store_->ListWorkers();
  if (!workers.ok()) {
    LogDropped("lease check: reading the agents", workers.status());
  } else {
    for (const store::WorkerRecord& worker : *workers) {
      if (worker.state != "ONLINE") continue;
      int64_t heard_ms;
      {
        std::lock_guard<std::mutex> lock(mu_);
        heard_ms = heard_lease_ms_.emplace(worker.id, now_lease_ms).first->second;
      }
      if (heard_ms + options_.lease_ttl_ms >= now_lease_ms) continue;
      if (MarkLost(worker.id)) lost.insert(worker.id);
    }
  }
  for (const sched::ExpiredLease& lease : expired) {
    if (lost.insert(lease.worker_id).second) MarkLost(lease.worker_id);
    Result<store::JobRecord> job = store_->Get(lease.job_id);
    if (!job.ok()) {
      LogDropped("lease check: reading job " + std::to_string(lease.job_id), job.status(),
                 "its lease is dropped");
    }
    if (job.ok() && job->state == JobState::kRetrying) {
      // Its requeue could not be written (the store's disk full): tried again until it is.
      if (Move(job->id, JobState::kRetrying, JobState::kQueued, "requeued")) Ended(job->id);
      continue;
    }
    // A gang member whose part ended (it succeeded) holds nothing more: its silence ends nothing.
    const bool part_done =
        job.ok() && job->worker_id != lease.worker_id &&
        std::none_of(job->gang.begin(), job->gang.end(), [&](const store::GangMemberRecord& member) {
          return member.attempt == job->attempts && member.worker_id == lease.worker_id && !member.released_at_ms;
        });
    if (!job.ok() || (job->state != JobState::kAssigned && job->state != JobState::kRunning) ||
        !HoldsPart(*job, lease.worker_id) || part_done) {
      std::lock_guard<std::mutex> lock(mu_);
      if (part_done) {
        leases_.Drop(lease.job_id, lease.worker_id);
      } else {
        leases_.Release(lease.job_id);
      }
      continue;
    }
    EndAttempt(*job, lease.Reason(), /*retryable=*/true);
  }
}

int Dispatcher::GangPort(const std::string& worker_id, int64_t job_id, int64_t lease_epoch) const {
  std::lock_guard<std::mutex> lock(mu_);
  const auto it = gang_addrs_.find(worker_id);
  if (it == gang_addrs_.end() || it->second.port_lo <= 0) return 0;
  const int64_t lo = it->second.port_lo, span = it->second.port_hi - it->second.port_lo + 1;
  std::set<int> used;
  for (const auto& [job, port] : gang_ports_) {
    if (job != job_id && port.first == worker_id) used.insert(port.second);
  }
  // Each placement of a job starts from another port, so that a retry does not meet the last
  // attempt's store still in TIME_WAIT.
  const int64_t start = (job_id * 7919 + lease_epoch * 104729) % span;
  for (int64_t i = 0; i < span; ++i) {
    const int port = static_cast<int>(lo + (start + i) % span);
    if (used.count(port) == 0) return port;
  }
  return 0;
}

std::vector<store::GangMemberRecord> Dispatcher::MemberParts(const std::vector<store::GangMemberRecord>& gangs,
                                                             const std::string& worker_id) const {
  std::vector<store::GangMemberRecord> parts;
  for (const store::GangMemberRecord& member : gangs) {
    if (member.worker_id == worker_id && member.first_rank > 0) parts.push_back(member);
  }
  return parts;
}

bool Dispatcher::PlaceGang(const store::JobRecord& job, const sched::Placement& placement, const std::string& plan,
                           int64_t now_ms, std::set<std::string>* workers) {
  const int64_t lease_epoch = job.lease_epoch + 1;  // AssignGang adds one (passes run one at a time)
  std::vector<store::GangMemberRecord> members;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (const sched::GangPart& part : placement.parts) {
      store::GangMemberRecord& member = members.emplace_back();
      member.job_id = job.id;
      member.attempt = job.attempts;
      member.worker_id = part.worker_id;
      const auto addr = gang_addrs_.find(part.worker_id);
      member.advertise_addr = addr == gang_addrs_.end() ? std::string() : addr->second.addr;
      member.first_rank = part.first_rank;
      member.device_indices = part.device_indices;
    }
  }
  members.front().port = GangPort(members.front().worker_id, job.id, lease_epoch);
  Status assigned = members.front().port == 0
                        ? Unavailable("agent " + members.front().worker_id + " has no free gang port")
                        : store_->AssignGang(job.id, members, now_ms + options_.lease_ttl_ms, plan);
  if (!assigned.ok()) {
    if (assigned.code() != StatusCode::kFailedPrecondition) {
      LogDropped("scheduling pass: placing job " + std::to_string(job.id) + " as a gang of " +
                     std::to_string(members.size()) + " agents",
                 assigned, "it stays queued");
    }
    if (job.state != JobState::kQueued) RemoveQueued(job.id);
    return false;
  }
  CountAssigned();
  RemoveQueued(job.id);
  const std::string rendezvous = "tcp:" + members.front().advertise_addr + ":" + std::to_string(members.front().port);
  const std::string spec = SpecForPlacement(job.kind, job.spec, plan);
  Placed placed = PlacedOf(job, now_ms, plan);
  placed.placed_lease_ms = lease_clock_->NowMs();
  {
    std::lock_guard<std::mutex> lock(mu_);
    leases_.Release(job.id);
    for (const store::GangMemberRecord& member : members) {
      leases_.Hold(job.id, member.worker_id, placed.placed_lease_ms, v1::RequeueAfterMs(options_.lease_ttl_ms));
    }
    placed_[job.id] = placed;
    gang_ports_[job.id] = {members.front().worker_id, members.front().port};
  }
  for (size_t i = 0; i < members.size(); ++i) {
    v1::Assignment assignment;
    assignment.set_job_id(job.id);
    assignment.set_attempt(job.attempts);
    assignment.set_lease_epoch(lease_epoch);
    assignment.set_kind(store::JobKindName(job.kind));
    assignment.set_spec_json(spec);
    for (int index : members[i].device_indices) assignment.add_device_indices(index);
    for (const auto& [device, key] : placement.parts[i].evict) {
      v1::WarmRef* evict = assignment.add_evict();
      evict->set_device_index(device);
      evict->set_key(key);
    }
    assignment.set_timeout_ms(job.timeout_ms);
    assignment.set_world_size(job.devices);
    assignment.set_first_rank(members[i].first_rank);
    assignment.set_rendezvous(rendezvous);
    for (const store::GangMemberRecord& member : members) *assignment.add_members() = GangMemberToProto(member);
    handout_.Add(members[i].worker_id, std::move(assignment));
    workers->insert(members[i].worker_id);
  }
  return true;
}

bool Dispatcher::PlacedWithinLease(int64_t job_id, int64_t now_lease_ms) const {
  std::lock_guard<std::mutex> lock(mu_);
  const auto it = placed_.find(job_id);
  return it != placed_.end() && it->second.placed_lease_ms + options_.lease_ttl_ms > now_lease_ms;
}

void Dispatcher::Heard(const std::string& worker_id, int64_t now_lease_ms) {
  bool released = false;
  {
    std::lock_guard<std::mutex> lock(mu_);
    heard_lease_ms_[worker_id] = now_lease_ms;
    for (auto it = gang_holds_.begin(); it != gang_holds_.end();) {
      if (now_lease_ms >= it->second.ended_lease_ms) it->second.unheard.erase(worker_id);
      released = released || it->second.unheard.empty();
      it = it->second.unheard.empty() ? gang_holds_.erase(it) : std::next(it);
    }
  }
  if (released) RequestPass();
}

bool Dispatcher::MarkLost(const std::string& worker_id) {
  Status marked = store_->MarkWorkerLost(worker_id);
  if (!marked.ok()) LogDropped("lease check: marking agent " + worker_id + " LOST", marked);
  if (marked.ok()) {
    // A lost agent gets nothing: the gangs waiting to hear from it need not wait any more.
    std::lock_guard<std::mutex> lock(mu_);
    for (auto& [id, hold] : gang_holds_) hold.unheard.erase(worker_id);
  }
  return marked.ok();
}

void Dispatcher::EndAttempt(const store::JobRecord& job, const std::string& cause,
                            bool retryable) {
  Status moved;
  if (CancelRequested(job.id)) {
    moved = TryMove(job.id, job.state, JobState::kCancelled, "cancelled by request (" + cause + ")");
  } else if (!retryable) {
    moved = TryMove(job.id, job.state, JobState::kFailed, cause);
  } else {
    sched::RetryDecision decision = sched::DecideRetry(cause, job.attempts + 1, job.max_attempts);
    if (!decision.requeue) {
      moved = TryMove(job.id, job.state, JobState::kFailed, decision.reason);
    } else {
      HoldGang(job);
      moved = TryMove(job.id, job.state, JobState::kRetrying, decision.reason);
      if (moved.ok()) moved = TryMove(job.id, JobState::kRetrying, JobState::kQueued, decision.reason);
    }
  }
  // The store could not be written (its disk full): the job keeps its lease, and the next lease
  // check (or the agent's next heartbeat, which no longer lists it) ends the attempt again.
  if (moved.code() == StatusCode::kUnavailable) return;
  Ended(job.id);
}

void Dispatcher::HoldGang(const store::JobRecord& job) {
  if (job.gang.size() <= 1) return;
  // Held before it is queued again: a pass between the two would place it at once.
  GangHold hold;
  hold.ended_lease_ms = lease_clock_->NowMs();
  for (const auto& member : job.gang) hold.unheard.insert(member.worker_id);
  std::lock_guard<std::mutex> lock(mu_);
  gang_holds_[job.id] = std::move(hold);
}

void Dispatcher::Preempted(const store::JobRecord& job, const std::string& cause) {
  if (CancelRequested(job.id)) return EndAttempt(job, cause, /*retryable=*/false);
  HoldGang(job);
  // Straight back to QUEUED (not through RETRYING, which counts an attempt): the job resumes from
  // the checkpoint its ranks just wrote.
  const Status moved = TryMove(job.id, job.state, JobState::kQueued, cause);
  if (moved.code() == StatusCode::kUnavailable) return;  // the agent sends its completion again
  Ended(job.id);
}

bool Dispatcher::Move(int64_t job_id, JobState from, JobState to, const std::string& reason) {
  return TryMove(job_id, from, to, reason).ok();
}

Status Dispatcher::TryMove(int64_t job_id, JobState from, JobState to, const std::string& reason) {
  auto what = [&] {
    return "moving job " + std::to_string(job_id) + " from " + store::JobStateName(from) + " to " +
           store::JobStateName(to);
  };
  Status moved = store_->Transition(job_id, from, to, reason);
  if (!moved.ok()) {
    // FAILED_PRECONDITION: the job had moved meanwhile (a cancel, a completion), as callers expect.
    if (moved.code() == StatusCode::kUnavailable) {
      LogDropped(what(), moved, "retried later");
    } else if (moved.code() != StatusCode::kFailedPrecondition) {
      LogDropped(what(), moved);
    }
    return moved;
  }
  CountMove(job_id, from, to);
  if (from == JobState::kQueued) RemoveQueued(job_id);
  if (to == JobState::kQueued) {
    Result<store::JobRecord> job = store_->Get(job_id);
    if (job.ok()) {
      AddQueued(*job);
    } else {
      LogDropped(what() + ": reading it back", job.status(),
                 "it is not placed until fujid restarts");
    }
  }
  PublishState(job_id);
  return Status::Ok();
}

void Dispatcher::CountAssigned() {
  metrics::Registry::Default().Add("fuji_job_transitions_total",
                                   {store::JobStateName(JobState::kQueued), store::JobStateName(JobState::kAssigned)});
}

void Dispatcher::CountMove(int64_t job_id, JobState from, JobState to) {
  metrics::Registry& registry = metrics::Registry::Default();
  registry.Add("fuji_job_transitions_total", {store::JobStateName(from), store::JobStateName(to)});
  if (to != JobState::kRunning && from != JobState::kRunning) return;
  Result<store::JobRecord> job = store_->Get(job_id);
  if (!job.ok() || !job->started_at_ms.has_value()) return;
  const char* kind = store::JobKindName(job->kind);
  if (to == JobState::kRunning) {
    registry.Observe("fuji_job_queue_wait_seconds", {kind}, (*job->started_at_ms - job->submitted_at_ms) / 1000.0);
  } else {
    registry.Observe("fuji_job_run_seconds", {kind}, (clock_->NowMs() - *job->started_at_ms) / 1000.0);
  }
}

void Dispatcher::PublishState(int64_t job_id) {
  if (!hub_->HasSubscribers(job_id)) return;
  Result<store::JobRecord> job = store_->Get(job_id);
  if (!job.ok()) {
    return LogDropped("telling watchers the state of job " + std::to_string(job_id), job.status());
  }
  EventHub::Event event;
  *event.event.mutable_job() = JobToProto(*job);
  event.event.set_state(StateToProto(job->state));
  hub_->Publish(job_id, event);
}

void Dispatcher::Forget(int64_t job_id) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    leases_.Release(job_id);
    cancel_requested_.erase(job_id);
    placed_.erase(job_id);
    gang_ports_.erase(job_id);
  }
  handout_.Withdraw(job_id);
  reports_.Forget(job_id);
}

void Dispatcher::Ended(int64_t job_id) {
  Forget(job_id);
  RequestPass();
}

}  // namespace fuji::daemon
