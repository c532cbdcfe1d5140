// The NVML loader: dlopen, the handful of symbols the agent needs, and RAII shutdown.
#include "lib/nvml/nvml.h"

#include <dlfcn.h>

#include <vector>

namespace fuji::nvml {
namespace {

// The subset of nvml.h the agent needs, declared here so that nothing of NVML is needed to build.
using nvmlReturn_t = int;
using nvmlDevice_t = struct nvmlDevice_st*;
constexpr nvmlReturn_t kNvmlSuccess = 0;
constexpr nvmlReturn_t kNvmlInsufficientSize = 7;
constexpr unsigned long long kNvmlValueNotAvailable = ~0ULL;
struct nvmlMemory_t {
  unsigned long long total, free, used;
};
struct nvmlUtilization_t {
  unsigned int gpu, memory;
};
// The layout of nvmlProcessInfo_t as the _v2 and _v3 calls fill it.
struct nvmlProcessInfo_t {
  unsigned int pid;
  unsigned long long usedGpuMemory;
  unsigned int gpuInstanceId;
  unsigned int computeInstanceId;
};

constexpr int64_t kMiB = 1024 * 1024;

}  // namespace

struct Nvml::Api {
  void* library = nullptr;
  nvmlReturn_t (*init)() = nullptr;
  nvmlReturn_t (*shutdown)() = nullptr;
  nvmlReturn_t (*count)(unsigned int*) = nullptr;
  nvmlReturn_t (*handle)(unsigned int, nvmlDevice_t*) = nullptr;
  nvmlReturn_t (*name)(nvmlDevice_t, char*, unsigned int) = nullptr;
  nvmlReturn_t (*memory)(nvmlDevice_t, nvmlMemory_t*) = nullptr;
  nvmlReturn_t (*utilization)(nvmlDevice_t, nvmlUtilization_t*) = nullptr;
  nvmlReturn_t (*processes)(nvmlDevice_t, unsigned int*, nvmlProcessInfo_t*) = nullptr;

  ~Api() {
    if (shutdown != nullptr) shutdown();
    if (library != nullptr) ::dlclose(library);
  }
};

Result<std::unique_ptr<Nvml>> Nvml::Load(const std::string& library) {
  auto api = std::make_unique<Api>();
  api->library = ::dlopen(library.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (api->library == nullptr) {
    const char* why = ::dlerror();
    return Unavailable("no NVML: " + (why ? std::string(why) : library + " not found"));
  }
  auto bind = [&](auto& fn, const char* symbol) {
    fn = reinterpret_cast<std::remove_reference_t<decltype(fn)>>(::dlsym(api->library, symbol));
    return fn != nullptr;
  };
  if (!bind(api->init, "nvmlInit_v2") || !bind(api->count, "nvmlDeviceGetCount_v2") ||
      !bind(api->handle, "nvmlDeviceGetHandleByIndex_v2") || !bind(api->name, "nvmlDeviceGetName") ||
      !bind(api->memory, "nvmlDeviceGetMemoryInfo") ||
      !bind(api->utilization, "nvmlDeviceGetUtilizationRates")) {
    return Unavailable("no NVML: " + library + " lacks the functions fuji needs");
  }
  if (!bind(api->processes, "nvmlDeviceGetComputeRunningProcesses_v3")) {
    bind(api->processes, "nvmlDeviceGetComputeRunningProcesses_v2");
  }
  decltype(api->shutdown) shutdown = nullptr;
  bind(shutdown, "nvmlShutdown");
  if (const nvmlReturn_t rc = api->init(); rc != kNvmlSuccess) {
    return Unavailable("no NVML: nvmlInit_v2 failed with code " + std::to_string(rc));
  }
  api->shutdown = shutdown;  // only once initialized
  return std::unique_ptr<Nvml>(new Nvml(std::move(api)));
}

Nvml::Nvml(std::unique_ptr<Api> api) : api_(std::move(api)) {}
Nvml::~Nvml() = default;

int Nvml::DeviceCount() const {
  unsigned int n = 0;
  if (api_->count(&n) != kNvmlSuccess) return 0;
  return static_cast<int>(n);
}

Result<GpuReading> Nvml::Read(int index) const {
  nvmlDevice_t device = nullptr;
  if (nvmlReturn_t rc = api_->handle(static_cast<unsigned int>(index), &device); rc != kNvmlSuccess) {
    return Unavailable("NVML: no handle for device " + std::to_string(index) + " (code " + std::to_string(rc) + ")");
  }
  GpuReading reading;
  char name[96] = {};
  if (api_->name(device, name, sizeof(name)) == kNvmlSuccess) reading.name = name;
  nvmlMemory_t memory{};
  if (nvmlReturn_t rc = api_->memory(device, &memory); rc != kNvmlSuccess) {
    return Unavailable("NVML: no memory info for device " + std::to_string(index) + " (code " + std::to_string(rc) + ")");
  }
  reading.total_mib = static_cast<int64_t>(memory.total / kMiB);
  reading.used_mib = static_cast<int64_t>(memory.used / kMiB);
  nvmlUtilization_t utilization{};
  if (api_->utilization(device, &utilization) == kNvmlSuccess) {
    reading.utilization_pct = static_cast<int32_t>(utilization.gpu);
  }
  return reading;
}

Result<std::map<pid_t, int64_t>> Nvml::ProcessMib(int index) const {
  std::map<pid_t, int64_t> by_pid;
  if (api_->processes == nullptr) return by_pid;
  nvmlDevice_t device = nullptr;
  if (api_->handle(static_cast<unsigned int>(index), &device) != kNvmlSuccess) {
    return Unavailable("NVML: no handle for device " + std::to_string(index));
  }
  std::vector<nvmlProcessInfo_t> infos(16);
  for (int tries = 0; tries < 4; ++tries) {
    unsigned int n = static_cast<unsigned int>(infos.size());
    const nvmlReturn_t rc = api_->processes(device, &n, infos.data());
    if (rc == kNvmlInsufficientSize) {
      infos.resize(n + 16);
      continue;
    }
    if (rc != kNvmlSuccess) return Unavailable("NVML: compute processes: code " + std::to_string(rc));
    for (unsigned int i = 0; i < n; ++i) {
      const unsigned long long used = infos[i].usedGpuMemory;
      by_pid[static_cast<pid_t>(infos[i].pid)] += used == kNvmlValueNotAvailable ? 0 : static_cast<int64_t>(used / kMiB);
    }
    return by_pid;
  }
  return Unavailable("NVML: the compute process list keeps growing");
}

}  // namespace fuji::nvml
