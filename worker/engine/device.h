// Devices and runtime settings of the engine: device strings, intra-op threads, device memory.
#pragma once

#include <cstdint>
#include <string>

#include <c10/core/Device.h>
#include <c10/core/ScalarType.h>

#include "lib/common/status.h"

namespace fuji::engine {

// "cpu", "cuda" or "cuda:i"; NOT_FOUND / INVALID_ARGUMENT when this build or machine lacks it.
Result<c10::Device> ParseDevice(const std::string& text);

// INVALID_ARGUMENT when this libtorch cannot compute in `dtype` on `device` (libtorch 1.13 has no
// fp16 LayerNorm or matmul on the CPU).
Status CheckPrecisionOnDevice(c10::ScalarType dtype, const c10::Device& device);

// Sets libtorch's intra-op threads (it defaults to one) from the cores this process may use,
// or from FUJI_THREADS. Returns the count set.
int ConfigureThreads();

// Keeps freed memory in the process for reuse: glibc otherwise serves every large allocation
// (activations, logits, gradient buffers) with a fresh mmap and unmaps it on free, so each
// training step pays the kernel for zeroing and faulting in the same gigabytes again (111M step
// on 2 cores: 5.49 s -> 4.56 s, bench/run_train_bench.sh). Buffers up to 32 MiB stay in glibc's
// heap. Larger ones (the embedding's gradients, the collectives' buffers, the logits) go through
// libtorch's CPU allocator replaced by a cache of freed blocks reused by exact size, at most
// `cache_limit_bytes` kept (a page fault costs about 4 us on the virtual machines measured here:
// a 2-rank 111M fine-tuning step faulted in about a gigabyte each, and Gloo into fresh buffers
// ran at 40 MB/s against 1 GB/s into reused ones). Exact sizes keep the heap from fragmenting:
// a step allocates the same sizes each time. The price is that a rank's resident memory stays at
// its peak until it exits, which a job's rank process does anyway. The cache needs libtorch 1.x's
// allocator interface; PyTorch 2.x builds (GPU machines) keep glibc's behaviour for large blocks.
void KeepFreedMemory(int64_t cache_limit_bytes = int64_t{2} << 30);
// Bytes of freed large blocks the cache holds now (0 without it), for tests.
int64_t CachedHostBytes();
// While one lives, memory freed goes back to the system at once: blocks of 1 MiB and more are
// mapped on their own (unmapped when freed) and the cache keeps nothing. For a load that moves
// the weights elsewhere one by one (parameter offload's shards), which would otherwise keep every
// freed weight: two copies of the model. Not nestable; one at a time.
class ReturnFreedMemory {
 public:
  ReturnFreedMemory();
  ~ReturnFreedMemory();
  ReturnFreedMemory(const ReturnFreedMemory&) = delete;
  ReturnFreedMemory& operator=(const ReturnFreedMemory&) = delete;
};

// OpenMP threads that spin after a parallel region steal the cores from OpenBLAS's threads
// (measured here: 111M decode at 6.7 tokens/s spinning, 21.8 passive). libgomp reads
// OMP_WAIT_POLICY when it loads, before main, so a process that finds it unset sets it to
// PASSIVE and re-executes itself. Call first thing in main().
void ReexecWithPassiveOpenMp(char** argv);

// Allocator peaks on a CUDA device since the last reset, in bytes; zeros on the CPU.
struct DeviceMemory {
  int64_t peak_allocated_bytes = 0;
  int64_t peak_reserved_bytes = 0;
};
DeviceMemory ReadDeviceMemory(const c10::Device& device);
void ResetDevicePeak(const c10::Device& device);
// Waits for queued device work (timings).
void SynchronizeDevice(const c10::Device& device);
// CUDA devices visible to this process (0 without CUDA).
int CudaDeviceCount();
// True when the build has CUDA support compiled in.
bool BuiltWithCuda();

}  // namespace fuji::engine
