// Gpt2Model::DecodeStep: a batch-1 decode step in one OpenMP parallel region (gpt2_model.h).
//
// Forward runs a decode step as some twenty ATen ops per block, four of them matrices that fork
// and join the OpenMP team of their own; between them one thread works while the other waits.
// Here the team is formed once per token and stays: each matrix is read by every thread at once
// (thread b sums rows block b into its partial, as RowTimesMatrix splits them), a barrier, then
// each thread sums the partials of its slice of the outputs and applies what follows the matrix
// (bias, rounding to the model's dtype, the key and value written to the cache, GELU, the
// residual add), a barrier. Every value is computed with the same operations in the same order
// as in Forward and Logits, so the logits are bit-identical (decode_step tests in engine_test).
#include <sched.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <vector>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/core/GradMode.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "lib/common/half.h"
#include "worker/engine/cpu_kernels.h"
#include "worker/engine/gpt2_model.h"

namespace fuji::engine {
namespace {

// The team's barrier: a counter and a generation, waited on by spinning (a pause per try, then
// yielding the core after a while, for a machine with more threads than free cores). libgomp's
// barrier puts a waiting thread to sleep on a futex: ~100 barriers a token, each a wake-up
// (costly under a hypervisor: fused 111M fp32 decode at 56-62% of the bound with it, 69-70% with
// OMP_WAIT_POLICY=ACTIVE, measured side by side).
class SpinBarrier {
 public:
  explicit SpinBarrier(int threads) : threads_(threads) {}
  void Wait() {
    const int generation = generation_.load(std::memory_order_acquire);
    if (arrived_.fetch_add(1, std::memory_order_acq_rel) == threads_ - 1) {
      arrived_.store(0, std::memory_order_relaxed);
      generation_.fetch_add(1, std::memory_order_release);
      return;
    }
    for (int tries = 0; generation_.load(std::memory_order_acquire) == generation; ++tries) {
      if (tries < (1 << 12)) {
#if defined(__x86_64__) || defined(__i386__)
        __builtin_ia32_pause();
#endif
      } else {
        sched_yield();
      }
    }
  }

 private:
  const int threads_;
  std::atomic<int> arrived_{0};
  std::atomic<int> generation_{0};
};

// This thread's place in the region's team.
struct Team {
  int id = 0;
  int size = 1;
  SpinBarrier* barrier = nullptr;  // null for a team of one
  void Barrier() const {
    if (barrier != nullptr) barrier->Wait();
  }
  // This thread's contiguous share of [0, n), in multiples of `align`.
  std::pair<int64_t, int64_t> Slice(int64_t n, int64_t align) const {
    const int64_t chunk = ((n + size - 1) / size + align - 1) / align * align;
    const int64_t lo = std::min(n, id * chunk);
    return {lo, std::min(n, lo + chunk)};
  }
};

// A value as the model's dtype holds it: a float, or a float rounded to bfloat16 (as ATen's
// conversions round: to nearest even).
inline float Round(float v, bool bf16) { return bf16 ? Bf16ToFloat(FloatToBf16(v)) : v; }

// Element i of a parameter, widened to float (exact).
inline float Widen(const at::Tensor& p, bool bf16, int64_t i) {
  return bf16 ? Bf16ToFloat(static_cast<const uint16_t*>(p.data_ptr())[i]) : p.data_ptr<float>()[i];
}

// x [1, k] @ w [k, n] as RowTimesMatrix computes it: `blocks` row blocks of ceil(k / blocks) rows,
// block b summed into partial[b * n, (b + 1) * n). Blocks go round the team, so the split (and
// the sums) do not depend on how many threads the region got.
void Partials(const Team& team, int64_t blocks, const float* x, const at::Tensor& w, bool bf16, float* partial) {
  const int64_t k = w.size(0), n = w.size(1);
  const int64_t rows_per = (k + blocks - 1) / blocks;
  const char* base = static_cast<const char*>(w.data_ptr());
  const int64_t row_bytes = n * static_cast<int64_t>(w.element_size());
  for (int64_t b = team.id; b < blocks; b += team.size) {
    float* acc = partial + b * n;
    std::fill(acc, acc + n, 0.0f);
    const int64_t lo = b * rows_per, hi = std::min(k, lo + rows_per);
    if (lo < hi) raw::RowTimesMatrixAccumulate(x + lo, base + lo * row_bytes, bf16, hi - lo, n, acc);
  }
}

// Output j of this thread's slice: bias[j] plus the blocks' partials in order (RowTimesMatrix's
// sum), handed to `store(j, y)`.
template <typename Store>
void SumPartials(const Team& team, int64_t blocks, const float* partial, const at::Tensor& bias, bool bf16, int64_t n,
                 const Store& store) {
  const auto [lo, hi] = team.Slice(n, 16);
  for (int64_t j = lo; j < hi; ++j) {
    float y = Widen(bias, bf16, j);
    for (int64_t b = 0; b < blocks; ++b) y += partial[b * n + j];
    store(j, y);
  }
}

}  // namespace

bool Gpt2Model::DecodeStepApplies(const KvCache& cache) const {
  static const bool unfused = std::getenv("FUJI_DECODE_UNFUSED") != nullptr;
  if (unfused || hooks_.before || hooks_.after || !device().is_cpu()) return false;
  const at::ScalarType type = dtype();
  if (type != at::kFloat && type != at::kBFloat16) return false;
  if (cache.keys_.size() != static_cast<size_t>(config_.n_layer) || cache.keys_.empty()) return false;
  if (cache.length_ >= cache.capacity_ || cache.length_ >= config_.n_positions) return false;
  for (size_t l = 0; l < cache.keys_.size(); ++l) {
    const at::Tensor& k = cache.keys_[l];
    const at::Tensor& v = cache.values_[l];
    if (k.size(0) != 1 || !k.device().is_cpu() || k.scalar_type() != type || !k.is_contiguous()) return false;
    if (v.scalar_type() != type || !v.is_contiguous()) return false;
  }
  for (const at::Tensor& p : params_) {
    if (p.scalar_type() != type || !p.is_contiguous() || !p.device().is_cpu()) return false;
    if (c10::GradMode::is_enabled() && p.requires_grad()) return false;
  }
  return true;
}

at::Tensor Gpt2Model::DecodeStep(int64_t token, KvCache* cache) const {
  using namespace param_index;  // NOLINT
  const int64_t C = config_.n_embd, H = config_.n_head, D = config_.head_dim(), L = config_.n_layer;
  const int64_t past = cache->length_, capacity = cache->capacity_;
  TORCH_CHECK(token >= 0 && token < config_.vocab_size, "token ", token, " is outside the vocabulary");
  TORCH_CHECK(past < capacity, "KV cache full");
  TORCH_CHECK(past < config_.n_positions, "sequence of ", past + 1, " tokens exceeds n_positions ",
              config_.n_positions);
  const bool bf16 = dtype() == at::kBFloat16;
  const bool tanh_gelu = config_.activation == Activation::kGeluTanh;
  const double eps = config_.layer_norm_epsilon;
  const at::Tensor& head = config_.tie_word_embeddings ? P(kWte) : P(LmHead(config_));
  const int64_t V = head.size(0), F = P(Layer(0, kFcW)).size(1);
  auto w = [&](int64_t l, LayerParam p) -> const at::Tensor& { return P(Layer(l, p)); };

  // RowTimesMatrix's split of a k-row matrix: one block per thread libtorch would use.
  const int requested = std::max(1, at::get_num_threads());
  auto blocks = [&](int64_t k) { return std::min<int64_t>(requested, k); };
  std::vector<float> x(static_cast<size_t>(C)), h(static_cast<size_t>(C)), qkv(static_cast<size_t>(3 * C));
  std::vector<float> att(static_cast<size_t>(C)), fc(static_cast<size_t>(F));
  std::vector<float> partial(static_cast<size_t>(requested * std::max(3 * C, F)));
  std::vector<uint16_t> x16(bf16 ? static_cast<size_t>(C) : 0);
  at::Tensor logits = at::empty({1, V}, at::kFloat);
  float* out = logits.data_ptr<float>();

  // The embeddings, added in the model's dtype.
  for (int64_t i = 0; i < C; ++i) {
    x[static_cast<size_t>(i)] = Round(Widen(P(kWte), bf16, token * C + i) + Widen(P(kWpe), bf16, past * C + i), bf16);
  }
  // LayerNorm through ATen (its kernel's arithmetic), on the calling thread: the one whose
  // thread-local modes (inference, grad) Forward would run under.
  auto layer_norm = [&](int64_t weight, int64_t bias) {
    at::Tensor in;
    if (bf16) {
      for (int64_t i = 0; i < C; ++i) x16[static_cast<size_t>(i)] = FloatToBf16(x[static_cast<size_t>(i)]);
      in = at::from_blob(x16.data(), {1, C}, at::kBFloat16);
    } else {
      in = at::from_blob(x.data(), {1, C}, at::kFloat);
    }
    const at::Tensor y = at::layer_norm(in, {C}, P(weight), P(bias), eps).to(at::kFloat).contiguous();
    std::memcpy(h.data(), y.data_ptr<float>(), static_cast<size_t>(C) * sizeof(float));
  };

  const size_t elem = bf16 ? sizeof(uint16_t) : sizeof(float);
  auto cache_at = [&](at::Tensor& t, int64_t head_index, int64_t d) {
    return static_cast<char*>(t.data_ptr()) + ((head_index * capacity + past) * D + d) * static_cast<int64_t>(elem);
  };
  auto put = [&](char* p, float v) {
    if (bf16) {
      const uint16_t b = FloatToBf16(v);
      std::memcpy(p, &b, sizeof b);
    } else {
      std::memcpy(p, &v, sizeof v);
    }
  };

  std::shared_ptr<SpinBarrier> barrier;  // made by one thread of the team, once its size is known
#ifdef _OPENMP
#pragma omp parallel num_threads(requested) firstprivate(barrier)
#endif
  {
    Team team;
#ifdef _OPENMP
    team.id = omp_get_thread_num();
    team.size = omp_get_num_threads();
    if (team.size > 1) {
#pragma omp single copyprivate(barrier)
      barrier = std::make_shared<SpinBarrier>(team.size);
      team.barrier = barrier.get();
    }
#endif
    std::vector<float> scores(static_cast<size_t>(past + 1));
    for (int64_t l = 0; l < L; ++l) {
      double scale = 1.0 / std::sqrt(static_cast<double>(D));
      if (config_.scale_attn_by_inverse_layer_idx) scale /= static_cast<double>(l + 1);
      at::Tensor& keys = cache->keys_[static_cast<size_t>(l)];
      at::Tensor& values = cache->values_[static_cast<size_t>(l)];

      if (team.id == 0) layer_norm(Layer(l, kLn1W), Layer(l, kLn1B));
      team.Barrier();
      Partials(team, blocks(C), h.data(), w(l, kAttnW), bf16, partial.data());
      team.Barrier();
      SumPartials(team, blocks(C), partial.data(), w(l, kAttnB), bf16, 3 * C, [&](int64_t j, float y) {
        const float v = qkv[static_cast<size_t>(j)] = Round(y, bf16);
        if (j >= 2 * C) {
          put(cache_at(values, (j - 2 * C) / D, (j - 2 * C) % D), v);
        } else if (j >= C) {
          put(cache_at(keys, (j - C) / D, (j - C) % D), v);
        }
      });
      team.Barrier();
      const auto [head_lo, head_hi] = team.Slice(H, 1);
      for (int64_t hd = head_lo; hd < head_hi; ++hd) {
        const int64_t offset = hd * capacity * D * static_cast<int64_t>(elem);
        float* o = att.data() + hd * D;
        raw::AttentionHead(qkv.data() + hd * D, static_cast<const char*>(keys.data_ptr()) + offset,
                           static_cast<const char*>(values.data_ptr()) + offset, bf16, past + 1, D,
                           static_cast<float>(scale), scores.data(), o);
        for (int64_t d = 0; d < D; ++d) o[d] = Round(o[d], bf16);
      }
      team.Barrier();
      Partials(team, blocks(C), att.data(), w(l, kAttnProjW), bf16, partial.data());
      team.Barrier();
      SumPartials(team, blocks(C), partial.data(), w(l, kAttnProjB), bf16, C, [&](int64_t j, float y) {
        float& xj = x[static_cast<size_t>(j)];
        xj = Round(xj + Round(y, bf16), bf16);
      });
      team.Barrier();
      if (team.id == 0) layer_norm(Layer(l, kLn2W), Layer(l, kLn2B));
      team.Barrier();
      Partials(team, blocks(C), h.data(), w(l, kFcW), bf16, partial.data());
      team.Barrier();
      SumPartials(team, blocks(C), partial.data(), w(l, kFcB), bf16, F, [&](int64_t j, float y) {
        float v = Round(y, bf16);
        raw::Gelu(&v, 1, tanh_gelu);
        fc[static_cast<size_t>(j)] = Round(v, bf16);
      });
      team.Barrier();
      Partials(team, blocks(F), fc.data(), w(l, kMlpProjW), bf16, partial.data());
      team.Barrier();
      SumPartials(team, blocks(F), partial.data(), w(l, kMlpProjB), bf16, C, [&](int64_t j, float y) {
        float& xj = x[static_cast<size_t>(j)];
        xj = Round(xj + Round(y, bf16), bf16);
      });
      team.Barrier();
    }
    if (team.id == 0) layer_norm(LnfW(config_), LnfB(config_));
    team.Barrier();
    // The head: each thread a range of the vocabulary (every logit is one row's dot product).
    const auto [lo, hi] = team.Slice(V, 16);
    if (lo < hi) {
      raw::DotRows(h.data(), static_cast<const char*>(head.data_ptr()) + lo * C * static_cast<int64_t>(elem), bf16,
                   hi - lo, C, out + lo);
    }
  }
  cache->length_ += 1;
  return logits;
}

}  // namespace fuji::engine
