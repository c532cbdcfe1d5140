// The GPT-2 network as Cerebras-GPT uses it: learned positions, pre-LayerNorm blocks, GELU MLP,
// tied input/output embedding. Parameters are held in one vector in the canonical order of
// ParameterLayout(), so loading, random init, export and ZeRO's flat buffers share one naming.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>

#include "lib/model/model_config.h"
#include "lib/model/param_layout.h"

namespace fuji::engine {

// Per-layer attention keys and values, preallocated for max_len positions: [B, H, max_len, D].
class KvCache {
 public:
  KvCache(const ModelConfig& config, int64_t batch, int64_t max_len, at::ScalarType dtype,
          at::Device device);
  int64_t length() const { return length_; }
  int64_t capacity() const { return capacity_; }
  void Reset() { length_ = 0; }

 private:
  friend class Gpt2Model;
  std::vector<at::Tensor> keys_, values_;
  int64_t length_ = 0;
  int64_t capacity_ = 0;
};

// Owns the parameters. Forward is const and may run concurrently on distinct caches.
class Gpt2Model {
 public:
  // params must follow ParameterLayout(config) in order and shape (the loader guarantees it).
  Gpt2Model(ModelConfig config, std::vector<at::Tensor> params);

  const ModelConfig& config() const { return config_; }
  std::vector<at::Tensor>& parameters() { return params_; }
  const std::vector<at::Tensor>& parameters() const { return params_; }
  at::ScalarType dtype() const;
  at::Device device() const;
  int64_t ParameterBytes() const;

  // ids: [B, T] int64. With a cache, the tokens continue the cached sequence and their keys and
  // values are appended; without one, attention is causal over the T tokens (training).
  // Returns the final-LayerNorm hidden states [B, T, C].
  at::Tensor Forward(const at::Tensor& ids, KvCache* cache) const;
  // hidden [..., C] -> logits [..., V] through the tied embedding.
  at::Tensor Logits(const at::Tensor& hidden) const;
  // A decode step of one sequence on the CPU: `token` at position cache->length() (its keys and
  // values appended), then its logits [1, V] float. The arithmetic of Forward and Logits, bit for
  // bit, in one parallel region: the threads meet at barriers between the pieces of a block (a
  // matrix's partial sums, their sum, attention, LayerNorm) instead of forking and joining for
  // each matrix, and no ATen op runs but LayerNorm. DecodeStepApplies: float or bfloat16 weights
  // on the CPU, a batch-1 cache with room, no autograd, no unit hooks (offload's streaming), and
  // FUJI_DECODE_UNFUSED unset (the per-op path, kept for comparison).
  bool DecodeStepApplies(const KvCache& cache) const;
  at::Tensor DecodeStep(int64_t token, KvCache* cache) const;

  // The pieces of Forward, for callers that run the network unit by unit (ZeRO gathers each
  // block's parameters just before its turn and computes backward block by block):
  // token + position embeddings of ids [B, T] continuing `past` cached positions -> [B*T, C];
  at::Tensor Embed(const at::Tensor& ids, int64_t past) const;
  // transformer block `layer` on x [B*T, C] -> [B*T, C];
  at::Tensor Block(int64_t layer, const at::Tensor& x, int64_t batch, int64_t steps,
                   KvCache* cache) const;
  // the final LayerNorm, x [B*T, C] -> [B*T, C].
  at::Tensor FinalNorm(const at::Tensor& x) const;

  // Continuous batching (batch_engine.h): N rows from different sequences run through the network
  // together. ids and positions are [N] int64; `attend(layer, qkv [N, 3C])` returns the attention
  // output [N, C] (the caller keeps the keys and values). The other layers are the same ops as
  // Forward's (one row: the batch-1 kernels). Returns the final-LayerNorm hidden states [N, C].
  // Up to kRowKernelMaxRows rows (on the CPU) run the Linear layers through RowsTimesMatrix (the
  // batch-1 arithmetic in register tiles of 4 rows by 64 columns, weights read once for all rows),
  // so a decoding row gets the token it would get alone; more rows (prompt chunks) use GEMM.
  // (111M MLP, fp32, 2 busy cores, ms per step, row kernels / OpenBLAS GEMM: 2 rows 0.95 / 7.3,
  // 8 rows 1.35 / 9.6, 16 rows 1.7 / 2.4, 32 rows 2.8 / 4.0, 64 rows 4.8 / 7.9, 128 rows 20 / 15.)
  // row_kernel_max_rows (at most kRowKernelMaxRows) lowers the bound for a step that has no row
  // held to batch 1's arithmetic: prompt rows alone run GEMM from kPromptRowKernelMaxRows + 1 rows
  // (first token of a lone 111M fp32 request, 2 cores: a 64-token prompt 69-77 ms with GEMM, 88-96
  // with the row kernels; a 20-token one 37-40 ms with the row kernels, 45-61 with GEMM).
  using RowAttention = std::function<at::Tensor(int64_t layer, const at::Tensor& qkv)>;
  static constexpr int64_t kRowKernelMaxRows = 64;
  static constexpr int64_t kPromptRowKernelMaxRows = 32;
  // bfloat16 weights: oneDNN's AVX-512 BF16 GEMM beats the row kernels (which widen every weight)
  // from 8 rows (111M, aggregate decode tokens/s at 8, 16, 32 rows: GEMM 206, 207, 248; row
  // kernels 190, 181, 202), so they keep the row kernels to 4 rows.
  static constexpr int64_t kBf16RowKernelMaxRows = 4;
  // The bound for this model's weights: kRowKernelMaxRows, or kBf16RowKernelMaxRows.
  int64_t RowKernelMaxRows() const;
  at::Tensor ForwardRows(const at::Tensor& ids, const at::Tensor& positions, const RowAttention& attend,
                         int64_t row_kernel_max_rows = kRowKernelMaxRows) const;
  // Logits of hidden rows [M, C] as float32 [M, V]. Up to kRowKernelMaxRows rows on the CPU are
  // computed with the arithmetic of the batch-1 kernel (RowsDotRows: the head read once for all
  // rows); more rows by a float GEMM (a bf16 head is widened a slice at a time, so logits never
  // round to bf16).
  at::Tensor LogitsRows(const at::Tensor& hidden) const;

  // Called around each unit's use in Forward and Logits: unit 0 is the embeddings (also used by
  // Logits), 1 + l is block l, n_layer + 1 the final LayerNorm. Parameter streaming (offload)
  // makes a unit's parameters resident in `before` and drops them in `after`.
  struct UnitHooks {
    std::function<void(int unit)> before, after;
  };
  void set_unit_hooks(UnitHooks hooks) { hooks_ = std::move(hooks); }

 private:
  at::Tensor Attention(int64_t layer, const at::Tensor& qkv, int64_t batch, int64_t steps,
                       KvCache* cache) const;
  // row_kernels: a few rows (up to kRowKernelMaxRows) go through the batch-1 kernels row by row
  // (RowsTimesMatrix, GeluRow), so each row's arithmetic is that of batch 1.
  at::Tensor BlockWith(int64_t layer, const at::Tensor& x,
                       const std::function<at::Tensor(const at::Tensor& qkv)>& attend, bool row_kernels) const;
  at::Tensor RowBlock(int64_t layer, const at::Tensor& x,
                      const std::function<at::Tensor(const at::Tensor& qkv)>& attend) const;
  const at::Tensor& P(int64_t index) const { return params_[static_cast<size_t>(index)]; }

  at::Tensor LogitsOf(const at::Tensor& hidden) const;
  void Before(int unit) const {
    if (hooks_.before) hooks_.before(unit);
  }
  void After(int unit) const {
    if (hooks_.after) hooks_.after(unit);
  }

  ModelConfig config_;
  std::vector<at::Tensor> params_;
  UnitHooks hooks_;
};

// Indices into the canonical layout.
namespace param_index {
constexpr int64_t kWte = 0;
constexpr int64_t kWpe = 1;
constexpr int64_t kPerLayer = 12;
constexpr int64_t kFirstLayer = 2;
enum LayerParam : int64_t {
  kLn1W, kLn1B, kAttnW, kAttnB, kAttnProjW, kAttnProjB, kLn2W, kLn2B, kFcW, kFcB, kMlpProjW, kMlpProjB
};
inline int64_t Layer(int64_t layer, LayerParam p) { return kFirstLayer + layer * kPerLayer + p; }
inline int64_t LnfW(const ModelConfig& c) { return kFirstLayer + c.n_layer * kPerLayer; }
inline int64_t LnfB(const ModelConfig& c) { return LnfW(c) + 1; }
inline int64_t LmHead(const ModelConfig& c) { return LnfW(c) + 2; }  // only when untied
}  // namespace param_index

}  // namespace fuji::engine
