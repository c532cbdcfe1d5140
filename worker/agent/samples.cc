// Building memory samples from /proc and NVML.
#include "worker/agent/samples.h"

#include "lib/common/proc_stats.h"

namespace fuji::agent {

constexpr int64_t kMiB = 1024 * 1024;

fuji::v1::MemorySample HostSample(const std::vector<pid_t>& pids, const std::string& worker_id, int64_t at_ms) {
  const HostMemory host = ReadHostMemory();
  int64_t rss = 0;
  for (pid_t pid : pids) rss += RssBytes(pid);
  fuji::v1::MemorySample s;
  s.set_at_ms(at_ms);
  s.set_worker_id(worker_id);
  s.set_device_index(-1);
  s.set_device_name("host memory");
  s.set_used_mib((host.total_bytes - host.available_bytes) / kMiB);
  s.set_total_mib(host.total_bytes / kMiB);
  s.set_utilization_pct(0);
  s.set_process_mib(rss / kMiB);
  s.set_host_memory(true);
  return s;
}

std::vector<fuji::v1::MemorySample> GpuSamples(const nvml::Nvml& nvml, const std::vector<int>& device_indices,
                                               const std::vector<pid_t>& pids, const std::string& worker_id,
                                               int64_t at_ms) {
  std::vector<fuji::v1::MemorySample> samples;
  for (int index : device_indices) {
    auto reading = nvml.Read(index);
    if (!reading.ok()) continue;
    int64_t process_mib = 0;
    if (auto by_pid = nvml.ProcessMib(index); by_pid.ok()) {
      for (pid_t pid : pids) {
        if (auto it = by_pid->find(pid); it != by_pid->end()) process_mib += it->second;
      }
    }
    fuji::v1::MemorySample s;
    s.set_at_ms(at_ms);
    s.set_worker_id(worker_id);
    s.set_device_index(index);
    s.set_device_name(reading->name);
    s.set_used_mib(reading->used_mib);
    s.set_total_mib(reading->total_mib);
    s.set_utilization_pct(reading->utilization_pct);
    s.set_process_mib(process_mib);
    s.set_host_memory(false);
    samples.push_back(std::move(s));
  }
  return samples;
}

std::vector<fuji::v1::MemorySample> NodeSamples(const nvml::Nvml* nvml, const std::vector<fuji::v1::Device>& devices,
                                                const std::vector<pid_t>& pids, const std::string& worker_id,
                                                int64_t at_ms) {
  std::vector<fuji::v1::MemorySample> samples{HostSample(pids, worker_id, at_ms)};
  if (nvml == nullptr) return samples;
  std::vector<int> indices;
  for (const fuji::v1::Device& device : devices) indices.push_back(device.index());
  for (auto& s : GpuSamples(*nvml, indices, pids, worker_id, at_ms)) samples.push_back(std::move(s));
  return samples;
}

}  // namespace fuji::agent
