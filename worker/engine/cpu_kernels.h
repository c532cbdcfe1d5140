// Memory-bound CPU kernels for batch-1 decode: one row of activations times a weight matrix.
// At batch 1 every weight is read once per token, so these kernels only have to stream the
// weights at memory bandwidth; BLAS's general GEMM paths do not (and fight OpenMP for cores).
#pragma once

#include <cstdint>
#include <vector>

#include <ATen/core/Tensor.h>

namespace fuji::engine {

// x [1, K] (float) @ w [K, N] + bias [N] for a row-major w (HF's Conv1D layout), float or
// bfloat16 weights. Returns [1, N] float.
at::Tensor RowTimesMatrix(const at::Tensor& x, const at::Tensor& w, const at::Tensor& bias);

// RowTimesMatrix for each row of x [M, K] (float or bfloat16): [M, N] float, each row computed
// with RowTimesMatrix's arithmetic (the same split of K over threads, the same order of sums), so
// a row's result does not depend on M. The weights stream from memory once for all M rows (in
// column tiles that stay in cache while every row uses them): for a few rows this beats BLAS's
// GEMM, whose small-M paths are far from the memory bound.
at::Tensor RowsTimesMatrix(const at::Tensor& x, const at::Tensor& w, const at::Tensor& bias);

// x [1, K] (float) against every row of e [V, K]: [1, V] float (the tied output embedding).
at::Tensor RowDotRows(const at::Tensor& x, const at::Tensor& e);

// Attention of one new token over the first `length` cached positions, per head:
// softmax(q . K[h, :length] * scale) . V[h, :length]. q: [1, H, 1, D]; keys, values:
// [1, H, capacity, D] (float or bfloat16). Returns [1, H * D] float. (libtorch's bmm runs these
// tiny per-head products through a per-batch loop that cost more than the weights' reads.)
at::Tensor DecodeAttention(const at::Tensor& q, const at::Tensor& keys, const at::Tensor& values,
                           int64_t length, double scale);

// RowDotRows for each row of x [M, K] (float or bfloat16): [M, V] float, every row computed with
// RowDotRows's arithmetic (so a row's result does not depend on M), e read once for all rows.
at::Tensor RowsDotRows(const at::Tensor& x, const at::Tensor& e);

// DecodeAttention for R new tokens of different sequences whose keys and values live in a block
// pool (paged_kv.h): keys [num_blocks, H, D, block_size] (transposed within a block), values
// [num_blocks, H, block_size, D]; q [R, H * D]; row r attends over
// positions [0, lengths[r]) found through its block table tables[table_offsets[r] ...]. exact: the
// same arithmetic as DecodeAttention per row and head; otherwise the scores' dot products sum in
// sixteen lanes (vectorized, rounded differently). Returns [R, H * D] float.
at::Tensor PagedDecodeAttention(const at::Tensor& q, const at::Tensor& keys, const at::Tensor& values,
                                const std::vector<int32_t>& tables, const std::vector<int64_t>& table_offsets,
                                const std::vector<int64_t>& lengths, double scale, bool exact = true);

// GELU of one row, exact (erf) or tanh-approximated, computed in float. Returns float.
at::Tensor GeluRow(const at::Tensor& x, bool tanh_approximation);

// The kernels above on raw pointers, for a caller that runs them inside its own parallel region
// (Gpt2Model's fused decode step) with the same arithmetic. `bf16`: the weights are bfloat16
// (uint16_t), else float.
namespace raw {
// acc[0, n) += x[0, k) @ w[k, n] (w row-major, k rows): one thread's block of RowTimesMatrix.
void RowTimesMatrixAccumulate(const float* x, const void* w, bool bf16, int64_t k, int64_t n, float* acc);
// out[r] = x . e[r] for rows [0, rows) of e (row length k): one thread's range of RowDotRows.
void DotRows(const float* x, const void* e, bool bf16, int64_t rows, int64_t k, float* out);
// One head of DecodeAttention: keys and values of that head, `length` positions of `dim`;
// scores holds `length` floats.
void AttentionHead(const float* q, const void* keys, const void* values, bool bf16, int64_t length, int64_t dim,
                   float scale, float* scores, float* out);
// GeluRow's arithmetic in place on n floats.
void Gelu(float* p, int64_t n, bool tanh_approximation);
}  // namespace raw

// True for one row of float or bfloat16 activations on the CPU with no autograd graph to record:
// the decode step these kernels serve.
bool IsDecodeRow(const at::Tensor& x);
// IsDecodeRow(x) and a contiguous float or bfloat16 CPU weight matrix.
bool DecodeKernelApplies(const at::Tensor& x, const at::Tensor& w);

}  // namespace fuji::engine
