// Memory samples, nvidia-smi style: per GPU with NVML, else one host-memory reading per job.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>
#include <vector>

#include "fuji/v1/jobs.pb.h"
#include "lib/nvml/nvml.h"

namespace fuji::agent {

// One reading of host memory: device_index -1, "host memory", used = MemTotal - MemAvailable,
// process_mib = the resident memory of pids (the job's ranks).
fuji::v1::MemorySample HostSample(const std::vector<pid_t>& pids, const std::string& worker_id, int64_t at_ms);

// One reading per device index through NVML; process_mib sums the job's pids in the device's
// compute-process list. Devices NVML cannot read are skipped.
std::vector<fuji::v1::MemorySample> GpuSamples(const nvml::Nvml& nvml, const std::vector<int>& device_indices,
                                               const std::vector<pid_t>& pids, const std::string& worker_id,
                                               int64_t at_ms);

// The node's memory for the scheduler (Register and Heartbeat): one host reading and, with NVML,
// one per GPU of `devices`; process_mib counts every pid of `pids` (all of the agent's ranks).
std::vector<fuji::v1::MemorySample> NodeSamples(const nvml::Nvml* nvml, const std::vector<fuji::v1::Device>& devices,
                                                const std::vector<pid_t>& pids, const std::string& worker_id,
                                                int64_t at_ms);

}  // namespace fuji::agent
