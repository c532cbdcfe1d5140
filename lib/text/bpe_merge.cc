// The BPE merge loop over a linked list of symbols with a min-heap of candidate pairs.
#include "lib/text/bpe_merge.h"

#include <algorithm>

namespace fuji::text {

void MergeTable::Set(int32_t left, int32_t right, Merge merge) {
  merges_.insert_or_assign(Key(left, right), merge);
}

const Merge* MergeTable::Find(int32_t left, int32_t right) const {
  const auto it = merges_.find(Key(left, right));
  return it == merges_.end() ? nullptr : &it->second;
}

namespace {

constexpr int32_t kMerged = -1;  // the id of a symbol absorbed into its left neighbour

// An adjacent pair that merges, remembered with the ids it had when queued: once either side
// changes, the entry is stale and ignored (the new pair was queued when it formed).
struct Candidate {
  Merge merge;
  int32_t left;  // position of the left symbol; positions keep word order
  int32_t right;
  int32_t left_id;
  int32_t right_id;
};

bool RankGreater(const Candidate& a, const Candidate& b) {
  return a.merge.rank > b.merge.rank;
}

class Merger {
 public:
  Merger(const MergeTable& table, std::vector<int32_t>* ids)
      : table_(table), ids_(*ids), next_(ids->size()), prev_(ids->size()) {
    const int32_t n = static_cast<int32_t>(ids_.size());
    for (int32_t i = 0; i < n; ++i) {
      next_[i] = i + 1;  // n: none
      prev_[i] = i - 1;  // -1: none
    }
    for (int32_t i = 0; i + 1 < n; ++i) Queue(i, i + 1);
  }

  void Run() {
    std::vector<Candidate> batch;
    while (PopBatch(&batch)) MergeBatch(batch);
    ids_.erase(std::remove(ids_.begin(), ids_.end(), kMerged), ids_.end());
  }

 private:
  void Queue(int32_t left, int32_t right) {
    const Merge* merge = table_.Find(ids_[left], ids_[right]);
    if (merge == nullptr) return;
    heap_.push_back({*merge, left, right, ids_[left], ids_[right]});
    std::push_heap(heap_.begin(), heap_.end(), RankGreater);
  }

  bool IsCurrent(const Candidate& c) const {
    return ids_[c.left] == c.left_id && next_[c.left] == c.right && ids_[c.right] == c.right_id;
  }

  // Pops every current candidate of the lowest rank, in word order without duplicates.
  bool PopBatch(std::vector<Candidate>* batch) {
    batch->clear();
    while (batch->empty() && !heap_.empty()) {
      const int32_t rank = heap_.front().merge.rank;
      while (!heap_.empty() && heap_.front().merge.rank == rank) {
        std::pop_heap(heap_.begin(), heap_.end(), RankGreater);
        if (IsCurrent(heap_.back())) batch->push_back(heap_.back());
        heap_.pop_back();
      }
    }
    std::sort(batch->begin(), batch->end(),
              [](const Candidate& a, const Candidate& b) { return a.left < b.left; });
    batch->erase(
        std::unique(batch->begin(), batch->end(),
                    [](const Candidate& a, const Candidate& b) { return a.left == b.left; }),
        batch->end());
    return !batch->empty();
  }

  void MergeBatch(const std::vector<Candidate>& batch) {
    // Distinct pairs share a rank only through gpt-3-encoder's "left,right" string keys colliding;
    // it then merges the pair that came last in the word and leaves the others for later steps.
    const int32_t left_id = batch.back().left_id;
    const int32_t right_id = batch.back().right_id;
    merged_.clear();
    for (const Candidate& c : batch) {
      if (c.left_id != left_id || c.right_id != right_id) {
        heap_.push_back(c);
        std::push_heap(heap_.begin(), heap_.end(), RankGreater);
        continue;
      }
      // In a run such as "a a a" for the pair (a, a), the second occurrence lost its left
      // symbol to the first.
      if (!IsCurrent(c)) continue;
      ids_[c.left] = c.merge.merged_id;
      ids_[c.right] = kMerged;
      next_[c.left] = next_[c.right];
      if (next_[c.right] < static_cast<int32_t>(ids_.size())) prev_[next_[c.right]] = c.left;
      merged_.push_back(c.left);
    }
    // Pairs formed by this step compete from the next step on, as in the reference.
    for (const int32_t pos : merged_) {
      if (prev_[pos] >= 0) Queue(prev_[pos], pos);
      if (next_[pos] < static_cast<int32_t>(ids_.size())) Queue(pos, next_[pos]);
    }
  }

  const MergeTable& table_;
  std::vector<int32_t>& ids_;
  std::vector<int32_t> next_;
  std::vector<int32_t> prev_;
  std::vector<Candidate> heap_;  // min-heap on rank
  std::vector<int32_t> merged_;
};

}  // namespace

void ApplyMerges(const MergeTable& table, std::vector<int32_t>* ids) {
  if (ids->size() < 2) return;
  Merger(table, ids).Run();
}

}  // namespace fuji::text
