// Implements batch_sampler.h: splitmix64, the per-epoch Fisher-Yates shuffle and rank slicing.
#include "worker/data/batch_sampler.h"

#include <numeric>
#include <string>

namespace fuji::data {

uint64_t SplitMix64::Next() {
  uint64_t z = (state_ += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

uint64_t SplitMix64::Below(uint64_t n) {
  // Values below `threshold` would make some residues more likely; 2^64 mod n of them.
  const uint64_t threshold = (0 - n) % n;
  for (;;) {
    const uint64_t r = Next();
    if (r >= threshold) return r % n;
  }
}

std::vector<int64_t> ShuffledOrder(int64_t n, uint64_t seed, int64_t epoch) {
  std::vector<int64_t> order(static_cast<size_t>(n));
  std::iota(order.begin(), order.end(), int64_t{0});
  SplitMix64 seeder(seed);
  const uint64_t mixed_seed =
      seeder.Next() ^ (static_cast<uint64_t>(epoch) * 0xd1b54a32d192ed03ULL);
  SplitMix64 rng(mixed_seed);
  for (int64_t i = n - 1; i > 0; --i) {
    const int64_t j = static_cast<int64_t>(rng.Below(static_cast<uint64_t>(i) + 1));
    std::swap(order[static_cast<size_t>(i)], order[static_cast<size_t>(j)]);
  }
  return order;
}

Result<BatchSampler> BatchSampler::Create(const SamplerOptions& options) {
  if (options.world_size < 1) {
    return InvalidArgument("world size " + std::to_string(options.world_size) + " must be >= 1");
  }
  if (options.rank < 0 || options.rank >= options.world_size) {
    return InvalidArgument("rank " + std::to_string(options.rank) + " outside [0, " +
                           std::to_string(options.world_size) + ")");
  }
  if (options.micro_batch < 1) {
    return InvalidArgument("micro-batch " + std::to_string(options.micro_batch) + " must be >= 1");
  }
  if (options.grad_accum < 1) {
    return InvalidArgument("gradient accumulation " + std::to_string(options.grad_accum) +
                           " must be >= 1");
  }
  if (options.num_train_blocks < 1) return InvalidArgument("no training blocks");
  return BatchSampler(options);
}

const std::vector<int64_t>& BatchSampler::Order(int64_t epoch) {
  for (int k = 0; k < 2; ++k) {
    if (cached_epoch_[k] == epoch) return cached_order_[k];
  }
  const int k = next_slot_;
  next_slot_ ^= 1;
  cached_order_[k] = ShuffledOrder(options_.num_train_blocks, options_.seed, epoch);
  cached_epoch_[k] = epoch;
  return cached_order_[k];
}

int64_t BatchSampler::BlockAt(int64_t position) {
  const int64_t n = options_.num_train_blocks;
  return Order(position / n)[static_cast<size_t>(position % n)];
}

std::vector<int64_t> BatchSampler::GlobalBlocks(int64_t step, int64_t micro_step) {
  const int64_t g = options_.world_size * options_.micro_batch;
  const int64_t first = (step * options_.grad_accum + micro_step) * g;
  std::vector<int64_t> blocks(static_cast<size_t>(g));
  for (int64_t i = 0; i < g; ++i) blocks[static_cast<size_t>(i)] = BlockAt(first + i);
  return blocks;
}

std::vector<int64_t> BatchSampler::Blocks(int64_t step, int64_t micro_step) {
  const int64_t g = options_.world_size * options_.micro_batch;
  const int64_t first =
      (step * options_.grad_accum + micro_step) * g + options_.rank * options_.micro_batch;
  std::vector<int64_t> blocks(static_cast<size_t>(options_.micro_batch));
  for (int64_t i = 0; i < options_.micro_batch; ++i) {
    blocks[static_cast<size_t>(i)] = BlockAt(first + i);
  }
  return blocks;
}

int64_t BatchSampler::EpochOf(int64_t step, int64_t micro_step) const {
  const int64_t g = options_.world_size * options_.micro_batch;
  return (step * options_.grad_accum + micro_step) * g / options_.num_train_blocks;
}

}  // namespace fuji::data
