// The working state of one scheduling pass; see pass_state.h.
#include "daemon/scheduler/pass_state.h"

#include <algorithm>
#include <string>
#include <unordered_map>
#include <utility>

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

int64_t EndOrNever(int64_t end_ms) {
  return end_ms == kUnknownMs ? kNeverMs : end_ms;
}

// A job that takes its devices whole: a fine-tune (policy 7c).
bool Exclusive(const JobRequest& job) { return job.warm_key.empty() && !MayShare(job); }

// A gang's part of `option` for an agent holding `ranks` of its `total`: the same device memory,
// and host_mib * ranks / total of the host's (rounded up).
MemoryOption ShareOf(const MemoryOption& option, int ranks, int total) {
  MemoryOption share = option;
  share.host_mib = (option.host_mib * ranks + total - 1) / total;
  return share;
}

// The job as one agent's part of its gang sees it: `ranks` devices.
JobRequest PartOf(const JobRequest& job, int ranks) {
  JobRequest part = job;
  part.devices = ranks;
  return part;
}

// Unloads the warm model, giving its memory back to the device and, on a CPU agent, the host.
void Unload(AgentSlot& agent, DeviceSlot& device, WarmSlot& warm,
            std::vector<std::pair<int64_t, std::pair<int, std::string>>>* evicted) {
  warm.evicted = true;
  device.free_mib += warm.view->mib;
  if (agent.cpu && agent.host_free_mib != kUnknownMib) agent.host_free_mib += warm.view->mib;
  evicted->push_back({warm.view->idle_ms, {device.view->index, warm.view->key}});
}

// The evictable warm models of `devices` by least recent use first (largest idle_ms).
std::vector<std::pair<DeviceSlot*, WarmSlot*>> LeastRecentFirst(const std::vector<DeviceSlot*>& devices,
                                                                const std::string& key) {
  std::vector<std::pair<DeviceSlot*, WarmSlot*>> order;
  for (DeviceSlot* device : devices) {
    for (WarmSlot& warm : device->warm) {
      if (warm.EvictableFor(key)) order.emplace_back(device, &warm);
    }
  }
  std::stable_sort(order.begin(), order.end(), [](const auto& a, const auto& b) {
    return a.second->view->idle_ms > b.second->view->idle_ms;
  });
  return order;
}

}  // namespace

WarmSlot* DeviceSlot::Holding(const std::string& key) {
  for (WarmSlot& w : warm) {
    if (!w.evicted && w.view->key == key) return &w;
  }
  return nullptr;
}

const WarmSlot* DeviceSlot::Holding(const std::string& key) const {
  for (const WarmSlot& w : warm) {
    if (!w.evicted && w.view->key == key) return &w;
  }
  return nullptr;
}

bool DeviceSlot::OnlyJobsOf(const std::string& key) const {
  int active = 0;
  for (const WarmSlot& w : warm) {
    if (!w.evicted && w.view->key == key) active += std::max(0, w.view->active);
  }
  int unknown = 0;
  for (const std::string* running : running_keys) {
    if (running == nullptr) {
      ++unknown;
    } else if (*running != key) {
      return false;
    }
  }
  if (unknown > active) return false;
  for (const std::string* placed : placed_keys) {
    if (*placed != key) return false;
  }
  return true;
}

int64_t DeviceSlot::EvictableMib(const std::string& key) const {
  int64_t mib = 0;
  for (const WarmSlot& w : warm) {
    if (w.EvictableFor(key)) mib += std::max<int64_t>(0, w.view->mib);
  }
  return mib;
}

int64_t DeviceSlot::StuckWarmMib(const std::string& key) const {
  int64_t mib = 0;
  for (const WarmSlot& w : warm) {
    if (!w.evicted && w.view->key != key && !w.EvictableFor(key)) mib += std::max<int64_t>(0, w.view->mib);
  }
  return mib;
}

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
    agent.cpu = view.device_kind == "cpu";
    for (const DeviceView& device_view : view.devices) {
      DeviceSlot& device = agent.devices.emplace_back();
      device.view = &device_view;
      device.holders = device_view.jobs;
      device.free_mib = device_view.free_mib;
      device.joinable = device_view.shareable;
      for (const WarmView& warm : device_view.warm) device.warm.push_back({&warm});
      for (int64_t holder : device_view.jobs) {
        const auto it = running_by_id.find(holder);
        const RunningJob* job = it == running_by_id.end() ? nullptr : it->second;
        device.release_ms = std::max(device.release_ms, EndOrNever(job ? job->expected_end_ms : 0));
        device.joinable = device.joinable && job && job->shareable;
        device.running_keys.push_back(job && !job->warm_key.empty() ? &job->warm_key : nullptr);
      }
      for (WarmSlot& warm : device.warm) warm.device_held = !device.idle();
      if (device.idle()) ++agent.idle;
    }
  }
  // Pointers into agents_ are taken only now that it no longer grows.
  for (AgentSlot& agent : agents_) {
    KindState& kind = kinds_[agent.view->device_kind];
    kind.agents.push_back(&agent);
    kind.any_advertised = kind.any_advertised || !agent.view->advertise_addr.empty();
    for (const DeviceSlot& device : agent.devices) kind.any_warm = kind.any_warm || !device.warm.empty();
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
  // A job with a warm model may join held devices: the maxima do not bound it.
  const bool may_join_warm = !job.warm_key.empty() && kind.any_warm;
  if (job.devices > bound && !may_join_warm) return std::nullopt;
  std::optional<KindState::WarmAsk> ask;
  if (may_join_warm) {
    ask = AskOf(job, kind);
    const auto miss = kind.warm_misses.find(*ask);
    if (miss != kind.warm_misses.end() && miss->second.failed_at == kind.generation + 1) return std::nullopt;
  }

  AgentSlot* best = nullptr;
  Fit best_fit;
  for (AgentSlot* agent : kind.agents) {
    const std::optional<Fit> fit = FitOn(*agent, job, AllowanceOn(*agent, job, kind));
    if (!fit) continue;
    // Its warm model first, then an earlier (preferred) plan, then no unloading, then the best fit.
    const bool better =
        !best ||
        (fit->warm != best_fit.warm ? fit->warm
         : fit->option != best_fit.option ? fit->option < best_fit.option
         : fit->evicts != best_fit.evicts ? !fit->evicts
                                          : fit->usable < best_fit.usable);
    if (better) {
      best = agent;
      best_fit = *fit;
    }
  }
  if (!best) {
    if (ask) kind.warm_misses[*ask].failed_at = kind.generation + 1;
    return std::nullopt;
  }
  ++kind.generation;

  const Allowance allowance = AllowanceOn(*best, job, kind);
  const MemoryOption* option = OptionAt(job, best_fit.option);
  Choice choice;
  if (!Choose(*best, job, allowance, option, &choice)) return std::nullopt;  // FitOn found it: cannot happen
  const int idle_before = best->idle;
  Placement placement{job.id, best->view->worker_id, {}, best_fit.option, {}};
  Take(*best, job, option, choice, &placement);
  // Idle devices taken on the reserved agent by a job that may outlast T were spare ones, and so
  // was the host memory its plan was promised.
  if (allowance.within_spare) {
    kind.reservation->spare -= idle_before - best->idle;
    if (option && kind.reservation->spare_host_mib != kUnknownMib) {
      kind.reservation->spare_host_mib -= choice.host_need;
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
  ++kind.generation;
  RefreshMaxima(kind);
}

int64_t PassState::HostHeldBy(int64_t job_id) const {
  const auto it = host_mib_.find(job_id);
  return it == host_mib_.end() ? 0 : it->second;
}

KindState::WarmAsk PassState::AskOf(const JobRequest& job, const KindState& kind) const {
  const bool ends_by_reservation = kind.reservation && EndsBy(job, kind.reservation->start_ms);
  return {std::string_view(job.warm_key), job.plans.get(), job.devices, job.memory_mib, job.shareable,
          ends_by_reservation};
}

bool PassState::HeldByReservation(const JobRequest& job, const KindState& kind) const {
  if (!kind.reservation || kind.reservation->job == &job) return false;
  const AgentSlot& reserved = *kind.reservation->agent;
  if (job.warm_key.empty() || !kind.any_warm) return FitOn(reserved, job, {reserved.idle, false}).has_value();
  KindState::WarmMiss& memo = kind.warm_misses[AskOf(job, kind)];
  if (memo.held_at != kind.generation + 1) {
    memo.held_at = kind.generation + 1;
    memo.held = FitOn(reserved, job, {reserved.idle, false}).has_value();
  }
  return memo.held;
}

bool PassState::FitsByCount(const JobRequest& job, const KindState& kind) const {
  for (const AgentSlot* agent : kind.agents) {
    if (Choose(*agent, job, {agent->idle, false}, nullptr, &scratch_)) return true;
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

bool PassState::Choose(const AgentSlot& agent, const JobRequest& job, Allowance allowance,
                       const MemoryOption* option, Choice* out) const {
  const std::string& key = job.warm_key;
  const bool exclusive = Exclusive(job);
  const int64_t full = DeviceNeed(job, option);
  // On a GPU a job on its warm model needs its plan less the weights (policy 7b); a CPU device's
  // need is the host's, below.
  const int64_t warm_need = option && !agent.cpu ? std::max<int64_t>(0, full - option->weights_mib) : full;
  // Room for `need` on a device: free, or free once its evictable warm models are unloaded (a CPU
  // agent's warm models free the host, which is checked below).
  auto room = [&](const DeviceSlot& device, int64_t need, bool* evicting) {
    *evicting = false;
    if (need <= 0 || device.free_mib >= need) return true;
    if (agent.cpu || device.free_mib + device.EvictableMib(key) < need) return false;
    *evicting = true;
    return true;
  };
  std::vector<std::pair<size_t, DeviceUse>>& uses = uses_;
  uses.clear();
  for (size_t i = 0; i < agent.devices.size(); ++i) {
    const DeviceSlot& device = agent.devices[i];
    bool evicting = false;
    if (!key.empty() && (device.idle() || !allowance.within_spare) && device.Holding(key) &&
        device.OnlyJobsOf(key) && room(device, warm_need, &evicting)) {
      uses.push_back({i, {Use::kWarm, warm_need}});
    } else if (device.idle()) {
      if (option && !room(device, full, &evicting)) continue;
      evicting = evicting || (exclusive && device.EvictableMib(key) > 0);
      uses.push_back({i, {evicting ? Use::kIdleEvicting : Use::kIdle, full}});
    } else if (!allowance.within_spare && MayShare(job) && device.joinable && room(device, full, &evicting)) {
      uses.push_back({i, {Use::kJoin, full}});
    }
  }
  // Its warm model (devices already batching it first), then joinable devices (packing shared
  // jobs keeps idle devices for exclusive ones), then idle devices, those that unload nothing
  // first.
  auto rank = [&](const std::pair<size_t, DeviceUse>& u) {
    switch (u.second.use) {
      case Use::kWarm: return agent.devices[u.first].idle() ? 1 : 0;
      case Use::kJoin: return 2;
      case Use::kIdle: return 3;
      default: return 4;
    }
  };
  std::stable_sort(uses.begin(), uses.end(), [&](const auto& a, const auto& b) { return rank(a) < rank(b); });

  Choice& choice = *out;
  choice.devices.clear();
  choice.on_warm.clear();
  choice.usable = 0;
  choice.warm = choice.evicts = false;
  choice.host_need = 0;
  int idle_usable = 0;
  for (const auto& [i, use] : uses) {
    if (agent.devices[i].idle()) {
      ++idle_usable;
    } else {
      ++choice.usable;
    }
  }
  choice.usable += std::min(allowance.idle_limit, idle_usable);
  if (choice.usable < job.devices) return false;
  int idle_taken = 0;
  bool all_warm = true;
  for (const auto& [i, use] : uses) {
    if (static_cast<int>(choice.devices.size()) == job.devices) break;
    const DeviceSlot& device = agent.devices[i];
    if (device.idle()) {
      if (idle_taken == allowance.idle_limit) continue;
      ++idle_taken;
    }
    choice.devices.push_back(i);
    choice.on_warm.push_back(use.use == Use::kWarm);
    choice.warm = choice.warm || use.use == Use::kWarm;
    all_warm = all_warm && use.use == Use::kWarm;
    choice.evicts = choice.evicts || use.use == Use::kIdleEvicting ||
                    (!agent.cpu && use.need > device.free_mib && device.EvictableMib(key) > 0);
  }
  if (!option) return true;
  // On its warm model nothing loads: no host memory on a GPU, the plan less the weights on a CPU.
  choice.host_need = !all_warm ? option->host_mib
                     : agent.cpu ? std::max<int64_t>(0, option->host_mib - option->weights_mib)
                                 : 0;
  if (allowance.host_limit_mib != kUnknownMib && choice.host_need > allowance.host_limit_mib) return false;
  if (agent.host_free_mib != kUnknownMib && choice.host_need > agent.host_free_mib) {
    if (!agent.cpu) return false;
    int64_t evictable = 0;
    for (const DeviceSlot& device : agent.devices) evictable += device.EvictableMib(key);
    if (choice.host_need > agent.host_free_mib + evictable) return false;
    choice.evicts = true;
  }
  return true;
}

std::optional<Fit> PassState::FitOn(const AgentSlot& agent, const JobRequest& job,
                                    Allowance allowance) const {
  if (!job.has_options()) {
    if (!Choose(agent, job, allowance, nullptr, &scratch_)) return std::nullopt;
    return Fit{-1, scratch_.usable, scratch_.warm, scratch_.evicts};
  }
  for (size_t i = 0; i < job.options().size(); ++i) {
    if (Choose(agent, job, allowance, &job.options()[i], &scratch_)) {
      return Fit{static_cast<int>(i), scratch_.usable, scratch_.warm, scratch_.evicts};
    }
  }
  return std::nullopt;
}

void PassState::Take(AgentSlot& agent, const JobRequest& job, const MemoryOption* option, const Choice& choice,
                     Placement* placement) {
  const std::string& key = job.warm_key;
  const int64_t release_ms =
      job.estimated_run_ms == kUnknownMs ? kNeverMs : now_ms_ + job.estimated_run_ms;
  const int64_t full = DeviceNeed(job, option);
  const int64_t warm_need = option && !agent.cpu ? std::max<int64_t>(0, full - option->weights_mib) : full;
  std::vector<std::pair<int64_t, std::pair<int, std::string>>> evicted;  // (idle_ms, (device, key))
  std::vector<int> indices;
  int idle_taken = 0;
  for (size_t n = 0; n < choice.devices.size(); ++n) {
    DeviceSlot& device = agent.devices[choice.devices[n]];
    WarmSlot* warm = choice.on_warm[n] ? device.Holding(key) : nullptr;
    const int64_t need = warm ? warm_need : full;
    // A fine-tune needs the whole device: every evictable warm model goes. Others unload the
    // least recently used until the need fits (a CPU agent's: the host's, below).
    for (const auto& [slot_device, slot] : LeastRecentFirst({&device}, key)) {
      if (!Exclusive(job) && (agent.cpu || need <= device.free_mib)) break;
      Unload(agent, device, *slot, &evicted);
    }
    const bool was_idle = device.idle();
    idle_taken += was_idle;
    device.joinable = (was_idle ? device.view->shareable : device.joinable) && MayShare(job);
    device.holders.push_back(job.id);
    device.placed_keys.push_back(&key);
    if (warm) ++warm->placed;
    device.release_ms = std::max(device.release_ms, release_ms);
    device.free_mib -= need;
    indices.push_back(device.view->index);
  }
  if (option) {
    if (agent.cpu && agent.host_free_mib != kUnknownMib && choice.host_need > agent.host_free_mib) {
      // A CPU agent's warm models hold host memory: the least recently used of any device go.
      std::vector<DeviceSlot*> all;
      for (DeviceSlot& device : agent.devices) all.push_back(&device);
      for (const auto& [device, slot] : LeastRecentFirst(all, key)) {
        if (choice.host_need <= agent.host_free_mib) break;
        Unload(agent, *device, *slot, &evicted);
      }
    }
    if (agent.host_free_mib != kUnknownMib) agent.host_free_mib -= choice.host_need;
    host_mib_[job.id] = choice.host_need;
  }
  std::stable_sort(evicted.begin(), evicted.end(), [](const auto& a, const auto& b) { return a.first > b.first; });
  for (auto& [idle_ms, unload] : evicted) placement->evict.push_back(std::move(unload));
  std::sort(indices.begin(), indices.end());
  placement->device_indices = std::move(indices);
  agent.idle -= idle_taken;
}

bool PassState::WantsGang(const JobRequest& job, const KindState* kind) {
  if (!job.may_span || job.nodes == 1 || kind == nullptr || job.devices < 2) return false;
  // nodes = K >= 2 is a gang whatever the agents; nodes = 0 only where one can form.
  return job.nodes >= 2 ||
         (kind->any_advertised && job.devices > static_cast<int>(kind->largest->devices.size()));
}

int PassState::GangCapacity(const AgentSlot& agent, const JobRequest& job, const KindState& kind,
                            const MemoryOption* option, int limit) const {
  if (agent.view->advertise_addr.empty() || limit < 1) return 0;
  const Allowance allowance = AllowanceOn(agent, job, kind);
  // One device asked: Choose counts every device usable under the allowance.
  Choose(agent, PartOf(job, 1), allowance, nullptr, &scratch_);
  for (int ranks = std::min(limit, scratch_.usable); ranks >= 1; --ranks) {
    if (!option) return ranks;
    const MemoryOption share = ShareOf(*option, ranks, job.devices);
    if (Choose(agent, PartOf(job, ranks), allowance, &share, &scratch_)) return ranks;
  }
  return 0;
}

std::vector<std::pair<AgentSlot*, int>> PassState::GangParts(const JobRequest& job, KindState& kind,
                                                            const MemoryOption* option) const {
  struct Candidate {
    AgentSlot* agent;
    int capacity;
    int usable;  // devices it could take: the fewest fit best
  };
  const int total = job.devices;
  const int per = job.nodes >= 2 ? total / job.nodes : total;
  std::vector<Candidate> candidates;
  for (AgentSlot* agent : kind.agents) {
    const int capacity = GangCapacity(*agent, job, kind, option, per);
    if (capacity == 0) continue;
    Choose(*agent, PartOf(job, 1), AllowanceOn(*agent, job, kind), nullptr, &scratch_);
    candidates.push_back({agent, capacity, scratch_.usable});
  }
  std::vector<std::pair<AgentSlot*, int>> parts;
  if (job.nodes >= 2) {
    // Exactly K agents with ranks / K each: the best-fitting K of those that hold a part.
    if (total % job.nodes != 0) return parts;
    std::vector<Candidate> able;
    for (const Candidate& c : candidates) {
      if (c.capacity >= per) able.push_back(c);
    }
    if (static_cast<int>(able.size()) < job.nodes) return parts;
    std::stable_sort(able.begin(), able.end(),
                     [](const Candidate& a, const Candidate& b) { return a.usable < b.usable; });
    for (int i = 0; i < job.nodes; ++i) parts.emplace_back(able[static_cast<size_t>(i)].agent, per);
    return parts;
  }
  // The fewest agents: the largest capacities first; the last part goes to the best-fitting
  // agent among the rest that holds the remainder.
  std::stable_sort(candidates.begin(), candidates.end(),
                   [](const Candidate& a, const Candidate& b) { return a.capacity > b.capacity; });
  int placed = 0;
  size_t taken = 0;
  while (taken < candidates.size() && placed + candidates[taken].capacity < total) {
    placed += candidates[taken].capacity;
    ++taken;
  }
  if (taken == candidates.size()) return parts;  // all of them together hold too few
  const int remainder = total - placed;
  size_t last = taken;
  for (size_t i = taken + 1; i < candidates.size(); ++i) {
    if (candidates[i].capacity >= remainder && candidates[i].usable < candidates[last].usable) last = i;
  }
  for (size_t i = 0; i < taken; ++i) parts.emplace_back(candidates[i].agent, candidates[i].capacity);
  parts.emplace_back(candidates[last].agent, remainder);
  return parts;
}

std::optional<Placement> PassState::TryPlaceGang(const JobRequest& job, KindState& kind) {
  const size_t options = job.has_options() ? job.options().size() : 1;
  for (size_t o = 0; o < options; ++o) {
    const MemoryOption* option = job.has_options() ? &job.options()[o] : nullptr;
    const std::vector<std::pair<AgentSlot*, int>> parts = GangParts(job, kind, option);
    if (parts.empty()) continue;
    // Every part is chosen before any is taken: all or nothing.
    std::vector<Choice> choices;
    std::vector<MemoryOption> shares;
    std::vector<Allowance> allowances;
    for (const auto& [agent, ranks] : parts) {
      allowances.push_back(AllowanceOn(*agent, job, kind));
      shares.push_back(option ? ShareOf(*option, ranks, job.devices) : MemoryOption{});
      Choice choice;
      if (!Choose(*agent, PartOf(job, ranks), allowances.back(), option ? &shares.back() : nullptr, &choice)) {
        return std::nullopt;  // GangParts found it: cannot happen
      }
      choices.push_back(std::move(choice));
    }
    ++kind.generation;
    Placement placement{job.id, "", {}, option ? static_cast<int>(o) : -1, {}};
    int first_rank = 0;
    for (size_t i = 0; i < parts.size(); ++i) {
      AgentSlot& agent = *parts[i].first;
      const int idle_before = agent.idle;
      Placement part;
      const JobRequest& request = gang_parts_.emplace_back(PartOf(job, parts[i].second));
      Take(agent, request, option ? &shares[i] : nullptr, choices[i], &part);
      if (allowances[i].within_spare) {
        kind.reservation->spare -= idle_before - agent.idle;
        if (option && kind.reservation->spare_host_mib != kUnknownMib) {
          kind.reservation->spare_host_mib -= choices[i].host_need;
        }
      }
      placement.parts.push_back({agent.view->worker_id, part.device_indices, first_rank, part.evict});
      first_rank += parts[i].second;
    }
    // host_mib_ keeps the last part's share (Take): a reservation on another part's agent counts
    // what comes back there no higher than that agent's share when the shares differ by a rank.
    placement.worker_id = placement.parts.front().worker_id;
    placement.device_indices = placement.parts.front().device_indices;
    placement.evict = placement.parts.front().evict;
    RefreshMaxima(kind);
    return placement;
  }
  return std::nullopt;
}

std::vector<std::pair<const AgentSlot*, int>> PassState::GangCapacities(const JobRequest& job,
                                                                       const KindState& kind) const {
  const MemoryOption* option = job.has_options() ? &job.options().front() : nullptr;
  std::vector<std::pair<const AgentSlot*, int>> out;
  for (const AgentSlot* agent : kind.agents) {
    out.emplace_back(agent, agent->view->advertise_addr.empty()
                                ? -1
                                : GangCapacity(*agent, job, kind, option, job.devices));
  }
  return out;
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
