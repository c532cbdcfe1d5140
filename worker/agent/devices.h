// The devices a node offers: NVML's GPUs, or CPU devices backed by host memory.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "fuji/v1/jobs.pb.h"
#include "worker/agent/agent_config.h"
#include "lib/nvml/nvml.h"

namespace fuji::agent {

struct DeviceInventory {
  std::vector<fuji::v1::Device> devices;  // what Register offers
  std::unique_ptr<nvml::Nvml> nvml;             // null when the devices are CPUs
  std::string note;                       // why NVML was not used ("no NVML: ..."), for the log
  bool is_cuda() const { return nvml != nullptr; }
};

// auto: NVML's GPUs if the library loads and reports at least one, else flag.cpu_count CPU devices.
// cpu:N: N CPU devices "cpu (host memory)" of the host's MemTotal each.
DeviceInventory DiscoverDevices(const DeviceFlag& flag, const std::string& nvml_library);

// N CPU devices, indices 0..N-1.
std::vector<fuji::v1::Device> CpuDevices(int count);

}  // namespace fuji::agent
