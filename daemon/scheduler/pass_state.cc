// The working state of one scheduling pass; see pass_state.h.
#include "daemon/scheduler/pass_state.h"

#include <algorithm>
#include <unordered_map>

namespace fuji::sched {
namespace {

// Sharing needs a declared size (a plan or memory_mib): without one, the memory check that makes
// sharing safe is void.
bool MayShare(const JobRequest& job) {
  return job.shareable && (job.memory_mib > 0 || job.has_options());
}

const MemoryOption* OptionAt(const JobRequest& job, int option) {
  return option < 0 ? nullptr : &job.options()[static_cast<size_t>(option)];
}

// What the job needs of each device it takes: its option's device memory, or what it declared.
int64_t DeviceNeed(const JobRequest& job, const MemoryOption* option) {
  return option ? option->device_mib : job.memory_mib;
}

bool HasRoom(const DeviceSlot& device, int64_t need) {
  return need <= 0 || device.free_mib >= need;
}

int64_t EndOrNever(int64_t end_ms) {
  return end_ms == kUnknownMs ? kNeverMs : end_ms;
}

}  // namespace

PassState::PassState(const std::vector<AgentView>& agents, const std::vector<RunningJob>& running,
                     int64_t now_ms)
    : now_ms_(now_ms) {
  std::unordered_map<int64_t, const RunningJob*> running_by_id;
  for (const RunningJob& job : running) {
    running_by_id.emplace(job.job_id, &job);
    if (job.host_mib > 0) host_mib_[job.job_id] = job.host_mib;
  }

  for (const AgentView& view : agents) {
    if (!view.connected) continue;
    if (view.drained) {
      drained_kinds_.insert(view.device_kind);
      continue;
    }
    AgentSlot& agent = agents_.emplace_back();
    agent.view = &view;
    agent.host_free_mib = view.host_free_mib;
    for (const DeviceView& device_view : view.devices) {
      DeviceSlot& device = agent.devices.emplace_back();
      device.view = &device_view;
      device.holders = device_view.jobs;
      device.free_mib = device_view.free_mib;
      device.joinable = device_view.shareable;
      for (int64_t holder : device_view.jobs) {
        const auto it = running_by_id.find(holder);
        const RunningJob* job = it == running_by_id.end() ? nullptr : it->second;
        device.release_ms = std::max(device.release_ms, EndOrNever(job ? job->expected_end_ms : 0));
        device.joinable = device.joinable && job && job->shareable;
      }
      if (device.idle()) ++agent.idle;
    }
  }
  // Pointers into agents_ are taken only now that it no longer grows.
  for (AgentSlot& agent : agents_) {
    KindState& kind = kinds_[agent.view->device_kind];
    kind.agents.push_back(&agent);
    if (!kind.largest || agent.devices.size() > kind.largest->devices.size()) kind.largest = &agent;
  }
  for (auto& [name, kind] : kinds_) RefreshMaxima(kind);
}

KindState* PassState::Kind(const std::string& device_kind) {
  const auto it = kinds_.find(device_kind);
  return it == kinds_.end() ? nullptr : &it->second;
}

std::optional<Placement> PassState::TryPlace(const JobRequest& job, KindState& kind) {
  if (job.devices < 1) return std::nullopt;
  const bool ends_by_reservation = kind.reservation && EndsBy(job, kind.reservation->start_ms);
  // The O(1) answer for most jobs of a long queue: larger than any agent's usable devices.
  const int bound = MayShare(job)         ? kind.max_shareable
                    : ends_by_reservation ? kind.max_idle
                                          : kind.max_open;
  if (job.devices > bound) return std::nullopt;

  AgentSlot* best = nullptr;
  Fit best_fit;
  for (AgentSlot* agent : kind.agents) {
    const std::optional<Fit> fit = FitOn(*agent, job, AllowanceOn(*agent, job, kind));
    if (!fit) continue;
    // An earlier (preferred) plan first, then the best fit.
    if (!best || fit->option < best_fit.option ||
        (fit->option == best_fit.option && fit->usable < best_fit.usable)) {
      best = agent;
      best_fit = *fit;
    }
  }
  if (!best) return std::nullopt;

  const Allowance allowance = AllowanceOn(*best, job, kind);
  const int idle_before = best->idle;
  Placement placement{job.id, best->view->worker_id,
                      Take(*best, job, allowance, OptionAt(job, best_fit.option)), best_fit.option};
  // Idle devices taken on the reserved agent by a job that may outlast T were spare ones, and so
  // was the host memory its plan was promised.
  if (allowance.within_spare) {
    kind.reservation->spare -= idle_before - best->idle;
    if (best_fit.option >= 0 && kind.reservation->spare_host_mib != kUnknownMib) {
      kind.reservation->spare_host_mib -= job.options()[static_cast<size_t>(best_fit.option)].host_mib;
    }
  }
  RefreshMaxima(kind);
  return placement;
}

void PassState::Reserve(const JobRequest& job, KindState& kind) {
  std::optional<Reservation> best;
  for (const AgentSlot* agent : kind.agents) {
    if (static_cast<int>(agent->devices.size()) < job.devices) continue;
    std::vector<int64_t> releases;
    for (const DeviceSlot& device : agent->devices) {
      if (!device.idle()) releases.push_back(device.release_ms);
    }
    // T is when the need-th held device is expected back; `spare` is what is free by then beyond
    // the job's needs (with T unknown, everything eventually is).
    const int need = job.devices - agent->idle;
    int64_t start_ms = now_ms_;
    if (need > 0) {
      std::nth_element(releases.begin(), releases.begin() + (need - 1), releases.end());
      start_ms = releases[static_cast<size_t>(need - 1)];
    } else if (job.has_options()) {
      // Enough devices, too little memory: some comes back when the first holder ends (memory
      // other programs hold, nobody knows when).
      start_ms = releases.empty() ? kNeverMs : *std::min_element(releases.begin(), releases.end());
    }
    const auto back_by_start =
        std::count_if(releases.begin(), releases.end(), [&](int64_t r) { return r <= start_ms; });
    const int spare = agent->idle + static_cast<int>(back_by_start) - job.devices;
    if (!best || start_ms < best->start_ms ||
        (start_ms == best->start_ms && agent->idle > best->agent->idle)) {
      best = Reservation{&job, agent, start_ms, spare};
    }
  }
  if (best && job.has_options() && best->agent->host_free_mib != kUnknownMib) {
    // Host memory free at T: free now, and the promises of the holders back by then.
    int64_t at_start = best->agent->host_free_mib;
    std::vector<int64_t> counted;
    for (const DeviceSlot& device : best->agent->devices) {
      if (device.idle() || device.release_ms > best->start_ms) continue;
      for (int64_t holder : device.holders) {
        if (std::find(counted.begin(), counted.end(), holder) != counted.end()) continue;
        counted.push_back(holder);
        at_start += HostHeldBy(holder);
      }
    }
    int64_t least = job.options().front().host_mib;
    for (const MemoryOption& option : job.options()) least = std::min(least, option.host_mib);
    best->spare_host_mib = at_start - least;
  }
  kind.reservation = best;
  RefreshMaxima(kind);
}

int64_t PassState::HostHeldBy(int64_t job_id) const {
  const auto it = host_mib_.find(job_id);
  return it == host_mib_.end() ? 0 : it->second;
}

bool PassState::HeldByReservation(const JobRequest& job, const KindState& kind) const {
  if (!kind.reservation || kind.reservation->job == &job) return false;
  const AgentSlot& reserved = *kind.reservation->agent;
  return FitOn(reserved, job, {reserved.idle, false}).has_value();
}

bool PassState::FitsByCount(const JobRequest& job, const KindState& kind) const {
  for (const AgentSlot* agent : kind.agents) {
    if (CountUsable(*agent, job, {agent->idle, false}, nullptr) >= job.devices) return true;
  }
  return false;
}

PassState::Allowance PassState::AllowanceOn(const AgentSlot& agent, const JobRequest& job,
                                            const KindState& kind) const {
  const std::optional<Reservation>& reservation = kind.reservation;
  if (!reservation || reservation->agent != &agent || EndsBy(job, reservation->start_ms)) {
    return {agent.idle, false};
  }
  return {std::min(agent.idle, reservation->spare), true, reservation->spare_host_mib};
}

bool PassState::EndsBy(const JobRequest& job, int64_t deadline_ms) const {
  return job.estimated_run_ms != kUnknownMs && deadline_ms != kNeverMs &&
         now_ms_ + job.estimated_run_ms <= deadline_ms;
}

int PassState::CountUsable(const AgentSlot& agent, const JobRequest& job, Allowance allowance,
                           const MemoryOption* option) const {
  if (option && agent.host_free_mib != kUnknownMib && option->host_mib > agent.host_free_mib) {
    return 0;
  }
  if (option && allowance.host_limit_mib != kUnknownMib && option->host_mib > allowance.host_limit_mib) {
    return 0;
  }
  const int64_t need = DeviceNeed(job, option);
  int usable = allowance.idle_limit;
  if (option && need > 0) {
    int roomy = 0;
    for (const DeviceSlot& device : agent.devices) roomy += device.idle() && HasRoom(device, need);
    usable = std::min(usable, roomy);
  }
  if (!allowance.within_spare && MayShare(job)) {
    for (const DeviceSlot& device : agent.devices) {
      if (!device.idle() && device.joinable && HasRoom(device, need)) ++usable;
    }
  }
  return usable;
}

std::optional<Fit> PassState::FitOn(const AgentSlot& agent, const JobRequest& job,
                                    Allowance allowance) const {
  if (!job.has_options()) {
    const int usable = CountUsable(agent, job, allowance, nullptr);
    return usable >= job.devices ? std::optional<Fit>(Fit{-1, usable}) : std::nullopt;
  }
  for (size_t i = 0; i < job.options().size(); ++i) {
    const int usable = CountUsable(agent, job, allowance, &job.options()[i]);
    if (usable >= job.devices) return Fit{static_cast<int>(i), usable};
  }
  return std::nullopt;
}

std::vector<int> PassState::Take(AgentSlot& agent, const JobRequest& job, Allowance allowance,
                                 const MemoryOption* option) {
  const int64_t release_ms =
      job.estimated_run_ms == kUnknownMs ? kNeverMs : now_ms_ + job.estimated_run_ms;
  const int64_t need = DeviceNeed(job, option);
  std::vector<DeviceSlot*> chosen;
  // Joinable devices first: packing shared jobs together keeps idle devices for exclusive ones.
  if (!allowance.within_spare && MayShare(job)) {
    for (DeviceSlot& device : agent.devices) {
      if (static_cast<int>(chosen.size()) == job.devices) break;
      if (!device.idle() && device.joinable && HasRoom(device, need)) chosen.push_back(&device);
    }
  }
  int idle_taken = 0;
  for (DeviceSlot& device : agent.devices) {
    if (static_cast<int>(chosen.size()) == job.devices) break;
    if (device.idle() && (!option || HasRoom(device, need))) {
      chosen.push_back(&device);
      ++idle_taken;
    }
  }

  std::vector<int> indices;
  for (DeviceSlot* device : chosen) {
    // A held device was chosen only if joinable, so this holds for idle and held ones alike.
    device->joinable = device->view->shareable && MayShare(job);
    device->holders.push_back(job.id);
    device->release_ms = std::max(device->release_ms, release_ms);
    device->free_mib -= need;
    indices.push_back(device->view->index);
  }
  if (option) {
    if (agent.host_free_mib != kUnknownMib) agent.host_free_mib -= option->host_mib;
    host_mib_[job.id] = option->host_mib;
  }
  std::sort(indices.begin(), indices.end());
  agent.idle -= idle_taken;
  return indices;
}

void PassState::RefreshMaxima(KindState& kind) const {
  kind.max_idle = kind.max_open = kind.max_shareable = 0;
  for (const AgentSlot* agent : kind.agents) {
    int joinable = 0;
    for (const DeviceSlot& device : agent->devices) joinable += !device.idle() && device.joinable;
    const bool reserved = kind.reservation && kind.reservation->agent == agent;
    kind.max_idle = std::max(kind.max_idle, agent->idle);
    kind.max_open = std::max(
        kind.max_open, reserved ? std::min(agent->idle, kind.reservation->spare) : agent->idle);
    kind.max_shareable = std::max(kind.max_shareable, agent->idle + joinable);
  }
}

}  // namespace fuji::sched
