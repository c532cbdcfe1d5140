// Memory-bound CPU kernels for batch-1 decode: one row of activations times a weight matrix.
// At batch 1 every weight is read once per token, so these kernels only have to stream the
// weights at memory bandwidth; BLAS's general GEMM paths do not (and fight OpenMP for cores).
#pragma once

#include <cstdint>

#include <ATen/core/Tensor.h>

namespace fuji::engine {

// x [1, K] (float) @ w [K, N] + bias [N] for a row-major w (HF's Conv1D layout), float or
// bfloat16 weights. Returns [1, N] float.
at::Tensor RowTimesMatrix(const at::Tensor& x, const at::Tensor& w, const at::Tensor& bias);

// x [1, K] (float) against every row of e [V, K]: [1, V] float (the tied output embedding).
at::Tensor RowDotRows(const at::Tensor& x, const at::Tensor& e);

// True when the kernels apply: CPU tensors, one row, float or bfloat16 contiguous weights and
// no autograd graph to record.
bool DecodeKernelApplies(const at::Tensor& x, const at::Tensor& w);

}  // namespace fuji::engine
