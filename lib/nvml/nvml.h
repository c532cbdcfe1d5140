// NVML, loaded at run time with dlopen so that one fuji-agent binary runs with or without a driver.
// Only the few functions fuji uses are declared here; no NVML header or library at build time.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>

#include "lib/common/status.h"

namespace fuji::nvml {

struct GpuReading {
  std::string name;
  int64_t total_mib = 0;
  int64_t used_mib = 0;
  int32_t utilization_pct = 0;
};

// An initialized NVML. The destructor calls nvmlShutdown and dlcloses the library.
// Thread-safe once loaded (NVML's own calls are thread-safe and this class holds no mutable state).
class Nvml {
 public:
  // UNAVAILABLE "no NVML: ..." when the library is absent or nvmlInit fails.
  static Result<std::unique_ptr<Nvml>> Load(const std::string& library = "libnvidia-ml.so.1");
  ~Nvml();
  Nvml(const Nvml&) = delete;
  Nvml& operator=(const Nvml&) = delete;

  int DeviceCount() const;
  Result<GpuReading> Read(int index) const;
  // GPU memory used by each compute process on the device, MiB by pid.
  Result<std::map<pid_t, int64_t>> ProcessMib(int index) const;

 private:
  struct Api;
  explicit Nvml(std::unique_ptr<Api> api);
  std::unique_ptr<Api> api_;
};

}  // namespace fuji::nvml
