// Batch-1 GEMV kernels. Each thread owns a slice of the outputs and streams its part of the
// weights once; loops are written so that GCC vectorizes them, and target_clones builds AVX-512,
// AVX2 and baseline versions chosen at run time (no -march flag: one binary for every x86-64).
#include "worker/engine/cpu_kernels.h"

#include <algorithm>
#include <cstring>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/core/GradMode.h>

namespace fuji::engine {
namespace {

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define FUJI_MULTIVERSION __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define FUJI_MULTIVERSION
#endif

inline float Load(const float* p, int64_t i) { return p[i]; }
inline float Load(const uint16_t* p, int64_t i) {
  const uint32_t bits = static_cast<uint32_t>(p[i]) << 16;  // bfloat16 is the top half of a float
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

// acc[0, n) += sum over k of x[k] * w[k * ld + n], four rows at a time to cut acc traffic.
template <typename T>
inline void AccumulateRows(const float* x, const T* w, int64_t k_count, int64_t ld, int64_t n, float* acc) {
  int64_t k = 0;
  for (; k + 4 <= k_count; k += 4) {
    const float x0 = x[k], x1 = x[k + 1], x2 = x[k + 2], x3 = x[k + 3];
    const T* w0 = w + k * ld;
    const T* w1 = w0 + ld;
    const T* w2 = w1 + ld;
    const T* w3 = w2 + ld;
    for (int64_t j = 0; j < n; ++j) {
      acc[j] += x0 * Load(w0, j) + x1 * Load(w1, j) + x2 * Load(w2, j) + x3 * Load(w3, j);
    }
  }
  for (; k < k_count; ++k) {
    const T* wk = w + k * ld;
    for (int64_t j = 0; j < n; ++j) acc[j] += x[k] * Load(wk, j);
  }
}

FUJI_MULTIVERSION void RowTimesMatrixF32(const float* x, const float* w, int64_t k, int64_t ld, int64_t n, float* acc) {
  AccumulateRows(x, w, k, ld, n, acc);
}
FUJI_MULTIVERSION void RowTimesMatrixBF16(const float* x, const uint16_t* w, int64_t k, int64_t ld, int64_t n, float* acc) {
  AccumulateRows(x, w, k, ld, n, acc);
}

// Dot products of x with rows [0, rows) of e (row length k), sixteen lanes kept apart so the
// reduction vectorizes without reassociation flags.
template <typename T>
inline void DotRows(const float* x, const T* e, int64_t rows, int64_t k, float* out) {
  constexpr int kLanes = 16;
  for (int64_t r = 0; r < rows; ++r) {
    const T* row = e + r * k;
    float lanes[kLanes] = {};
    int64_t i = 0;
    for (; i + kLanes <= k; i += kLanes) {
      for (int j = 0; j < kLanes; ++j) lanes[j] += x[i + j] * Load(row, i + j);
    }
    float sum = 0;
    for (; i < k; ++i) sum += x[i] * Load(row, i);
    for (int j = 0; j < kLanes; ++j) sum += lanes[j];
    out[r] = sum;
  }
}

FUJI_MULTIVERSION void DotRowsF32(const float* x, const float* e, int64_t rows, int64_t k, float* out) {
  DotRows(x, e, rows, k, out);
}
FUJI_MULTIVERSION void DotRowsBF16(const float* x, const uint16_t* e, int64_t rows, int64_t k, float* out) {
  DotRows(x, e, rows, k, out);
}

// Splits [0, n) into one contiguous range per thread, in multiples of `align`.
template <typename F>
void ParallelRanges(int64_t n, int64_t align, const F& f) {
  const int64_t threads = std::max<int64_t>(1, at::get_num_threads());
  const int64_t chunk = ((n + threads - 1) / threads + align - 1) / align * align;
  at::parallel_for(0, threads, 1, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      const int64_t lo = t * chunk, hi = std::min(n, lo + chunk);
      if (lo < hi) f(lo, hi);
    }
  });
}

}  // namespace

bool DecodeKernelApplies(const at::Tensor& x, const at::Tensor& w) {
  if (!x.device().is_cpu() || !w.device().is_cpu() || x.dim() != 2 || x.size(0) != 1) return false;
  if (w.dim() != 2 || !w.is_contiguous()) return false;
  if (w.scalar_type() != at::kFloat && w.scalar_type() != at::kBFloat16) return false;
  return !(c10::GradMode::is_enabled() && (x.requires_grad() || w.requires_grad()));
}

at::Tensor RowTimesMatrix(const at::Tensor& x_in, const at::Tensor& w, const at::Tensor& bias) {
  const int64_t k = w.size(0), n = w.size(1);
  const at::Tensor x = x_in.to(at::kFloat).contiguous();
  const float* xp = x.data_ptr<float>();
  const bool bf16 = w.scalar_type() == at::kBFloat16;
  const char* wp = static_cast<const char*>(w.data_ptr());
  const int64_t row_bytes = n * static_cast<int64_t>(w.element_size());
  // Each thread streams a contiguous block of rows into its own partial sums (a sequential read,
  // which the prefetchers keep at full bandwidth; splitting the columns instead gives every
  // thread a strided read and measured half the bandwidth), then the partials are added.
  const int64_t threads = std::min<int64_t>(std::max<int64_t>(1, at::get_num_threads()), k);
  at::Tensor partial = at::zeros({threads, n}, at::kFloat);
  float* pp = partial.data_ptr<float>();
  const int64_t rows_per = (k + threads - 1) / threads;
  at::parallel_for(0, threads, 1, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      const int64_t lo = t * rows_per, hi = std::min(k, lo + rows_per);
      if (lo >= hi) continue;
      if (bf16) {
        RowTimesMatrixBF16(xp + lo, reinterpret_cast<const uint16_t*>(wp + lo * row_bytes), hi - lo, n, n, pp + t * n);
      } else {
        RowTimesMatrixF32(xp + lo, reinterpret_cast<const float*>(wp + lo * row_bytes), hi - lo, n, n, pp + t * n);
      }
    }
  });
  return (threads == 1 ? partial : partial.sum(0, /*keepdim=*/true)).add_(bias.to(at::kFloat).reshape({1, n}));
}

at::Tensor RowDotRows(const at::Tensor& x_in, const at::Tensor& e) {
  const int64_t rows = e.size(0), k = e.size(1);
  const at::Tensor x = x_in.to(at::kFloat).contiguous();
  at::Tensor y = at::empty({1, rows}, at::kFloat);
  const float* xp = x.data_ptr<float>();
  float* yp = y.data_ptr<float>();
  const bool bf16 = e.scalar_type() == at::kBFloat16;
  const void* ep = e.data_ptr();
  ParallelRanges(rows, 16, [&](int64_t lo, int64_t hi) {
    if (bf16) {
      DotRowsBF16(xp, static_cast<const uint16_t*>(ep) + lo * k, hi - lo, k, yp + lo);
    } else {
      DotRowsF32(xp, static_cast<const float*>(ep) + lo * k, hi - lo, k, yp + lo);
    }
  });
  return y;
}

}  // namespace fuji::engine
