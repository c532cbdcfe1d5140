// The texts that say why a job is refused or waits; see reasons.h.
#include "daemon/scheduler/reasons.h"

#include <algorithm>
#include <cstdio>
#include <functional>
#include <utility>
#include <vector>

namespace fuji::sched {
namespace {

// Holders named per agent before the rest are summed up, to keep a reason to one line.
constexpr size_t kHoldersNamed = 3;

// The option that needs the least of each device, then of the host.
const MemoryOption& SmallestOption(const JobRequest& job) {
  return *std::min_element(job.options().begin(), job.options().end(),
                           [](const MemoryOption& a, const MemoryOption& b) {
                             return a.device_mib != b.device_mib ? a.device_mib < b.device_mib
                                                                 : a.host_mib < b.host_mib;
                           });
}

// " with 4.9 GiB free each and 58.6 GiB of host memory (its smallest plan: zero 3, offload
// params)"; "" for a job without options.
std::string MemoryNeedText(const JobRequest& job) {
  if (!job.has_options()) return "";
  const MemoryOption& smallest = SmallestOption(job);
  std::string text = smallest.device_mib > 0
                         ? " with " + GiBText(smallest.device_mib) + " free each and "
                         : " and ";
  text += GiBText(smallest.host_mib) + " of host memory (";
  text += job.options().size() == 1 ? "its plan: " : "its smallest plan: ";
  return text + smallest.label + ")";
}

// ", up to 78.1 GiB free per idle device, 19.5 GiB of host memory free"
std::string AgentMemoryText(const AgentSlot& agent, bool cuda) {
  std::string text;
  if (cuda) {
    int64_t most = 0;
    for (const DeviceSlot& device : agent.devices) {
      if (device.idle()) most = std::max(most, device.free_mib);
    }
    text += ", up to " + GiBText(most) + " free per idle device";
  }
  if (agent.host_free_mib != kUnknownMib) {
    text += ", " + GiBText(agent.host_free_mib) + " of host memory free";
  }
  return text;
}

// The number-th largest of the agent's device totals (number >= 1, at most its devices).
int64_t NthLargestTotal(const AgentView& agent, int number) {
  std::vector<int64_t> totals;
  for (const DeviceView& device : agent.devices) totals.push_back(device.total_mib);
  std::nth_element(totals.begin(), totals.begin() + (number - 1), totals.end(),
                   std::greater<int64_t>());
  return totals[static_cast<size_t>(number - 1)];
}

// "node-a has 1 free (job 7 holds 1, job 9 holds 2)"
std::string AgentText(const AgentSlot& agent) {
  std::vector<std::pair<int64_t, int>> held;  // job -> devices, in device order
  for (const DeviceSlot& device : agent.devices) {
    for (int64_t job : device.holders) {
      auto it = held.begin();
      while (it != held.end() && it->first != job) ++it;
      if (it == held.end()) {
        held.emplace_back(job, 1);
      } else {
        ++it->second;
      }
    }
  }
  std::string text = agent.view->worker_id + " has " + std::to_string(agent.idle) + " free";
  if (held.empty()) return text;
  text += " (";
  int others = 0;
  for (size_t i = 0; i < held.size(); ++i) {
    if (i < kHoldersNamed) {
      if (i > 0) text += ", ";
      text += "job " + std::to_string(held[i].first) + " holds " + std::to_string(held[i].second);
    } else {
      others += held[i].second;
    }
  }
  if (held.size() > kHoldersNamed) {
    text += ", " + std::to_string(held.size() - kHoldersNamed) + " more jobs hold " +
            std::to_string(others);
  }
  return text + ")";
}

// "; warm models in use (serving requests or pinned by a serving job, so not unloaded) hold
// 24.0 GiB on node-a, 12.0 GiB on node-b", or without `detailed` "; warm models in use hold 36.0
// GiB"; "" when none holds memory on an agent with enough devices for the job. Written once per
// model, device count and generation of the pass: a long queue of one model's requests shares it.
const std::string& StuckWarmText(const JobRequest& job, const KindState& kind, bool detailed) {
  static const std::string kNone;
  if (!job.has_options() || !kind.any_warm) return kNone;
  auto& cached = kind.stuck_warm_texts[{std::string_view(job.warm_key), job.devices}];
  if (cached.generation != kind.generation + 1) {  // generation + 1: 0 is unset
    cached.generation = kind.generation + 1;
    cached.detailed.clear();
    int64_t total = 0;
    for (const AgentSlot* agent : kind.agents) {
      if (static_cast<int>(agent->devices.size()) < job.devices) continue;
      int64_t mib = 0;
      for (const DeviceSlot& device : agent->devices) mib += device.StuckWarmMib(job.warm_key);
      if (mib <= 0) continue;
      total += mib;
      cached.detailed += cached.detailed.empty()
                             ? "; warm models in use (serving requests or pinned by a serving job, so not unloaded) hold "
                             : ", ";
      cached.detailed += GiBText(mib) + " on " + agent->view->worker_id;
    }
    cached.short_text = total > 0 ? "; warm models in use hold " + GiBText(total) : "";
  }
  return detailed ? cached.detailed : cached.short_text;
}

// "; node-a is reserved for it, expected free in 30 s"
std::string ReservedForText(const Reservation& reservation, int64_t now_ms) {
  std::string text = "; " + reservation.agent->view->worker_id + " is reserved for it";
  if (reservation.start_ms == kNeverMs) return text;
  if (reservation.start_ms <= now_ms) return text + ", expected free now";
  return text + ", expected free in " + SecondsText(reservation.start_ms - now_ms);
}

}  // namespace

std::string DevicesText(int count, const std::string& kind) {
  return std::to_string(count) + " " + kind + (count == 1 ? " device" : " devices");
}

std::string SecondsText(int64_t ms) {
  if (ms % 1000 == 0) return std::to_string(ms / 1000) + " s";
  char text[32];
  std::snprintf(text, sizeof(text), "%.1f s", static_cast<double>(ms) / 1000.0);
  return text;
}

std::string GiBText(int64_t mib) {
  char text[32];
  std::snprintf(text, sizeof(text), "%.1f GiB", static_cast<double>(mib) / 1024.0);
  return text;
}

std::string NoMemoryText(const JobRequest& job, const std::vector<AgentView>& agents) {
  // The agents with enough devices, and the most memory per device among them (the job's
  // devices-th largest device of each).
  const AgentView* roomiest = nullptr;
  int64_t roomiest_mib = -1;
  for (const AgentView& agent : agents) {
    if (agent.device_kind != job.device_kind ||
        static_cast<int>(agent.devices.size()) < job.devices) {
      continue;
    }
    const int64_t mib = NthLargestTotal(agent, job.devices);
    if (mib > roomiest_mib) {
      roomiest = &agent;
      roomiest_mib = mib;
    }
  }
  if (!roomiest) return NoAgentOfKindText(job, "agent with enough devices");
  const MemoryOption& smallest = SmallestOption(job);
  if (smallest.device_mib > roomiest_mib) {
    return job.label() + " needs at least " + GiBText(smallest.device_mib) + " on each of its " +
           DevicesText(job.devices, job.device_kind) + " (" + smallest.label + "); the largest " +
           (job.devices == 1 ? "device, on " + roomiest->worker_id + ", has "
                             : "devices, on " + roomiest->worker_id + ", have ") +
           GiBText(roomiest_mib);
  }
  // Some plan fits the devices: the host is what is short.
  const MemoryOption* least_host = nullptr;
  for (const MemoryOption& option : job.options()) {
    if (option.device_mib <= roomiest_mib &&
        (!least_host || option.host_mib < least_host->host_mib)) {
      least_host = &option;
    }
  }
  const AgentView* largest = nullptr;
  for (const AgentView& agent : agents) {
    if (agent.device_kind == job.device_kind &&
        (!largest || agent.host_total_mib > largest->host_total_mib)) {
      largest = &agent;
    }
  }
  return job.label() + " needs at least " + GiBText(least_host->host_mib) + " of host memory (" +
         least_host->label + "); the largest agent, " + largest->worker_id + ", has " +
         GiBText(largest->host_total_mib);
}

std::string InvalidDevicesText(const JobRequest& job) {
  return "job needs at least 1 device, asked for " + std::to_string(job.devices);
}

std::string NoAgentOfKindText(const JobRequest& job, std::string_view which) {
  return "job needs " + DevicesText(job.devices, job.device_kind) + "; no " + std::string(which) +
         " has " + job.device_kind + " devices";
}

std::string TooLargeText(const JobRequest& job, const AgentView& largest, std::string_view which) {
  return "job needs " + DevicesText(job.devices, job.device_kind) + "; the largest " +
         std::string(which) + ", " + largest.worker_id + ", has " +
         std::to_string(largest.devices.size());
}

namespace {

// The most ranks of a gang of `total` an agent could ever hold with `option` (nullptr: memory
// unchecked): devices large enough, and its host share within the host's total memory.
int GangStaticCapacity(const AgentView& agent, const MemoryOption* option, int total) {
  int roomy = 0;
  for (const DeviceView& device : agent.devices) roomy += !option || device.total_mib >= option->device_mib;
  int ranks = std::min(roomy, total);
  if (!option || agent.host_total_mib == kUnknownMib) return ranks;
  while (ranks > 0 && (option->host_mib * ranks + total - 1) / total > agent.host_total_mib) --ranks;
  return ranks;
}

// "node-a: 2, node-b: 1, node-c has no advertise address"
std::string GangAgentsText(const JobRequest& job, const std::vector<std::pair<std::string, int>>& capacities) {
  std::string text;
  for (const auto& [worker, capacity] : capacities) {
    if (!text.empty()) text += ", ";
    text += capacity < 0 ? worker + " has no advertise address" : worker + ": " + std::to_string(capacity);
  }
  return text.empty() ? "no agent has " + job.device_kind + " devices" : text;
}

// "4 cpu devices across agents" or "2 agents with 2 cpu devices each"
std::string GangNeedText(const JobRequest& job) {
  if (job.nodes >= 2) {
    return std::to_string(job.nodes) + " agents with " + DevicesText(job.devices / job.nodes, job.device_kind) +
           " each";
  }
  return DevicesText(job.devices, job.device_kind) + " across agents";
}

}  // namespace

std::string GangUnsatisfiableText(const JobRequest& job, const std::vector<AgentView>& agents) {
  if (job.nodes >= 2 && job.devices % job.nodes != 0) {
    return "job's " + std::to_string(job.devices) + " ranks do not divide evenly among " +
           std::to_string(job.nodes) + " agents";
  }
  const int per = job.nodes >= 2 ? job.devices / job.nodes : job.devices;
  std::vector<std::pair<std::string, int>> first;  // with the first plan, for the message
  const size_t options = job.has_options() ? job.options().size() : 1;
  for (size_t o = 0; o < options; ++o) {
    const MemoryOption* option = job.has_options() ? &job.options()[o] : nullptr;
    int sum = 0, able = 0;
    for (const AgentView& agent : agents) {
      if (agent.device_kind != job.device_kind) continue;
      const int capacity = agent.advertise_addr.empty() ? -1 : GangStaticCapacity(agent, option, per);
      if (o == 0) first.emplace_back(agent.worker_id, capacity);
      sum += std::max(0, capacity);
      able += capacity >= per;
    }
    if (job.nodes >= 2 ? able >= job.nodes : sum >= job.devices) return "";
  }
  std::string text = job.label() + " needs " + GangNeedText(job);
  if (job.has_options()) text += " (" + job.options().front().label + ")";
  return text + "; the agents hold " + (job.nodes >= 2 ? "per agent " : "") + GangAgentsText(job, first);
}

std::string GangWaitingText(const JobRequest& job, const PassState& state, const KindState& kind) {
  // "node-a: 1 of 2 (1 held)", "node-b: 0 of 2 (memory)", "node-c has no advertise address"
  std::string agents;
  for (const auto& [agent, capacity] : state.GangCapacities(job, kind)) {
    if (!agents.empty()) agents += ", ";
    if (capacity < 0) {
      agents += agent->view->worker_id + " has no advertise address";
      continue;
    }
    const int devices = static_cast<int>(agent->devices.size());
    agents += agent->view->worker_id + ": " + std::to_string(capacity) + " of " + std::to_string(devices);
    if (capacity >= std::min(devices, job.devices)) continue;
    const int held = devices - agent->idle;
    agents += capacity < agent->idle ? " (memory)" : " (" + std::to_string(held) + " held)";
  }
  std::string text = "waiting for " + GangNeedText(job);
  if (job.has_options()) text += " (" + job.options().front().label + ")";
  return text + "; ranks each agent can take now: " + agents;
}

std::string WaitingText(const JobRequest& job, const PassState& state, const KindState* kind,
                        bool detailed, int waiting_ahead) {
  if (job.devices < 1) return InvalidDevicesText(job);
  if (!state.any_connected()) {
    return state.Drained("") ? "every connected agent is drained" : "no agent connected";
  }
  if (!kind) {
    return state.Drained(job.device_kind) ? NoAgentOfKindText(job, "undrained agent")
                                          : NoAgentOfKindText(job, "connected agent");
  }
  if (job.devices > static_cast<int>(kind->largest->devices.size())) {
    return TooLargeText(job, *kind->largest->view, "connected agent");
  }
  const std::optional<Reservation>& reservation = kind->reservation;
  if (state.HeldByReservation(job, *kind)) {
    return "held for job " + std::to_string(reservation->job->id) + " (priority " +
           std::to_string(reservation->job->priority) + "), which reserved " +
           reservation->agent->view->worker_id;
  }
  // One allocation for the short form, which is written for up to 100,000 jobs a pass.
  std::string text;
  text.reserve(80 + job.device_kind.size());
  text += "waiting for ";
  text += std::to_string(job.devices);
  text += " free ";
  text += job.device_kind;
  text += job.devices == 1 ? " device" : " devices";
  if (job.has_options()) {
    // One text per plans object: the requests of one model share theirs.
    std::string& need = kind->memory_need_texts[job.plans.get()];
    if (need.empty()) need = MemoryNeedText(job);
    text += need;
  }
  if (detailed) {
    for (size_t i = 0; i < kind->agents.size(); ++i) {
      text += i == 0 ? ": " : job.has_options() ? "; " : ", ";
      text += AgentText(*kind->agents[i]);
      if (job.has_options()) text += AgentMemoryText(*kind->agents[i], job.device_kind == "cuda");
    }
  } else {
    text += " (";
    text += std::to_string(waiting_ahead);
    text += waiting_ahead == 1 ? " waiting job ahead of it)" : " waiting jobs ahead of it)";
  }
  text += StuckWarmText(job, *kind, detailed);
  if (reservation && reservation->job == &job) {
    text += ReservedForText(*reservation, state.now_ms());
  }
  return text;
}

}  // namespace fuji::sched
