// CPU AdamW for optimizer offload: fp32 master weights and moments in host memory, updated in
// one fused pass per element (grads in fp32, bf16 or fp16; optional bf16/fp16 compute copy out),
// over a persistent thread pool. Torch-free; matches torch.optim.AdamW to float rounding.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "lib/common/status.h"

namespace fuji::optim {

// Storage type of gradients and of the compute copy of the parameters.
enum class Precision { kF32, kBF16, kF16 };

struct AdamWConfig {
  double lr = 1e-4;
  double beta1 = 0.9;
  double beta2 = 0.95;
  double eps = 1e-8;
  double weight_decay = 0.1;  // decoupled; applied only to shards with decay == true

  Status Validate() const;
};

// One contiguous piece of the flat parameter buffer. The optimizer updates master, exp_avg and
// exp_avg_sq in place; grad is read only (as `grad_precision`); when param_out is set, the
// updated parameters are also written there as `param_out_precision` (round to nearest even),
// in the same pass. Biases and LayerNorm parameters are shards with decay = false.
struct AdamWShard {
  float* master = nullptr;
  float* exp_avg = nullptr;
  float* exp_avg_sq = nullptr;
  const void* grad = nullptr;
  Precision grad_precision = Precision::kF32;
  void* param_out = nullptr;  // nullable
  Precision param_out_precision = Precision::kBF16;
  int64_t n = 0;
  bool decay = true;
};

// One AdamW step, exactly torch.optim.AdamW's order of operations in float arithmetic:
//   g = grad * (1 / grad_scale)
//   p *= 1 - lr * wd                                  (decoupled weight decay, if decay)
//   m = m * b1 + g * (1 - b1);   v = v * b2 + (1 - b2) * g * g
//   p += -(lr / bc1) * m / (sqrt(v) / sqrt(bc2) + eps),   bc_i = 1 - b_i^step
// grad_scale folds loss scaling and gradient clipping (loss_scale * max(1, norm / max_norm)) into
// the step, so there is no separate pass over the gradients. step counts from 1.
// Single-threaded; results are bitwise identical to CpuAdamW::Step with any thread count.
Status AdamWStep(const AdamWConfig& config, int64_t step, float grad_scale,
                 const AdamWShard& shard);

// Convenience overloads of AdamWStep for one decayed shard with fp32 or bf16 grads.
Status AdamWStep(const AdamWConfig& config, int64_t step, float grad_scale, float* master,
                 float* exp_avg, float* exp_avg_sq, const float* grad, int64_t n,
                 uint16_t* bf16_out /*nullable*/);
Status AdamWStep(const AdamWConfig& config, int64_t step, float grad_scale, float* master,
                 float* exp_avg, float* exp_avg_sq, const uint16_t* bf16_grad, int64_t n,
                 uint16_t* bf16_out /*nullable*/);

// Sum of squares of a gradient buffer in double (for the global gradient norm; inf or NaN when any
// element is, which is how fp16 loss scaling detects overflow). Blocked so that the result does
// not depend on the number of threads: CpuAdamW::SumOfSquares returns the same bits.
double SumOfSquares(const float* g, int64_t n);
double SumOfSquares(const uint16_t* g, int64_t n, Precision precision);  // kBF16 or kF16

// Multithreaded driver: a pool of `threads` - 1 workers kept alive (blocking on a condition
// variable between calls) plus the calling thread. Work is split into contiguous, cache-line
// aligned ranges of the concatenated shards. Not OpenMP (libtorch links its own runtime).
// One call at a time: Step and SumOfSquares are not reentrant on the same object.
class CpuAdamW {
 public:
  explicit CpuAdamW(int threads = 0);  // 0: std::thread::hardware_concurrency()
  ~CpuAdamW();
  CpuAdamW(const CpuAdamW&) = delete;
  CpuAdamW& operator=(const CpuAdamW&) = delete;

  int threads() const;

  Status Step(const AdamWConfig& config, int64_t step, float grad_scale,
              const std::vector<AdamWShard>& shards);
  Status Step(const AdamWConfig& config, int64_t step, float grad_scale, const AdamWShard& shard);

  double SumOfSquares(const float* g, int64_t n);
  double SumOfSquares(const uint16_t* g, int64_t n, Precision precision);

 private:
  class Pool;
  std::unique_ptr<Pool> pool_;
};

}  // namespace fuji::optim
