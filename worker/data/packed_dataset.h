// Packing a token stream into fixed-length training blocks, with a deterministic held-out split.
#pragma once

#include <cstdint>
#include <memory>

#include "lib/common/status.h"
#include "worker/data/token_cache.h"

namespace fuji::data {

struct PackingOptions {
  int64_t seq_len = 0;
  int64_t n_positions = 0;         // the model's context; seq_len may not exceed it
  double holdout_fraction = 0.05;  // in [0, 0.5]
};

// The GPT recipe with stride seq_len: block b covers tokens [b*S, b*S + S] (S + 1 tokens);
// inputs = tokens[b*S, b*S + S), targets = tokens[b*S + 1, b*S + S + 1). Consecutive blocks share
// one token (the last target of b is the first input of b + 1), so every token but the first
// is a target exactly once; the tail of fewer than S tokens after the last block is dropped.
// num_blocks = (num_tokens - 1) / S. Documents run across block boundaries, separated by EOS.
//
// Held-out split: the LAST ceil(holdout_fraction * num_blocks) blocks (at least one when
// holdout_fraction > 0 and there are >= 2 blocks; never all blocks). Train blocks are [0, T),
// held-out blocks [T, num_blocks): contiguous, so they never share a block and the split depends
// only on the data and the options.
//
// Immutable after Create; const methods are safe from many threads. Shares ownership of the
// token cache.
class PackedDataset {
 public:
  // INVALID_ARGUMENT: "seq-len X must be at least 1", "seq-len X above n_positions Y",
  // "empty dataset (no tokens)", "dataset of N tokens is shorter than one block of seq_len+1
  // (S+1 tokens)", a holdout fraction outside [0, 0.5].
  static Result<PackedDataset> Create(std::shared_ptr<const TokenCache> tokens,
                                      const PackingOptions& options);
  // The same checks without a dataset: for validating a job before any rank starts.
  static Status Check(uint64_t num_tokens, const PackingOptions& options);

  int64_t seq_len() const { return seq_len_; }
  int64_t num_blocks() const { return num_blocks_; }
  int64_t num_train_blocks() const { return num_train_; }
  int64_t num_heldout_blocks() const { return num_blocks_ - num_train_; }
  // The dataset block of held-out sample j (j < num_heldout_blocks()).
  int64_t HeldoutBlock(int64_t j) const { return num_train_ + j; }
  bool IsHeldout(int64_t block) const { return block >= num_train_; }
  // The first token of a block.
  uint64_t BlockStart(int64_t block) const { return static_cast<uint64_t>(block) * seq_len_; }

  // Copies block's inputs and targets (seq_len ids each) into caller buffers. block < num_blocks().
  void CopyBlock(int64_t block, int64_t* inputs, int64_t* targets) const;
  void CopyBlock(int64_t block, int32_t* inputs, int32_t* targets) const;

  const TokenCache& tokens() const { return *tokens_; }

 private:
  PackedDataset() = default;
  std::shared_ptr<const TokenCache> tokens_;
  int64_t seq_len_ = 0;
  int64_t num_blocks_ = 0;
  int64_t num_train_ = 0;
};

}  // namespace fuji::data
