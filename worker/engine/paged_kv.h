// A paged KV cache: the keys and values of many sequences in one pool of fixed-size blocks, so
// sequences of any length share memory without reserving their maximum up front (vLLM's
// PagedAttention layout). Each sequence holds a block table: position p lives in row
// p % block_size of block table[p / block_size].
#pragma once

#include <cstdint>
#include <vector>

#include <ATen/core/Tensor.h>

#include "lib/common/status.h"
#include "lib/model/model_config.h"

namespace fuji::engine {

// Bytes one block takes over all layers (keys and values).
int64_t BytesPerBlock(const ModelConfig& config, at::ScalarType dtype, int64_t block_size);
// How many blocks of block_size tokens fit in `bytes`.
int64_t BlocksForBytes(const ModelConfig& config, at::ScalarType dtype, int64_t bytes, int64_t block_size = 16);

class KvBlockPool {
 public:
  // RESOURCE_EXHAUSTED when the device cannot hold the pool; INVALID_ARGUMENT for bad sizes.
  static Result<KvBlockPool> Create(const ModelConfig& config, int64_t num_blocks, int64_t block_size,
                                    at::ScalarType dtype, at::Device device);

  int64_t num_blocks() const { return num_blocks_; }
  int64_t block_size() const { return block_size_; }
  int64_t free_blocks() const { return static_cast<int64_t>(free_.size()); }
  int64_t bytes() const;
  // Blocks needed to hold `tokens` positions.
  int64_t BlocksFor(int64_t tokens) const { return (tokens + block_size_ - 1) / block_size_; }

  // Appends blocks to `table` until it holds `tokens` positions; false (and nothing taken) when
  // the free list is too short.
  bool Grow(std::vector<int32_t>* table, int64_t tokens);
  // Returns every block of `table` to the free list and clears it.
  void Release(std::vector<int32_t>* table);

  // Keys [num_blocks, n_head, head_dim, block_size] (transposed within a block: one dimension of
  // a block's positions is contiguous, so attention scores sixteen positions in one vector) and
  // values [num_blocks, n_head, block_size, head_dim] for `layer`.
  at::Tensor& keys(int64_t layer) { return keys_[static_cast<size_t>(layer)]; }
  at::Tensor& values(int64_t layer) { return values_[static_cast<size_t>(layer)]; }

 private:
  KvBlockPool() = default;
  int64_t num_blocks_ = 0, block_size_ = 0;
  std::vector<at::Tensor> keys_, values_;
  std::vector<int32_t> free_;  // a stack: the most recently freed block is reused first
};

}  // namespace fuji::engine
