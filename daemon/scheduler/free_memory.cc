// Free memory of the agents' devices and hosts; see free_memory.h.
#include "daemon/scheduler/free_memory.h"

#include <algorithm>
#include <map>
#include <utility>

namespace fuji::sched {

int64_t FreeMib(int64_t total_mib, const std::optional<MemoryReading>& reading,
                int64_t promised_mib) {
  if (!reading) return total_mib - promised_mib;
  const int64_t others = std::max<int64_t>(0, reading->used_mib - reading->fuji_mib);
  return total_mib - others - std::max(promised_mib, reading->fuji_mib);
}

std::vector<AgentView> AgentsWithFreeMemory(const std::vector<AgentMemory>& agents,
                                            const std::vector<Holding>& holdings) {
  // What the jobs holding each host and each device were promised, and who holds each device.
  std::map<std::string, int64_t> host_promised;
  std::map<std::pair<std::string, int>, int64_t> device_promised;
  std::map<std::pair<std::string, int>, std::vector<int64_t>> holders;
  for (const Holding& holding : holdings) {
    std::vector<int> indices = holding.device_indices;
    std::sort(indices.begin(), indices.end());
    indices.erase(std::unique(indices.begin(), indices.end()), indices.end());
    for (int index : indices) holders[{holding.worker_id, index}].push_back(holding.job_id);
    if (!holding.promise) continue;
    host_promised[holding.worker_id] += holding.promise->host_mib;
    for (int index : holding.device_indices) {
      device_promised[{holding.worker_id, index}] += holding.promise->device_mib;
    }
  }

  std::vector<AgentView> views;
  views.reserve(agents.size());
  for (const AgentMemory& agent : agents) {
    AgentView view;
    view.worker_id = agent.worker_id;
    view.connected = agent.connected;
    view.drained = agent.drained;
    view.device_kind = agent.devices.empty() ? "cpu" : agent.devices.front().kind;
    const int64_t host_promise = host_promised[agent.worker_id];
    if (agent.host) {
      view.host_total_mib = agent.host->total_mib;
      view.host_free_mib = FreeMib(view.host_total_mib, agent.host->reading, host_promise);
    } else if (view.device_kind == "cpu" && !agent.devices.empty()) {
      view.host_total_mib = agent.devices.front().total_mib;  // rule 3
      view.host_free_mib = FreeMib(view.host_total_mib, std::nullopt, host_promise);
    }
    for (const DeviceMemory& device : agent.devices) {
      DeviceView device_view;
      device_view.index = device.index;
      device_view.total_mib = device.total_mib;
      device_view.shareable = true;  // rule 4
      const std::pair<std::string, int> key{agent.worker_id, device.index};
      if (device.kind == "cpu" && view.host_free_mib != kUnknownMib) {
        device_view.free_mib = view.host_free_mib;  // rule 3
      } else {
        device_view.free_mib = FreeMib(device.total_mib, device.reading, device_promised[key]);
      }
      if (const auto it = holders.find(key); it != holders.end()) device_view.jobs = it->second;
      view.devices.push_back(std::move(device_view));
    }
    views.push_back(std::move(view));
  }
  return views;
}

}  // namespace fuji::sched
