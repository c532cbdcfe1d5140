// BPE merging: the merge table and the merge loop, in gpt-3-encoder's exact order.
#pragma once

#include <cstdint>
#include <unordered_map>
#include <vector>

namespace fuji::text {

// What an adjacent pair of token ids merges into, and how early (lower rank merges first).
struct Merge {
  int32_t rank;
  int32_t merged_id;
};

class MergeTable {
 public:
  // Sets the merge for (left, right), replacing any earlier one.
  void Set(int32_t left, int32_t right, Merge merge);
  // The merge for (left, right), or nullptr if the pair never merges.
  const Merge* Find(int32_t left, int32_t right) const;

 private:
  static uint64_t Key(int32_t left, int32_t right) {
    return uint64_t{static_cast<uint32_t>(left)} << 32 | static_cast<uint32_t>(right);
  }
  std::unordered_map<uint64_t, Merge> merges_;
};

// Merges the token ids of one pre-tokenized piece in place, as gpt-3-encoder's bpe() does: each
// step takes the lowest rank among adjacent pairs (the pair found last in the piece on a tie of
// ranks) and merges every non-overlapping occurrence of that pair, left to right, before looking
// at the pairs this created. O(n log n) in the piece's length.
void ApplyMerges(const MergeTable& table, std::vector<int32_t>* ids);

}  // namespace fuji::text
