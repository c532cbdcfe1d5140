// Device parsing, threads and CUDA allocator statistics.
#include "worker/engine/device.h"

#include <malloc.h>

#include <atomic>
#include <unistd.h>

#include <cstdlib>
#include <limits>
#include <map>
#include <mutex>
#include <new>
#include <unordered_map>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/core/CPUAllocator.h>
#include <torch/cuda.h>
#include <torch/version.h>

#include "lib/common/proc_stats.h"

#ifdef FUJI_WITH_CUDA
#include <c10/cuda/CUDACachingAllocator.h>
#endif

namespace fuji::engine {

int CudaDeviceCount() {
  return torch::cuda::is_available() ? static_cast<int>(torch::cuda::device_count()) : 0;
}

bool BuiltWithCuda() {
#ifdef FUJI_WITH_CUDA
  return true;
#else
  return false;
#endif
}

Result<c10::Device> ParseDevice(const std::string& text) {
  if (text == "cpu") return c10::Device(c10::kCPU);
  if (text == "cuda" || text.rfind("cuda:", 0) == 0) {
    int index = 0;
    if (text.size() > 5) {
      const std::string digits = text.substr(5);
      if (digits.empty() || digits.size() > 3 || digits.find_first_not_of("0123456789") != std::string::npos) {
        return InvalidArgument("bad device '" + text + "' (cpu, cuda or cuda:N)");
      }
      index = std::stoi(digits);
    }
    if (!torch::cuda::is_available()) {
      return NotFound("device '" + text + "': no CUDA device is available to this build of fuji-rank");
    }
    if (index >= static_cast<int>(torch::cuda::device_count())) {
      return NotFound("device '" + text + "': only " + std::to_string(torch::cuda::device_count()) +
                      " CUDA devices");
    }
    return c10::Device(c10::kCUDA, static_cast<c10::DeviceIndex>(index));
  }
  return InvalidArgument("bad device '" + text + "' (cpu, cuda or cuda:N)");
}

Status CheckPrecisionOnDevice(c10::ScalarType dtype, const c10::Device& device) {
#if TORCH_VERSION_MAJOR < 2
  if (dtype == c10::kHalf && device.is_cpu()) {
    return InvalidArgument("fp16 on the CPU needs libtorch 2 or later (this is " TORCH_VERSION
                           "); use bf16 or fp32 on the CPU, or fp16 on a CUDA device");
  }
#endif
  return Status::Ok();
}

int ConfigureThreads() {
  int threads = UsableCores();
  if (const char* env = std::getenv("FUJI_THREADS"); env != nullptr && std::atoi(env) > 0) {
    threads = std::atoi(env);
  }
  at::set_num_threads(threads);
  return threads;
}

#if TORCH_VERSION_MAJOR < 2
namespace {

// libtorch's CPU allocator with freed blocks of at least kMinBytes kept for reuse by exact size.
// Smaller ones go to the allocator it replaces. Thread-safe (Gloo's and OpenMP's threads free).
class LargeBlockCache final : public c10::Allocator {
 public:
  static constexpr size_t kMinBytes = size_t{32} << 20;
  static constexpr size_t kAlignment = 64;  // libtorch's CPU alignment

  LargeBlockCache(c10::Allocator* fallback, size_t limit) : fallback_(fallback), limit_(limit) {}

  c10::DataPtr allocate(size_t n) const override {
    if (n < kMinBytes) return fallback_->allocate(n);
    void* p = Take(n);
    if (p == nullptr && ::posix_memalign(&p, kAlignment, n) != 0) throw std::bad_alloc();
    {
      std::lock_guard<std::mutex> lock(mu_);
      live_[p] = n;
    }
    return {p, p, &Release, c10::Device(c10::DeviceType::CPU)};
  }
  c10::DeleterFnPtr raw_deleter() const override { return &Release; }

  int64_t cached() const {
    std::lock_guard<std::mutex> lock(mu_);
    return static_cast<int64_t>(kept_);
  }

  static LargeBlockCache* instance;
  static std::atomic<bool> keep_nothing;  // ReturnFreedMemory

 private:
  static void Release(void* p) {
    if (p != nullptr) instance->Give(p);
  }
  // A kept block of exactly n bytes, or null.
  void* Take(size_t n) const {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = free_.find(n);
    if (it == free_.end()) return nullptr;
    void* p = it->second;
    free_.erase(it);
    kept_ -= n;
    return p;
  }
  void Give(void* p) const {
    std::unique_lock<std::mutex> lock(mu_);
    auto it = live_.find(p);
    if (it == live_.end()) {
      // A small block handed out by raw_allocate (the fallback's, under our raw_deleter).
      lock.unlock();
      const c10::DeleterFnPtr deleter = fallback_->raw_deleter();
      if (deleter != nullptr) {
        deleter(p);
      } else {
        std::free(p);  // libtorch's CPU memory comes from posix_memalign
      }
      return;
    }
    const size_t n = it->second;
    live_.erase(it);
    if (kept_ + n > limit_ || keep_nothing.load(std::memory_order_relaxed)) {
      lock.unlock();
      std::free(p);
      return;
    }
    free_.emplace(n, p);
    kept_ += n;
  }

  c10::Allocator* fallback_;
  const size_t limit_;
  mutable std::mutex mu_;
  mutable std::unordered_map<void*, size_t> live_;
  mutable std::multimap<size_t, void*> free_;
  mutable size_t kept_ = 0;
};
LargeBlockCache* LargeBlockCache::instance = nullptr;
std::atomic<bool> LargeBlockCache::keep_nothing{false};

}  // namespace
#endif

void KeepFreedMemory(int64_t cache_limit_bytes) {
  // Buffers up to glibc's largest mmap threshold (32 MiB: a block's activations and gradients)
  // come from the heap and stay there for reuse; larger ones come from the cache below.
  ::mallopt(M_MMAP_THRESHOLD, 32 << 20);
  ::mallopt(M_TRIM_THRESHOLD, std::numeric_limits<int>::max());
#if TORCH_VERSION_MAJOR < 2
  if (cache_limit_bytes > 0 && LargeBlockCache::instance == nullptr) {
    // Lives as long as the process: tensors may be freed during exit.
    LargeBlockCache::instance = new LargeBlockCache(c10::GetCPUAllocator(), static_cast<size_t>(cache_limit_bytes));
    c10::SetCPUAllocator(LargeBlockCache::instance, /*priority=*/1);
  }
#else
  (void)cache_limit_bytes;
#endif
}

ReturnFreedMemory::ReturnFreedMemory() {
  ::mallopt(M_MMAP_THRESHOLD, 1 << 20);
#if TORCH_VERSION_MAJOR < 2
  LargeBlockCache::keep_nothing = true;
#endif
}

ReturnFreedMemory::~ReturnFreedMemory() {
  ::mallopt(M_MMAP_THRESHOLD, 32 << 20);  // KeepFreedMemory's
#if TORCH_VERSION_MAJOR < 2
  LargeBlockCache::keep_nothing = false;
#endif
  ::malloc_trim(0);
}

int64_t CachedHostBytes() {
#if TORCH_VERSION_MAJOR < 2
  return LargeBlockCache::instance != nullptr ? LargeBlockCache::instance->cached() : 0;
#else
  return 0;
#endif
}

void ReexecWithPassiveOpenMp(char** argv) {
  if (std::getenv("OMP_WAIT_POLICY") != nullptr) return;
  ::setenv("OMP_WAIT_POLICY", "PASSIVE", 1);
  // The real path rather than /proc/self/exe, so that the process keeps its name (ps, pgrep).
  char path[4096];
  const ssize_t n = ::readlink("/proc/self/exe", path, sizeof(path) - 1);
  if (n <= 0) return;
  path[n] = '\0';
  ::execv(path, argv);  // returns only on failure: then run as we are
}

#ifdef FUJI_WITH_CUDA
namespace {
// The caching allocator sizes its per-device state when CUDA is first used; its statistics calls
// refuse a device before that ("Invalid device argument"). Allocating on the device initializes it.
void InitCuda(const c10::Device& device) { (void)at::empty({1}, at::TensorOptions().device(device)); }
}  // namespace
#endif

DeviceMemory ReadDeviceMemory(const c10::Device& device) {
  DeviceMemory m;
#ifdef FUJI_WITH_CUDA
  if (device.is_cuda()) {
    InitCuda(device);
    const auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(device.index());
    // Index 0 is the aggregate over pool types in every libtorch version.
    m.peak_allocated_bytes = stats.allocated_bytes[0].peak;
    m.peak_reserved_bytes = stats.reserved_bytes[0].peak;
  }
#endif
  return m;
}

void ResetDevicePeak(const c10::Device& device) {
#ifdef FUJI_WITH_CUDA
  if (device.is_cuda()) {
    InitCuda(device);
    c10::cuda::CUDACachingAllocator::resetPeakStats(device.index());
  }
#endif
}

void SynchronizeDevice(const c10::Device& device) {
  if (device.is_cuda()) torch::cuda::synchronize(device.index());
}

}  // namespace fuji::engine
