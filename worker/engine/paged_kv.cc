// The block pool of the paged KV cache.
#include "worker/engine/paged_kv.h"

#include <ATen/ATen.h>

namespace fuji::engine {

int64_t BytesPerBlock(const ModelConfig& config, at::ScalarType dtype, int64_t block_size) {
  return 2 * config.n_layer * config.n_head * block_size * config.head_dim() *
         static_cast<int64_t>(at::elementSize(dtype));
}

int64_t BlocksForBytes(const ModelConfig& config, at::ScalarType dtype, int64_t bytes, int64_t block_size) {
  const int64_t per = BytesPerBlock(config, dtype, block_size);
  return per > 0 && bytes > 0 ? bytes / per : 0;
}

Result<KvBlockPool> KvBlockPool::Create(const ModelConfig& config, int64_t num_blocks, int64_t block_size,
                                        at::ScalarType dtype, at::Device device) {
  if (block_size < 1 || block_size > 1024) {
    return InvalidArgument("block_size " + std::to_string(block_size) + " is outside 1..1024");
  }
  if (num_blocks < 1 || num_blocks > (int64_t{1} << 24)) {
    return InvalidArgument("num_blocks " + std::to_string(num_blocks) + " is outside 1.." +
                           std::to_string(int64_t{1} << 24));
  }
  KvBlockPool pool;
  pool.num_blocks_ = num_blocks;
  pool.block_size_ = block_size;
  const auto options = at::TensorOptions().dtype(dtype).device(device);
  try {
    for (int64_t l = 0; l < config.n_layer; ++l) {
      // Uninitialized: attention reads only the positions written, and untouched host pages cost
      // no memory until a sequence reaches them.
      pool.keys_.push_back(at::empty({num_blocks, config.n_head, config.head_dim(), block_size}, options));
      pool.values_.push_back(at::empty({num_blocks, config.n_head, block_size, config.head_dim()}, options));
    }
  } catch (const std::exception& e) {
    const std::string what = e.what();
    return ResourceExhausted("cannot allocate a KV cache of " + std::to_string(num_blocks) + " blocks (" +
                             std::to_string(BytesPerBlock(config, dtype, block_size) * num_blocks >> 20) +
                             " MiB): " + what.substr(0, what.find('\n')));
  }
  pool.free_.reserve(static_cast<size_t>(num_blocks));
  for (int64_t b = num_blocks - 1; b >= 0; --b) pool.free_.push_back(static_cast<int32_t>(b));
  return pool;
}

int64_t KvBlockPool::bytes() const {
  int64_t total = 0;
  for (const auto& t : keys_) total += t.numel() * static_cast<int64_t>(t.element_size());
  for (const auto& t : values_) total += t.numel() * static_cast<int64_t>(t.element_size());
  return total;
}

bool KvBlockPool::Grow(std::vector<int32_t>* table, int64_t tokens) {
  const int64_t need = BlocksFor(tokens) - static_cast<int64_t>(table->size());
  if (need <= 0) return true;
  if (need > free_blocks()) return false;
  for (int64_t i = 0; i < need; ++i) {
    table->push_back(free_.back());
    free_.pop_back();
  }
  return true;
}

void KvBlockPool::Release(std::vector<int32_t>* table) {
  for (auto it = table->rbegin(); it != table->rend(); ++it) free_.push_back(*it);
  table->clear();
}

}  // namespace fuji::engine
