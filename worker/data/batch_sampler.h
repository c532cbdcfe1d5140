// The rank-sharded, deterministically shuffled order of training blocks for each optimizer step.
#pragma once

#include <cstdint>
#include <vector>

#include "lib/common/status.h"

namespace fuji::data {

// splitmix64: a tiny seeded PRNG whose output is the same on every platform and standard library.
class SplitMix64 {
 public:
  explicit SplitMix64(uint64_t seed) : state_(seed) {}
  uint64_t Next();
  // Uniform in [0, n), n > 0, without modulo bias (rejection sampling).
  uint64_t Below(uint64_t n);

 private:
  uint64_t state_;
};

// A permutation of [0, n) for (seed, epoch): Fisher-Yates driven by SplitMix64.
std::vector<int64_t> ShuffledOrder(int64_t n, uint64_t seed, int64_t epoch);

struct SamplerOptions {
  int64_t num_train_blocks = 0;  // PackedDataset::num_train_blocks()
  int rank = 0;
  int world_size = 1;
  int64_t micro_batch = 1;  // samples per rank per micro-step
  int64_t grad_accum = 1;   // micro-steps per optimizer step
  uint64_t seed = 0;
};

// The samples of every (step, micro_step). The train blocks are visited in epochs; epoch e is
// ShuffledOrder(num_train_blocks, seed, e), and the epochs are concatenated into one infinite
// stream. Optimizer step s, micro-step a (0 <= a < grad_accum) takes the G = world_size *
// micro_batch consecutive stream positions starting at (s * grad_accum + a) * G; a global batch
// may straddle two epochs (rollover). Global sample g of that slice belongs to rank g / micro_batch
// at index g % micro_batch. Hence the union over ranks, in rank order, equals what one rank with
// micro_batch * world_size (and the same seed and grad_accum) sees: runs with the same global batch
// process the same samples whatever the world size.
//
// Not thread-safe (caches the permutations of the epochs in use); use one per thread.
class BatchSampler {
 public:
  // INVALID_ARGUMENT for a rank outside [0, world_size), non-positive sizes or no train blocks.
  static Result<BatchSampler> Create(const SamplerOptions& options);

  // This rank's micro_batch dataset block indices for (step, micro_step).
  std::vector<int64_t> Blocks(int64_t step, int64_t micro_step);
  // All world_size * micro_batch blocks of (step, micro_step), rank-major.
  std::vector<int64_t> GlobalBlocks(int64_t step, int64_t micro_step);
  // The epoch (0-based) that (step, micro_step)'s first global sample comes from.
  int64_t EpochOf(int64_t step, int64_t micro_step = 0) const;
  // Samples per optimizer step over all ranks: world_size * micro_batch * grad_accum.
  int64_t global_batch() const {
    return options_.world_size * options_.micro_batch * options_.grad_accum;
  }
  const SamplerOptions& options() const { return options_; }

 private:
  explicit BatchSampler(const SamplerOptions& options) : options_(options) {}
  // The block at stream position p.
  int64_t BlockAt(int64_t position);
  const std::vector<int64_t>& Order(int64_t epoch);

  SamplerOptions options_;
  // The two most recently used epochs' permutations.
  int64_t cached_epoch_[2] = {-1, -1};
  std::vector<int64_t> cached_order_[2];
  int next_slot_ = 0;
};

}  // namespace fuji::data
