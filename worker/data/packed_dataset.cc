// Implements packed_dataset.h: block arithmetic, the held-out split and the refusal messages.
#include "worker/data/packed_dataset.h"

#include <cmath>
#include <string>
#include <utility>

namespace fuji::data {

Status PackedDataset::Check(uint64_t num_tokens, const PackingOptions& options) {
  const int64_t s = options.seq_len;
  if (s < 1) return InvalidArgument("seq-len " + std::to_string(s) + " must be at least 1");
  if (s > options.n_positions) {
    return InvalidArgument("seq-len " + std::to_string(s) + " above n_positions " +
                           std::to_string(options.n_positions));
  }
  if (!(options.holdout_fraction >= 0.0 && options.holdout_fraction <= 0.5)) {
    return InvalidArgument("holdout fraction " + std::to_string(options.holdout_fraction) +
                           " outside [0, 0.5]");
  }
  if (num_tokens == 0) return InvalidArgument("empty dataset (no tokens)");
  if (num_tokens < static_cast<uint64_t>(s) + 1) {
    return InvalidArgument("dataset of " + std::to_string(num_tokens) +
                           " tokens is shorter than one block of seq_len+1 (" +
                           std::to_string(s + 1) + " tokens)");
  }
  return Status::Ok();
}

Result<PackedDataset> PackedDataset::Create(std::shared_ptr<const TokenCache> tokens,
                                            const PackingOptions& options) {
  if (tokens == nullptr) return InvalidArgument("no token cache");
  FUJI_RETURN_IF_ERROR(Check(tokens->num_tokens(), options));
  PackedDataset dataset;
  dataset.seq_len_ = options.seq_len;
  dataset.num_blocks_ =
      static_cast<int64_t>((tokens->num_tokens() - 1) / static_cast<uint64_t>(options.seq_len));
  int64_t heldout = 0;
  if (options.holdout_fraction > 0.0 && dataset.num_blocks_ >= 2) {
    // The epsilon keeps 0.1 * 30 from rounding up to 4.
    heldout = static_cast<int64_t>(
        std::ceil(options.holdout_fraction * static_cast<double>(dataset.num_blocks_) - 1e-9));
    if (heldout < 1) heldout = 1;
    if (heldout > dataset.num_blocks_ - 1) heldout = dataset.num_blocks_ - 1;
  }
  dataset.num_train_ = dataset.num_blocks_ - heldout;
  dataset.tokens_ = std::move(tokens);
  return dataset;
}

void PackedDataset::CopyBlock(int64_t block, int64_t* inputs, int64_t* targets) const {
  const uint64_t start = BlockStart(block);
  tokens_->CopyTokens(start, static_cast<size_t>(seq_len_), inputs);
  tokens_->CopyTokens(start + 1, static_cast<size_t>(seq_len_), targets);
}

void PackedDataset::CopyBlock(int64_t block, int32_t* inputs, int32_t* targets) const {
  const uint64_t start = BlockStart(block);
  tokens_->CopyTokens(start, static_cast<size_t>(seq_len_), inputs);
  tokens_->CopyTokens(start + 1, static_cast<size_t>(seq_len_), targets);
}

}  // namespace fuji::data
