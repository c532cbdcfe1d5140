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
  // Rule 5: the largest weights (GPU: device weights and host memory) of each warm key once.
  std::map<std::pair<std::string, int>, std::map<std::string, int64_t>> device_weights;
  std::map<std::string, std::map<std::string, int64_t>> host_once;
  for (const Holding& holding : holdings) {
    std::vector<int> indices = holding.device_indices;
    std::sort(indices.begin(), indices.end());
    indices.erase(std::unique(indices.begin(), indices.end()), indices.end());
    for (int index : indices) holders[{holding.worker_id, index}].push_back(holding.job_id);
    if (!holding.promise) continue;
    const MemoryOption& promise = *holding.promise;
    const bool warm = !holding.warm_key.empty();
    const bool gpu = promise.device_mib > 0;
    // One rank per device and key: its host memory is shared by the jobs of its batch.
    const std::string rank =
        holding.warm_key + "@" + (indices.empty() ? std::string() : std::to_string(indices.front()));
    const int64_t weights = warm ? std::clamp<int64_t>(promise.weights_mib, 0, gpu ? promise.device_mib
                                                                                   : promise.host_mib)
                                 : 0;
    if (!warm) {
      host_promised[holding.worker_id] += promise.host_mib;
    } else if (gpu) {
      int64_t& once = host_once[holding.worker_id][rank];
      once = std::max(once, promise.host_mib);
    } else {
      host_promised[holding.worker_id] += promise.host_mib - weights;
      int64_t& once = host_once[holding.worker_id][rank];
      once = std::max(once, weights);
    }
    for (int index : holding.device_indices) {
      device_promised[{holding.worker_id, index}] += promise.device_mib - (gpu ? weights : 0);
      if (warm && gpu) {
        int64_t& once = device_weights[{holding.worker_id, index}][holding.warm_key];
        once = std::max(once, weights);
      }
    }
  }
  for (const auto& [worker, keys] : host_once) {
    for (const auto& [key, mib] : keys) host_promised[worker] += mib;
  }
  for (const auto& [device, keys] : device_weights) {
    for (const auto& [key, mib] : keys) device_promised[device] += mib;
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
