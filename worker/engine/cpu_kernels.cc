// Batch-1 GEMV kernels. Each thread owns a slice of the outputs and streams its part of the
// weights once; loops are written so that GCC vectorizes them, and target_clones builds AVX-512,
// AVX2 and baseline versions chosen at run time (no -march flag: one binary for every x86-64).
#include "worker/engine/cpu_kernels.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <type_traits>
#include <vector>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/core/GradMode.h>

#include "lib/common/half.h"
#include "lib/common/multiversion.h"

namespace fuji::engine {
namespace {

inline float Load(const float* p, int64_t i) { return p[i]; }
inline float Load(const uint16_t* p, int64_t i) { return Bf16ToFloat(p[i]); }

// acc[0, n) += sum over k of x[k] * w[k * ld + n], eight rows at a time to cut acc traffic.
template <typename T>
inline void AccumulateRows(const float* x, const T* w, int64_t k_count, int64_t ld, int64_t n, float* acc) {
  constexpr int kRows = 8;
  int64_t k = 0;
  for (; k + kRows <= k_count; k += kRows) {
    const T* r = w + k * ld;
    const float* xk = x + k;
    for (int64_t j = 0; j < n; ++j) {
      float s = acc[j];
      for (int u = 0; u < kRows; ++u) s += xk[u] * Load(r + u * ld, j);
      acc[j] = s;
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

// GCC vector types: in each FUJI_MULTIVERSION clone they lower to that clone's registers (one
// zmm, two ymm or four xmm), and `acc += x * w` contracts to the same fused multiply-add as the
// scalar loops above do in that clone. Kept inside functions (never passed by value).
typedef float V16 __attribute__((vector_size(64), aligned(4), may_alias));
typedef uint16_t U16x16 __attribute__((vector_size(32), aligned(2), may_alias));
typedef uint32_t U32x16 __attribute__((vector_size(64)));

// (Results through a reference: a vector return value would change the ABI between clones.)
inline __attribute__((always_inline)) void Load16(V16& v, const float* p) { v = *reinterpret_cast<const V16*>(p); }
inline __attribute__((always_inline)) void Load16(V16& v, const uint16_t* p) {
  const U32x16 bits = __builtin_convertvector(*reinterpret_cast<const U16x16*>(p), U32x16) << 16;
  v = reinterpret_cast<const V16&>(bits);
}

// One tile of 64 columns: out[r * ldo + j] += x[r * ldx + k] * w[k * ld + j] for the R rows, k in
// [0, kc) ascending, the 4 * R sums in registers. `next` (when set): the weights the rows after
// these will need, prefetched a row per step into L2 (strided reads do not wake the prefetchers).
template <int R, typename T>
inline __attribute__((always_inline)) void RowsTile(const float* x, int64_t ldx, const T* w, int64_t ld, int64_t kc,
                                                    float* out, int64_t ldo, const T* next) {
  V16 acc[R][4];
  for (int r = 0; r < R; ++r) {
    for (int v = 0; v < 4; ++v) Load16(acc[r][v], out + r * ldo + 16 * v);
  }
  const T* wk = w;
  for (int64_t k = 0; k < kc; ++k, wk += ld) {
    if (next != nullptr) {
      for (int64_t b = 0; b < 64 * static_cast<int64_t>(sizeof(T)); b += 64) {
        __builtin_prefetch(reinterpret_cast<const char*>(next + k * ld) + b, 0, 2);
      }
    }
    V16 w0, w1, w2, w3;
    Load16(w0, wk);
    Load16(w1, wk + 16);
    Load16(w2, wk + 32);
    Load16(w3, wk + 48);
    for (int r = 0; r < R; ++r) {
      const float xr = x[r * ldx + k];
      acc[r][0] += xr * w0;
      acc[r][1] += xr * w1;
      acc[r][2] += xr * w2;
      acc[r][3] += xr * w3;
    }
  }
  for (int r = 0; r < R; ++r) {
    for (int v = 0; v < 4; ++v) *reinterpret_cast<V16*>(out + r * ldo + 16 * v) = acc[r][v];
  }
}

// AccumulateRows's main loop for m rows of x at once: out[r * ldo + j] += sum over k in [0, kc)
// (ascending) of x[r * ldx + k] * w[k * ld + j] for j in [0, n), kc a multiple of eight and n of
// 32. Every sum is the one running sum AccumulateRows keeps (one multiply-add per k, where GCC's
// vectorized loop fuses them: in its main loop, which for bfloat16 covers 32 columns at a time;
// its epilogues do not fuse, so RowsTimesMatrix leaves the last n % 32 columns to it); a sum
// parked in `out` between blocks of K keeps its value. Tiles of 64 columns by 64 rows of K
// (16 KiB of float weights: L1) are read from memory once and from L1 by every four rows.
template <typename T>
inline __attribute__((always_inline)) void RowsBlock(const float* x, int64_t ldx, int64_t m, const T* w, int64_t ld,
                                                     int64_t kc, int64_t n, float* out, int64_t ldo) {
  constexpr int64_t kBlock = 64;
  int64_t j = 0;
  for (; j + 64 <= n; j += 64) {
    for (int64_t k0 = 0; k0 < kc; k0 += kBlock) {
      const int64_t kb = std::min(kBlock, kc - k0);
      const T* next = k0 + kBlock < kc ? w + (k0 + kBlock) * ld + j : (j + 128 <= n ? w + j + 64 : nullptr);
      const float* xk = x + k0;
      const T* wk = w + k0 * ld + j;
      int64_t r = 0;
      for (; r + 4 <= m; r += 4) {
        RowsTile<4>(xk + r * ldx, ldx, wk, ld, kb, out + r * ldo + j, ldo, r == 0 ? next : nullptr);
      }
      const T* tail_next = r == 0 ? next : nullptr;
      switch (m - r) {
        case 3: RowsTile<3>(xk + r * ldx, ldx, wk, ld, kb, out + r * ldo + j, ldo, tail_next); break;
        case 2: RowsTile<2>(xk + r * ldx, ldx, wk, ld, kb, out + r * ldo + j, ldo, tail_next); break;
        case 1: RowsTile<1>(xk + r * ldx, ldx, wk, ld, kb, out + r * ldo + j, ldo, tail_next); break;
        default: break;
      }
    }
  }
  for (; j + 16 <= n; j += 16) {
    for (int64_t r = 0; r < m; ++r) {
      V16 acc;
      Load16(acc, out + r * ldo + j);
      for (int64_t k = 0; k < kc; ++k) {
        V16 wv;
        Load16(wv, w + k * ld + j);
        acc += x[r * ldx + k] * wv;
      }
      *reinterpret_cast<V16*>(out + r * ldo + j) = acc;
    }
  }
}

FUJI_MULTIVERSION void RowsBlockF32(const float* x, int64_t ldx, int64_t m, const float* w, int64_t ld, int64_t kc,
                                    int64_t n, float* out, int64_t ldo) {
  RowsBlock(x, ldx, m, w, ld, kc, n, out, ldo);
}
FUJI_MULTIVERSION void RowsBlockBF16(const float* x, int64_t ldx, int64_t m, const uint16_t* w, int64_t ld,
                                     int64_t kc, int64_t n, float* out, int64_t ldo) {
  RowsBlock(x, ldx, m, w, ld, kc, n, out, ldo);
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

// One head: scores over the cached keys, a stable softmax, then the weighted sum of values.
template <typename T>
inline void AttentionHead(const float* q, const T* keys, const T* values, int64_t length, int64_t dim,
                          float scale, float* scores, float* out) {
  float max_score = -std::numeric_limits<float>::infinity();
  for (int64_t j = 0; j < length; ++j) {
    const T* key = keys + j * dim;
    float s = 0;
    for (int64_t d = 0; d < dim; ++d) s += q[d] * Load(key, d);
    scores[j] = s * scale;
    max_score = std::max(max_score, scores[j]);
  }
  float sum = 0;
  for (int64_t j = 0; j < length; ++j) sum += scores[j] = std::exp(scores[j] - max_score);
  const float inv = 1.0f / sum;
  for (int64_t d = 0; d < dim; ++d) out[d] = 0;
  for (int64_t j = 0; j < length; ++j) {
    const T* value = values + j * dim;
    const float p = scores[j] * inv;
    for (int64_t d = 0; d < dim; ++d) out[d] += p * Load(value, d);
  }
}

FUJI_MULTIVERSION void DecodeAttentionHeadF32(const float* q, const float* k, const float* v, int64_t length,
                                              int64_t dim, float scale, float* scores, float* out) {
  AttentionHead(q, k, v, length, dim, scale, scores, out);
}
FUJI_MULTIVERSION void DecodeAttentionHeadBF16(const float* q, const uint16_t* k, const uint16_t* v,
                                               int64_t length, int64_t dim, float scale, float* scores,
                                               float* out) {
  AttentionHead(q, k, v, length, dim, scale, scores, out);
}

// AttentionHead over keys and values scattered in blocks: position j is row j % block_size of
// block table[j / block_size]; `block_stride` elements separate one block's head from the next
// block's. Keys are stored transposed within a block (paged_kv.h): dimension d of position j is
// at d * block_size + j % block_size. The arithmetic is AttentionHead's as GCC compiles it: each
// product rounded, then added to the score in order of d (its vectorized loop multiplies
// sixteen dimensions at once and adds them one by one); the empty asm keeps GCC from fusing
// the multiply and the add here.
// kLanes: each score sums sixteen lanes kept apart (a different rounding from AttentionHead's
// sequential sum), for rows that are not held to batch 1's arithmetic.
template <bool kLanes, typename T>
inline __attribute__((always_inline)) void PagedAttentionHead(const float* q, const T* keys, const T* values,
                                                              const int32_t* table, int64_t block_size,
                                                              int64_t block_stride, int64_t length, int64_t dim,
                                                              float scale, float* scores, float* out) {
  float max_score = -std::numeric_limits<float>::infinity();
  for (int64_t j = 0; j < length; ++j) {
    const T* key = keys + table[j / block_size] * block_stride + j % block_size;  // stride block_size
    float s = 0;
    if (kLanes && j + 16 <= length && j % block_size + 16 <= block_size) {
      // Sixteen positions of one block at once, one per lane (any rounding will do here).
      V16 acc = V16{};
      for (int64_t d = 0; d < dim; ++d) {
        V16 k;
        Load16(k, key + d * block_size);
        acc += q[d] * k;
      }
      for (int u = 0; u < 16; ++u) {
        scores[j + u] = acc[u] * scale;
        max_score = std::max(max_score, scores[j + u]);
      }
      j += 15;
      continue;
    }
    if constexpr (kLanes) {
      float lanes[16] = {};
      int64_t d = 0;
      for (; d + 16 <= dim; d += 16) {
        for (int u = 0; u < 16; ++u) lanes[u] += q[d + u] * Load(key, (d + u) * block_size);
      }
      for (; d < dim; ++d) s += q[d] * Load(key, d * block_size);
      for (int u = 0; u < 16; ++u) s += lanes[u];
    } else {
      if (std::is_same_v<T, float> && j + 16 <= length && j % block_size + 16 <= block_size) {
        // Sixteen float positions of one block at once, one per lane: every lane is one
        // position's sequential sum, and a dimension of the sixteen keys is one load.
        V16 acc = V16{};
        for (int64_t d = 0; d < dim; ++d) {
          V16 k;
          Load16(k, key + d * block_size);
          V16 product = q[d] * k;
          asm("" : "+m"(product));
          acc += product;
        }
        for (int u = 0; u < 16; ++u) {
          scores[j + u] = acc[u] * scale;
          max_score = std::max(max_score, scores[j + u]);
        }
        j += 15;
        continue;
      }
      for (int64_t d = 0; d < dim; ++d) {
        float product = q[d] * Load(key, d * block_size);
        if constexpr (std::is_same_v<T, float>) asm("" : "+x"(product));  // bfloat16's fuse (scalar loop)
        s += product;
      }
    }
    scores[j] = s * scale;
    max_score = std::max(max_score, scores[j]);
  }
  float sum = 0;
  for (int64_t j = 0; j < length; ++j) sum += scores[j] = std::exp(scores[j] - max_score);
  const float inv = 1.0f / sum;
  if constexpr (std::is_same_v<T, float>) {
    if (dim % 16 == 0) {
      // The same multiply-add per element and position, the sums held in registers (out may
      // alias the values as far as the compiler knows, so the loop below stores every step).
      int64_t d0 = 0;
      for (; d0 + 64 <= dim; d0 += 64) {  // four independent sums in flight
        V16 a0 = V16{}, a1 = V16{}, a2 = V16{}, a3 = V16{};
        for (int64_t j = 0; j < length; ++j) {
          const T* value = values + table[j / block_size] * block_stride + (j % block_size) * dim + d0;
          const float p = scores[j] * inv;
          V16 v0, v1, v2, v3;
          Load16(v0, value);
          Load16(v1, value + 16);
          Load16(v2, value + 32);
          Load16(v3, value + 48);
          a0 += p * v0;
          a1 += p * v1;
          a2 += p * v2;
          a3 += p * v3;
        }
        *reinterpret_cast<V16*>(out + d0) = a0;
        *reinterpret_cast<V16*>(out + d0 + 16) = a1;
        *reinterpret_cast<V16*>(out + d0 + 32) = a2;
        *reinterpret_cast<V16*>(out + d0 + 48) = a3;
      }
      for (; d0 < dim; d0 += 16) {
        V16 acc = V16{};
        for (int64_t j = 0; j < length; ++j) {
          const T* value = values + table[j / block_size] * block_stride + (j % block_size) * dim;
          const float p = scores[j] * inv;
          V16 v;
          Load16(v, value + d0);
          acc += p * v;
        }
        *reinterpret_cast<V16*>(out + d0) = acc;
      }
      return;
    }
  }
  for (int64_t d = 0; d < dim; ++d) out[d] = 0;
  for (int64_t j = 0; j < length; ++j) {
    const T* value = values + table[j / block_size] * block_stride + (j % block_size) * dim;
    const float p = scores[j] * inv;
    for (int64_t d = 0; d < dim; ++d) out[d] += p * Load(value, d);
  }
}

FUJI_MULTIVERSION void PagedAttentionHeadF32(const float* q, const float* k, const float* v, const int32_t* table,
                                             int64_t block_size, int64_t block_stride, int64_t length,
                                             int64_t dim, float scale, float* scores, float* out, bool lanes) {
  if (lanes) {
    PagedAttentionHead<true>(q, k, v, table, block_size, block_stride, length, dim, scale, scores, out);
  } else {
    PagedAttentionHead<false>(q, k, v, table, block_size, block_stride, length, dim, scale, scores, out);
  }
}
FUJI_MULTIVERSION void PagedAttentionHeadBF16(const float* q, const uint16_t* k, const uint16_t* v,
                                              const int32_t* table, int64_t block_size, int64_t block_stride,
                                              int64_t length, int64_t dim, float scale, float* scores,
                                              float* out, bool lanes) {
  if (lanes) {
    PagedAttentionHead<true>(q, k, v, table, block_size, block_stride, length, dim, scale, scores, out);
  } else {
    PagedAttentionHead<false>(q, k, v, table, block_size, block_stride, length, dim, scale, scores, out);
  }
}

// DotRows of each of `count` rows of x (stride k) with e's rows [0, rows): out[i * ld + r]. Tiles of
// RX rows of x by RE rows of e keep their RX * RE sixteen-lane sums in registers (DotRows's lanes,
// one fused multiply-add per element as GCC compiles DotRows for float rows, added up in DotRows's
// order), so each row of e is read once per RX rows of x.
template <int RX, int RE, typename T>
inline __attribute__((always_inline)) void DotTile(const float* x, const T* e, int64_t k, float* out, int64_t ld) {
  V16 lanes[RX][RE];
  for (int a = 0; a < RX; ++a) {
    for (int b = 0; b < RE; ++b) lanes[a][b] = V16{};
  }
  int64_t i = 0;
  for (; i + 16 <= k; i += 16) {
    V16 ev[RE];
    for (int b = 0; b < RE; ++b) Load16(ev[b], e + b * k + i);
    for (int a = 0; a < RX; ++a) {
      V16 xv;
      Load16(xv, x + a * k + i);
      for (int b = 0; b < RE; ++b) lanes[a][b] += xv * ev[b];
    }
  }
  for (int a = 0; a < RX; ++a) {
    for (int b = 0; b < RE; ++b) {
      float sum = 0;
      for (int64_t t = i; t < k; ++t) sum += x[a * k + t] * Load(e + b * k, t);
      for (int j = 0; j < 16; ++j) sum += lanes[a][b][j];
      out[a * ld + b] = sum;
    }
  }
}

template <int RX, typename T>
inline __attribute__((always_inline)) void DotRowsOfX(const float* x, const T* e, int64_t rows, int64_t k, float* out,
                                                      int64_t ld) {
  int64_t r = 0;
  for (; r + 4 <= rows; r += 4) DotTile<RX, 4>(x, e + r * k, k, out + r, ld);
  for (; r < rows; ++r) DotTile<RX, 1>(x, e + r * k, k, out + r, ld);
}

template <typename T>
inline __attribute__((always_inline)) void DotRowsMany(const float* x, int64_t count, const T* e, int64_t rows,
                                                       int64_t k, float* out, int64_t ld) {
  // Rows of e in slices that stay in L2 while every row of x passes over them.
  const int64_t slice = std::max<int64_t>(4, ((256 << 10) / std::max<int64_t>(1, k * int64_t{sizeof(T)})) / 4 * 4);
  for (int64_t r0 = 0; r0 < rows; r0 += slice) {
    const int64_t n = std::min(slice, rows - r0);
    int64_t i = 0;
    for (; i + 4 <= count; i += 4) DotRowsOfX<4>(x + i * k, e + r0 * k, n, k, out + i * ld + r0, ld);
    switch (count - i) {
      case 3: DotRowsOfX<3>(x + i * k, e + r0 * k, n, k, out + i * ld + r0, ld); break;
      case 2: DotRowsOfX<2>(x + i * k, e + r0 * k, n, k, out + i * ld + r0, ld); break;
      case 1: DotRowsOfX<1>(x + i * k, e + r0 * k, n, k, out + i * ld + r0, ld); break;
      default: break;
    }
  }
}
FUJI_MULTIVERSION void DotRowsManyF32(const float* x, int64_t count, const float* e, int64_t rows, int64_t k,
                                      float* out, int64_t ld) {
  DotRowsMany(x, count, e, rows, k, out, ld);
}
// bfloat16: GCC does not fuse DotRows's multiply-adds for bfloat16 rows, so each row of x runs
// DotRows itself.
FUJI_MULTIVERSION void DotRowsManyBF16(const float* x, int64_t count, const uint16_t* e, int64_t rows, int64_t k,
                                       float* out, int64_t ld) {
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t i = 0; i < count; ++i) DotRows(x + i * k, e + r * k, 1, k, out + i * ld + r);
  }
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

bool IsDecodeRow(const at::Tensor& x) {
  if (!x.device().is_cpu() || x.dim() != 2 || x.size(0) != 1) return false;
  if (x.scalar_type() != at::kFloat && x.scalar_type() != at::kBFloat16) return false;
  return !(c10::GradMode::is_enabled() && x.requires_grad());
}

bool DecodeKernelApplies(const at::Tensor& x, const at::Tensor& w) {
  if (!IsDecodeRow(x) || !w.device().is_cpu() || w.dim() != 2 || !w.is_contiguous()) return false;
  if (w.scalar_type() != at::kFloat && w.scalar_type() != at::kBFloat16) return false;
  return !(c10::GradMode::is_enabled() && w.requires_grad());
}

at::Tensor RowTimesMatrix(const at::Tensor& x_in, const at::Tensor& w, const at::Tensor& bias) {
  const int64_t k = w.size(0), n = w.size(1);
  const at::Tensor x = x_in.to(at::kFloat).contiguous();
  const float* xp = x.data_ptr<float>();
  const bool bf16 = w.scalar_type() == at::kBFloat16;
  const char* wp = static_cast<const char*>(w.data_ptr());
  const int64_t row_bytes = n * static_cast<int64_t>(w.element_size());
  // Each thread streams a contiguous block of rows into its own partial sums (a sequential read
  // that the prefetchers keep at full bandwidth), then one pass adds the partials and the bias.
  const int64_t threads = std::min<int64_t>(std::max<int64_t>(1, at::get_num_threads()), k);
  std::vector<float> partial(static_cast<size_t>(threads * n), 0.0f);
  float* pp = partial.data();
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
  at::Tensor y = bias.to(at::kFloat).reshape({1, n}).clone();
  float* yp = y.data_ptr<float>();
  for (int64_t t = 0; t < threads; ++t) {
    for (int64_t j = 0; j < n; ++j) yp[j] += pp[t * n + j];
  }
  return y;
}

at::Tensor RowsTimesMatrix(const at::Tensor& x_in, const at::Tensor& w, const at::Tensor& bias) {
  const int64_t m = x_in.size(0), k = w.size(0), n = w.size(1);
  const at::Tensor x = x_in.to(at::kFloat).contiguous();
  const float* xp = x.data_ptr<float>();
  const bool bf16 = w.scalar_type() == at::kBFloat16;
  const char* wp = static_cast<const char*>(w.data_ptr());
  const int64_t element = static_cast<int64_t>(w.element_size()), row_bytes = n * element;
  // RowTimesMatrix's split of K: thread t sums rows [t * rows_per, (t + 1) * rows_per) into its
  // partials, the first multiple of eight of them in RowsBlock's register tiles (AccumulateRows's
  // main loop), the rest through the batch-1 kernel itself (its tail loop), row by row.
  const int64_t threads = std::min<int64_t>(std::max<int64_t>(1, at::get_num_threads()), k);
  const int64_t rows_per = (k + threads - 1) / threads;
  std::vector<float> partial(static_cast<size_t>(threads * m * n), 0.0f);
  float* pp = partial.data();
  at::parallel_for(0, threads, 1, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      const int64_t lo = t * rows_per, hi = std::min(k, lo + rows_per);
      if (lo >= hi) continue;
      const int64_t main = (hi - lo) / 8 * 8, n32 = n / 32 * 32;
      float* acc = pp + t * m * n;
      const char* wt = wp + lo * row_bytes;
      if (bf16) {
        RowsBlockBF16(xp + lo, k, m, reinterpret_cast<const uint16_t*>(wt), n, main, n32, acc, n);
      } else {
        RowsBlockF32(xp + lo, k, m, reinterpret_cast<const float*>(wt), n, main, n32, acc, n);
      }
      // The batch-1 kernel itself for the rest: rows of K past `main` in the tiled columns, and
      // every row of K in the last n % 32 columns.
      auto batch1 = [&](int64_t r, int64_t k0, int64_t j0, int64_t width) {
        const char* wr = wt + k0 * row_bytes + j0 * element;
        const float* xr = xp + r * k + lo + k0;
        if (bf16) {
          RowTimesMatrixBF16(xr, reinterpret_cast<const uint16_t*>(wr), hi - lo - k0, n, width, acc + r * n + j0);
        } else {
          RowTimesMatrixF32(xr, reinterpret_cast<const float*>(wr), hi - lo - k0, n, width, acc + r * n + j0);
        }
      };
      for (int64_t r = 0; r < m; ++r) {
        if (main < hi - lo && n32 > 0) batch1(r, main, 0, n32);
        if (n32 < n) batch1(r, 0, n32, n - n32);
      }
    }
  });
  at::Tensor y = bias.to(at::kFloat).reshape({1, n}).repeat({m, 1});
  float* yp = y.data_ptr<float>();
  at::parallel_for(0, m, 1, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      for (int64_t t = 0; t < threads; ++t) {
        for (int64_t j = 0; j < n; ++j) yp[r * n + j] += pp[(t * m + r) * n + j];
      }
    }
  });
  return y;
}

at::Tensor DecodeAttention(const at::Tensor& q_in, const at::Tensor& keys, const at::Tensor& values,
                           int64_t length, double scale) {
  const int64_t heads = q_in.size(1), dim = q_in.size(3), stride = keys.size(2) * dim;
  const at::Tensor q = q_in.to(at::kFloat).contiguous();
  at::Tensor out = at::empty({1, heads * dim}, at::kFloat);
  const float* qp = q.data_ptr<float>();
  float* op = out.data_ptr<float>();
  const bool bf16 = keys.scalar_type() == at::kBFloat16;
  const void* kp = keys.data_ptr();
  const void* vp = values.data_ptr();
  at::parallel_for(0, heads, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> scores(static_cast<size_t>(length));
    for (int64_t h = begin; h < end; ++h) {
      const float* qh = qp + h * dim;
      if (bf16) {
        DecodeAttentionHeadBF16(qh, static_cast<const uint16_t*>(kp) + h * stride,
                                static_cast<const uint16_t*>(vp) + h * stride, length, dim,
                                static_cast<float>(scale), scores.data(), op + h * dim);
      } else {
        DecodeAttentionHeadF32(qh, static_cast<const float*>(kp) + h * stride,
                               static_cast<const float*>(vp) + h * stride, length, dim,
                               static_cast<float>(scale), scores.data(), op + h * dim);
      }
    }
  });
  return out;
}

at::Tensor PagedDecodeAttention(const at::Tensor& q_in, const at::Tensor& keys, const at::Tensor& values,
                                const std::vector<int32_t>& tables, const std::vector<int64_t>& table_offsets,
                                const std::vector<int64_t>& lengths, double scale, bool exact) {
  const int64_t rows = q_in.size(0), heads = values.size(1), block_size = values.size(2), dim = values.size(3);
  TORCH_CHECK(q_in.dim() == 2 && q_in.size(1) == heads * dim, "q must be [R, H * D]");
  TORCH_CHECK(static_cast<int64_t>(lengths.size()) == rows && static_cast<int64_t>(table_offsets.size()) == rows,
              "one length and one table offset per row");
  TORCH_CHECK(keys.is_contiguous() && values.is_contiguous(), "the block pool must be contiguous");
  TORCH_CHECK(keys.dim() == 4 && keys.size(0) == values.size(0) && keys.size(1) == heads && keys.size(2) == dim &&
                  keys.size(3) == block_size,
              "keys must be [num_blocks, H, D, block_size] beside values [num_blocks, H, block_size, D]");
  const at::Tensor q = q_in.to(at::kFloat).contiguous();
  at::Tensor out = at::empty({rows, heads * dim}, at::kFloat);
  int64_t max_length = 0;
  for (int64_t len : lengths) max_length = std::max(max_length, len);
  const float* qp = q.data_ptr<float>();
  float* op = out.data_ptr<float>();
  const bool bf16 = keys.scalar_type() == at::kBFloat16;
  const void* kp = keys.data_ptr();
  const void* vp = values.data_ptr();
  const int64_t block_stride = heads * block_size * dim, head_stride = block_size * dim;
  at::parallel_for(0, rows * heads, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> scores(static_cast<size_t>(max_length));
    for (int64_t i = begin; i < end; ++i) {
      const int64_t r = i / heads, h = i % heads;
      const float* qh = qp + r * heads * dim + h * dim;
      const int32_t* table = tables.data() + table_offsets[static_cast<size_t>(r)];
      const int64_t length = lengths[static_cast<size_t>(r)];
      float* oh = op + r * heads * dim + h * dim;
      if (bf16) {
        PagedAttentionHeadBF16(qh, static_cast<const uint16_t*>(kp) + h * head_stride,
                               static_cast<const uint16_t*>(vp) + h * head_stride, table, block_size,
                               block_stride, length, dim, static_cast<float>(scale), scores.data(), oh, !exact);
      } else {
        PagedAttentionHeadF32(qh, static_cast<const float*>(kp) + h * head_stride,
                              static_cast<const float*>(vp) + h * head_stride, table, block_size, block_stride,
                              length, dim, static_cast<float>(scale), scores.data(), oh, !exact);
      }
    }
  });
  return out;
}

at::Tensor GeluRow(const at::Tensor& x_in, bool tanh_approximation) {
  at::Tensor y = x_in.to(at::kFloat).contiguous().clone();
  float* p = y.data_ptr<float>();
  // Element by element, so the threads (for many rows) change nothing in the results.
  at::parallel_for(0, y.numel(), 16384,
                   [&](int64_t begin, int64_t end) { raw::Gelu(p + begin, end - begin, tanh_approximation); });
  return y;
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

at::Tensor RowsDotRows(const at::Tensor& x_in, const at::Tensor& e) {
  const int64_t count = x_in.size(0), rows = e.size(0), k = e.size(1);
  const at::Tensor x = x_in.to(at::kFloat).contiguous();
  at::Tensor y = at::empty({count, rows}, at::kFloat);
  const float* xp = x.data_ptr<float>();
  float* yp = y.data_ptr<float>();
  const bool bf16 = e.scalar_type() == at::kBFloat16;
  const void* ep = e.data_ptr();
  ParallelRanges(rows, 16, [&](int64_t lo, int64_t hi) {
    if (bf16) {
      DotRowsManyBF16(xp, count, static_cast<const uint16_t*>(ep) + lo * k, hi - lo, k, yp + lo, rows);
    } else {
      DotRowsManyF32(xp, count, static_cast<const float*>(ep) + lo * k, hi - lo, k, yp + lo, rows);
    }
  });
  return y;
}

namespace raw {

void RowTimesMatrixAccumulate(const float* x, const void* w, bool bf16, int64_t k, int64_t n, float* acc) {
  if (bf16) {
    RowTimesMatrixBF16(x, static_cast<const uint16_t*>(w), k, n, n, acc);
  } else {
    RowTimesMatrixF32(x, static_cast<const float*>(w), k, n, n, acc);
  }
}

void DotRows(const float* x, const void* e, bool bf16, int64_t rows, int64_t k, float* out) {
  if (bf16) {
    DotRowsBF16(x, static_cast<const uint16_t*>(e), rows, k, out);
  } else {
    DotRowsF32(x, static_cast<const float*>(e), rows, k, out);
  }
}

void AttentionHead(const float* q, const void* keys, const void* values, bool bf16, int64_t length, int64_t dim,
                   float scale, float* scores, float* out) {
  if (bf16) {
    DecodeAttentionHeadBF16(q, static_cast<const uint16_t*>(keys), static_cast<const uint16_t*>(values), length, dim,
                            scale, scores, out);
  } else {
    DecodeAttentionHeadF32(q, static_cast<const float*>(keys), static_cast<const float*>(values), length, dim, scale,
                           scores, out);
  }
}

void Gelu(float* p, int64_t n, bool tanh_approximation) {
  constexpr float kInvSqrt2 = 0.70710678118654752f, kSqrt2OverPi = 0.79788456080286536f;
  if (tanh_approximation) {
    for (int64_t i = 0; i < n; ++i) {
      const float v = p[i];
      p[i] = 0.5f * v * (1.0f + std::tanh(kSqrt2OverPi * (v + 0.044715f * v * v * v)));
    }
  } else {
    for (int64_t i = 0; i < n; ++i) p[i] = 0.5f * p[i] * (1.0f + std::erf(p[i] * kInvSqrt2));
  }
}

}  // namespace raw

}  // namespace fuji::engine
