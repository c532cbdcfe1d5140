// The fused CPU AdamW kernels (plain loops that GCC vectorizes; target_clones picks AVX-512, AVX2
// or baseline at run time), the blocked sum of squares, and the persistent thread pool that drives
// them. Built with -ffp-contract=off so that vector body, scalar tail and every clone round alike.
#include "worker/optim/adamw.h"

#include <algorithm>
#include <cmath>
#include <condition_variable>
#include <cstring>
#include <functional>
#include <mutex>
#include <string>
#include <thread>

#include "lib/common/half.h"
#include "lib/common/multiversion.h"

namespace fuji::optim {
namespace {

template <Precision P>
inline float LoadAs(const void* base, int64_t i) {
  if constexpr (P == Precision::kF32) {
    return static_cast<const float*>(base)[i];
  } else if constexpr (P == Precision::kBF16) {
    return Bf16ToFloat(static_cast<const uint16_t*>(base)[i]);
  } else {
    return F16ToFloat(static_cast<const uint16_t*>(base)[i]);
  }
}

// The step's scalars, rounded to float once as libtorch does when it applies a double scalar to a
// float tensor.
struct Coefs {
  float inv_scale, decay_mul, b1, one_minus_b1, b2, one_minus_b2, bc2_sqrt, eps, neg_step_size;
};

Coefs MakeCoefs(const AdamWConfig& c, int64_t step, float grad_scale, bool decay) {
  const double s = static_cast<double>(step);
  const double bc1 = 1.0 - std::pow(c.beta1, s);
  const double bc2 = 1.0 - std::pow(c.beta2, s);
  Coefs k;
  k.inv_scale = 1.0f / grad_scale;
  k.decay_mul = decay ? static_cast<float>(1.0 - c.lr * c.weight_decay) : 1.0f;
  k.b1 = static_cast<float>(c.beta1);
  k.one_minus_b1 = static_cast<float>(1.0 - c.beta1);
  k.b2 = static_cast<float>(c.beta2);
  k.one_minus_b2 = static_cast<float>(1.0 - c.beta2);
  k.bc2_sqrt = static_cast<float>(std::sqrt(bc2));
  k.eps = static_cast<float>(c.eps);
  k.neg_step_size = static_cast<float>(-(c.lr / bc1));
  return k;
}

// kOut: 0 none, 1 fp32, 2 bf16, 3 fp16. Operation order is torch's (see adamw.h).
template <Precision G, int kOut>
inline void Update(const Coefs& k, float* __restrict p, float* __restrict m, float* __restrict v,
                   const void* __restrict g, void* __restrict out, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    const float gi = LoadAs<G>(g, i) * k.inv_scale;
    const float pi = p[i] * k.decay_mul;
    const float mi = m[i] * k.b1 + k.one_minus_b1 * gi;
    const float vi = v[i] * k.b2 + k.one_minus_b2 * gi * gi;
    const float denom = std::sqrt(vi) / k.bc2_sqrt + k.eps;
    const float pn = pi + k.neg_step_size * mi / denom;
    p[i] = pn;
    m[i] = mi;
    v[i] = vi;
    if constexpr (kOut == 1) static_cast<float*>(out)[i] = pn;
    if constexpr (kOut == 2) static_cast<uint16_t*>(out)[i] = FloatToBf16(pn);
    if constexpr (kOut == 3) static_cast<uint16_t*>(out)[i] = FloatToF16(pn);
  }
}

using UpdateFn = void (*)(const Coefs&, float*, float*, float*, const void*, void*, int64_t);

#define FUJI_UPDATE(name, G, OUT)                                                          \
  FUJI_MULTIVERSION void name(const Coefs& k, float* p, float* m, float* v, const void* g, \
                              void* out, int64_t n) {                                      \
    Update<G, OUT>(k, p, m, v, g, out, n);                                                 \
  }
FUJI_UPDATE(UpdateF32None, Precision::kF32, 0)
FUJI_UPDATE(UpdateF32F32, Precision::kF32, 1)
FUJI_UPDATE(UpdateF32Bf16, Precision::kF32, 2)
FUJI_UPDATE(UpdateF32F16, Precision::kF32, 3)
FUJI_UPDATE(UpdateBf16None, Precision::kBF16, 0)
FUJI_UPDATE(UpdateBf16F32, Precision::kBF16, 1)
FUJI_UPDATE(UpdateBf16Bf16, Precision::kBF16, 2)
FUJI_UPDATE(UpdateBf16F16, Precision::kBF16, 3)
FUJI_UPDATE(UpdateF16None, Precision::kF16, 0)
FUJI_UPDATE(UpdateF16F32, Precision::kF16, 1)
FUJI_UPDATE(UpdateF16Bf16, Precision::kF16, 2)
FUJI_UPDATE(UpdateF16F16, Precision::kF16, 3)
#undef FUJI_UPDATE

int OutIndex(const AdamWShard& s) {
  if (s.param_out == nullptr) return 0;
  switch (s.param_out_precision) {
    case Precision::kF32: return 1;
    case Precision::kBF16: return 2;
    case Precision::kF16: return 3;
  }
  return 0;
}

UpdateFn PickUpdate(const AdamWShard& s) {
  static constexpr UpdateFn kTable[3][4] = {
      {UpdateF32None, UpdateF32F32, UpdateF32Bf16, UpdateF32F16},
      {UpdateBf16None, UpdateBf16F32, UpdateBf16Bf16, UpdateBf16F16},
      {UpdateF16None, UpdateF16F32, UpdateF16Bf16, UpdateF16F16},
  };
  return kTable[static_cast<int>(s.grad_precision)][OutIndex(s)];
}

size_t ElementSize(Precision p) {
  return p == Precision::kF32 ? 4 : 2;
}

// Elements [lo, hi) of one shard.
void StepRange(const AdamWConfig& config, int64_t step, float grad_scale, const AdamWShard& s,
               int64_t lo, int64_t hi) {
  if (lo >= hi) return;
  const Coefs k = MakeCoefs(config, step, grad_scale, s.decay);
  const void* g = static_cast<const char*>(s.grad) + lo * ElementSize(s.grad_precision);
  void* out = s.param_out == nullptr
                  ? nullptr
                  : static_cast<char*>(s.param_out) + lo * ElementSize(s.param_out_precision);
  PickUpdate(s)(k, s.master + lo, s.exp_avg + lo, s.exp_avg_sq + lo, g, out, hi - lo);
}

Status ValidateStep(const AdamWConfig& config, int64_t step, float grad_scale) {
  Status s = config.Validate();
  if (!s.ok()) return s;
  if (step < 1) return InvalidArgument("AdamW step must be >= 1, got " + std::to_string(step));
  if (!(grad_scale > 0) || !std::isfinite(grad_scale)) {
    return InvalidArgument("AdamW grad_scale must be positive and finite, got " +
                           std::to_string(grad_scale));
  }
  return Status::Ok();
}

Status ValidateShard(const AdamWShard& s) {
  if (s.n < 0) return InvalidArgument("AdamW shard with negative length");
  if (s.n > 0 && (!s.master || !s.exp_avg || !s.exp_avg_sq || !s.grad)) {
    return InvalidArgument("AdamW shard with a null master, moment or gradient buffer");
  }
  return Status::Ok();
}

// Sum of squares: fixed blocks, each summed in eight double lanes; blocks are added in order.
constexpr int64_t kSumBlock = int64_t{1} << 15;

template <Precision P>
inline double BlockSumOfSquares(const void* g, int64_t lo, int64_t hi) {
  constexpr int kLanes = 8;
  double lanes[kLanes] = {};
  int64_t i = lo;
  for (; i + kLanes <= hi; i += kLanes) {
    for (int j = 0; j < kLanes; ++j) {
      const double x = LoadAs<P>(g, i + j);
      lanes[j] += x * x;
    }
  }
  double sum = 0;
  for (; i < hi; ++i) {
    const double x = LoadAs<P>(g, i);
    sum += x * x;
  }
  for (int j = 0; j < kLanes; ++j) sum += lanes[j];
  return sum;
}

FUJI_MULTIVERSION void BlocksF32(const void* g, int64_t n, int64_t b0, int64_t b1, double* out) {
  for (int64_t b = b0; b < b1; ++b) {
    out[b] = BlockSumOfSquares<Precision::kF32>(g, b * kSumBlock, std::min(n, (b + 1) * kSumBlock));
  }
}
FUJI_MULTIVERSION void BlocksBf16(const void* g, int64_t n, int64_t b0, int64_t b1, double* out) {
  for (int64_t b = b0; b < b1; ++b) {
    out[b] =
        BlockSumOfSquares<Precision::kBF16>(g, b * kSumBlock, std::min(n, (b + 1) * kSumBlock));
  }
}
FUJI_MULTIVERSION void BlocksF16(const void* g, int64_t n, int64_t b0, int64_t b1, double* out) {
  for (int64_t b = b0; b < b1; ++b) {
    out[b] = BlockSumOfSquares<Precision::kF16>(g, b * kSumBlock, std::min(n, (b + 1) * kSumBlock));
  }
}

using BlocksFn = void (*)(const void*, int64_t, int64_t, int64_t, double*);
BlocksFn PickBlocks(Precision p) {
  switch (p) {
    case Precision::kF32: return BlocksF32;
    case Precision::kBF16: return BlocksBf16;
    case Precision::kF16: return BlocksF16;
  }
  return BlocksF32;
}

// Runs f(t) for t in [0, threads): on the pool when there is one, else inline.
double SumOfSquaresWith(const std::function<void(const std::function<void(int)>&)>& run,
                        int threads, const void* g, int64_t n, Precision p) {
  if (n <= 0) return 0;
  const int64_t blocks = (n + kSumBlock - 1) / kSumBlock;
  std::vector<double> partial(static_cast<size_t>(blocks));
  const BlocksFn fn = PickBlocks(p);
  const int64_t per = (blocks + threads - 1) / threads;
  run([&](int t) {
    const int64_t b0 = std::min(blocks, t * per), b1 = std::min(blocks, b0 + per);
    if (b0 < b1) fn(g, n, b0, b1, partial.data());
  });
  double sum = 0;
  for (double x : partial) sum += x;
  return sum;
}

}  // namespace

Status AdamWConfig::Validate() const {
  if (!(lr >= 0) || !std::isfinite(lr)) return InvalidArgument("AdamW lr must be >= 0 and finite");
  if (!(beta1 >= 0 && beta1 < 1) || !(beta2 >= 0 && beta2 < 1)) {
    return InvalidArgument("AdamW betas must be in [0, 1)");
  }
  if (!(eps > 0) || !std::isfinite(eps)) return InvalidArgument("AdamW eps must be positive");
  if (!(weight_decay >= 0) || !std::isfinite(weight_decay)) {
    return InvalidArgument("AdamW weight_decay must be >= 0");
  }
  return Status::Ok();
}

Status AdamWStep(const AdamWConfig& config, int64_t step, float grad_scale,
                 const AdamWShard& shard) {
  Status s = ValidateStep(config, step, grad_scale);
  if (s.ok()) s = ValidateShard(shard);
  if (!s.ok()) return s;
  StepRange(config, step, grad_scale, shard, 0, shard.n);
  return Status::Ok();
}

Status AdamWStep(const AdamWConfig& config, int64_t step, float grad_scale, float* master,
                 float* exp_avg, float* exp_avg_sq, const float* grad, int64_t n,
                 uint16_t* bf16_out) {
  AdamWShard s;
  s.master = master;
  s.exp_avg = exp_avg;
  s.exp_avg_sq = exp_avg_sq;
  s.grad = grad;
  s.grad_precision = Precision::kF32;
  s.param_out = bf16_out;
  s.param_out_precision = Precision::kBF16;
  s.n = n;
  return AdamWStep(config, step, grad_scale, s);
}

Status AdamWStep(const AdamWConfig& config, int64_t step, float grad_scale, float* master,
                 float* exp_avg, float* exp_avg_sq, const uint16_t* bf16_grad, int64_t n,
                 uint16_t* bf16_out) {
  AdamWShard s;
  s.master = master;
  s.exp_avg = exp_avg;
  s.exp_avg_sq = exp_avg_sq;
  s.grad = bf16_grad;
  s.grad_precision = Precision::kBF16;
  s.param_out = bf16_out;
  s.param_out_precision = Precision::kBF16;
  s.n = n;
  return AdamWStep(config, step, grad_scale, s);
}

double SumOfSquares(const float* g, int64_t n) {
  return SumOfSquaresWith([](const std::function<void(int)>& f) { f(0); }, 1, g, n,
                          Precision::kF32);
}

double SumOfSquares(const uint16_t* g, int64_t n, Precision precision) {
  return SumOfSquaresWith([](const std::function<void(int)>& f) { f(0); }, 1, g, n, precision);
}

// threads - 1 workers wait on a generation counter; Run hands each its index, runs index 0 on the
// caller and returns when all are done.
class CpuAdamW::Pool {
 public:
  explicit Pool(int threads) : size_(std::max(1, threads)) {
    for (int t = 1; t < size_; ++t) workers_.emplace_back([this, t] { Work(t); });
  }
  ~Pool() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    start_.notify_all();
    for (auto& w : workers_) w.join();
  }

  int size() const { return size_; }

  void Run(const std::function<void(int)>& fn) {
    if (size_ == 1) {
      fn(0);
      return;
    }
    {
      std::lock_guard<std::mutex> lock(mu_);
      fn_ = &fn;
      pending_ = size_ - 1;
      ++generation_;
    }
    start_.notify_all();
    fn(0);
    std::unique_lock<std::mutex> lock(mu_);
    done_.wait(lock, [this] { return pending_ == 0; });
    fn_ = nullptr;
  }

 private:
  void Work(int t) {
    uint64_t seen = 0;
    for (;;) {
      const std::function<void(int)>* fn;
      {
        std::unique_lock<std::mutex> lock(mu_);
        start_.wait(lock, [&] { return stop_ || generation_ != seen; });
        if (stop_) return;
        seen = generation_;
        fn = fn_;
      }
      (*fn)(t);
      std::lock_guard<std::mutex> lock(mu_);
      if (--pending_ == 0) done_.notify_one();
    }
  }

  const int size_;
  std::mutex mu_;
  std::condition_variable start_, done_;
  const std::function<void(int)>* fn_ = nullptr;
  uint64_t generation_ = 0;
  int pending_ = 0;
  bool stop_ = false;
  std::vector<std::thread> workers_;
};

CpuAdamW::CpuAdamW(int threads) {
  if (threads <= 0) threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  pool_ = std::make_unique<Pool>(threads);
}

CpuAdamW::~CpuAdamW() = default;

int CpuAdamW::threads() const {
  return pool_->size();
}

Status CpuAdamW::Step(const AdamWConfig& config, int64_t step, float grad_scale,
                      const std::vector<AdamWShard>& shards) {
  Status s = ValidateStep(config, step, grad_scale);
  if (!s.ok()) return s;
  std::vector<int64_t> offset(shards.size() + 1, 0);
  for (size_t i = 0; i < shards.size(); ++i) {
    s = ValidateShard(shards[i]);
    if (!s.ok()) return s.WithContext("shard " + std::to_string(i));
    offset[i + 1] = offset[i] + shards[i].n;
  }
  const int64_t total = offset.back();
  if (total == 0) return Status::Ok();
  // Contiguous ranges of the concatenated shards, in multiples of 64 elements so that no two
  // threads write the same cache line of a moment buffer or the half-precision copy.
  constexpr int64_t kAlign = 64;
  const int64_t threads = pool_->size();
  const int64_t chunk = ((total + threads - 1) / threads + kAlign - 1) / kAlign * kAlign;
  pool_->Run([&](int t) {
    const int64_t lo = std::min(total, t * chunk), hi = std::min(total, lo + chunk);
    if (lo >= hi) return;
    auto it = std::upper_bound(offset.begin(), offset.end(), lo);
    for (size_t i = static_cast<size_t>(it - offset.begin()) - 1; i < shards.size(); ++i) {
      if (offset[i] >= hi) break;
      const int64_t a = std::max(lo, offset[i]) - offset[i];
      const int64_t b = std::min(hi, offset[i + 1]) - offset[i];
      StepRange(config, step, grad_scale, shards[i], a, b);
    }
  });
  return Status::Ok();
}

Status CpuAdamW::Step(const AdamWConfig& config, int64_t step, float grad_scale,
                      const AdamWShard& shard) {
  return Step(config, step, grad_scale, std::vector<AdamWShard>{shard});
}

double CpuAdamW::SumOfSquares(const float* g, int64_t n) {
  return SumOfSquaresWith([this](const std::function<void(int)>& f) { pool_->Run(f); },
                          pool_->size(), g, n, Precision::kF32);
}

double CpuAdamW::SumOfSquares(const uint16_t* g, int64_t n, Precision precision) {
  return SumOfSquaresWith([this](const std::function<void(int)>& f) { pool_->Run(f); },
                          pool_->size(), g, n, precision);
}

}  // namespace fuji::optim
