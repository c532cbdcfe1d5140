// Device discovery for Register.
#include "worker/agent/devices.h"

#include "lib/common/proc_stats.h"

namespace fuji::agent {

std::vector<fuji::v1::Device> CpuDevices(int count) {
  const int64_t total_mib = ReadHostMemory().total_bytes / (1024 * 1024);
  std::vector<fuji::v1::Device> devices;
  for (int i = 0; i < count; ++i) {
    fuji::v1::Device d;
    d.set_index(i);
    d.set_name("cpu (host memory)");
    d.set_total_mib(total_mib);
    d.set_kind("cpu");
    devices.push_back(std::move(d));
  }
  return devices;
}

DeviceInventory DiscoverDevices(const DeviceFlag& flag, const std::string& nvml_library) {
  DeviceInventory inventory;
  if (flag.auto_detect) {
    auto loaded = nvml::Nvml::Load(nvml_library);
    if (!loaded.ok()) {
      inventory.note = loaded.status().message();
    } else if ((*loaded)->DeviceCount() == 0) {
      inventory.note = "NVML reports no GPU";
    } else {
      for (int i = 0; i < (*loaded)->DeviceCount(); ++i) {
        auto reading = (*loaded)->Read(i);
        if (!reading.ok()) continue;
        fuji::v1::Device d;
        d.set_index(i);
        d.set_name(reading->name);
        d.set_total_mib(reading->total_mib);
        d.set_kind("cuda");
        inventory.devices.push_back(std::move(d));
      }
      if (!inventory.devices.empty()) {
        inventory.nvml = std::move(loaded).value();
        return inventory;
      }
      inventory.note = "NVML could not read any GPU";
    }
  }
  inventory.devices = CpuDevices(flag.cpu_count);
  return inventory;
}

}  // namespace fuji::agent
