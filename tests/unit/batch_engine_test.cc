// Continuous batching (worker/engine/batch_engine.h) against Generate: the same requests give the
// same tokens alone and in a mixed batch, with a pool too small for all of them (preemption and
// waiting), with chunked prefill, with cancellations and next to refused requests.
#include <map>

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "worker/engine/batch_engine.h"
#include "worker/engine/cpu_kernels.h"
#include "worker/engine/generate.h"
#include "worker/engine/random_init.h"

namespace fuji::engine {
namespace {

std::unique_ptr<Gpt2Model> RandomModel(const ModelConfig& config, at::ScalarType dtype) {
  const auto layout = ParameterLayout(config);
  std::vector<at::Tensor> params;
  for (size_t i = 0; i < layout.size(); ++i) params.push_back(RandomParameter(layout[i], 11, i).to(dtype));
  return std::make_unique<Gpt2Model>(config, std::move(params));
}

// 16 mixed requests: prompts of 5..60 tokens, 6..40 new tokens, greedy and seeded sampling,
// some running to their limit and some free to stop at EOS.
std::vector<BatchRequest> MixedRequests(const ModelConfig& config) {
  std::vector<BatchRequest> out;
  for (int i = 0; i < 16; ++i) {
    BatchRequest r;
    r.id = "r" + std::to_string(i);
    const int len = 5 + (i * 37) % 56;
    for (int t = 0; t < len; ++t) r.prompt.push_back(static_cast<int32_t>((i * 131 + t * 17 + 3) % config.vocab_size));
    r.options.max_new_tokens = 6 + (i * 13) % 35;
    r.options.ignore_eos = i % 2 == 0;
    if (i % 3 == 1) {
      r.options.sampling.greedy = false;
      r.options.sampling.seed = 1000 + static_cast<uint64_t>(i);
      r.options.sampling.temperature = 0.8 + 0.05 * (i % 4);
      r.options.sampling.top_k = i % 2 == 0 ? 40 : 0;
      r.options.sampling.top_p = i % 5 == 0 ? 0.9 : 1.0;
    }
    out.push_back(std::move(r));
  }
  return out;
}

struct Outcome {
  std::vector<int32_t> tokens;
  std::string finish_reason;
};

// Steps the engine until idle; checks every request's token indices run 0, 1, 2, ...
std::map<std::string, Outcome> RunToIdle(BatchEngine* engine, std::map<std::string, Outcome> out = {},
                                         int max_steps = 100000) {
  for (int step = 0; !engine->Idle(); ++step) {
    EXPECT_LT(step, max_steps) << "the engine does not drain";
    if (step >= max_steps) break;
    auto events = engine->Step();
    EXPECT_TRUE(events.ok()) << events.status().ToString();
    if (!events.ok()) break;
    for (const BatchEvent& e : *events) {
      Outcome& o = out[e.id];
      EXPECT_TRUE(o.finish_reason.empty()) << e.id << " has an event after it finished";
      if (e.kind == BatchEvent::Kind::kToken) {
        EXPECT_EQ(e.index, static_cast<int64_t>(o.tokens.size())) << e.id;
        o.tokens.push_back(e.token);
      } else {
        o.finish_reason = e.finish_reason;
        if (e.finish_reason != "cancelled") {
          EXPECT_GE(e.timings.prefill_ms, e.timings.queue_ms) << e.id;
        }
      }
    }
  }
  return out;
}

class BatchEngineTest : public ::testing::Test {
 protected:
  void SetUp() override {
    config_ = *ArchitectureConfig("tiny");  // 2 layers, 68 wide, 17 heads of 4
    config_.vocab_size = 512;
    config_.n_positions = 128;
    config_.eos_token_id = 7;
    ASSERT_TRUE(config_.Validate().ok());
    model_ = RandomModel(config_, at::kFloat);
  }

  std::vector<int32_t> Alone(const BatchRequest& r, const Gpt2Model& model) {
    auto tokens = Generate(model, r.prompt, r.options, nullptr);
    EXPECT_TRUE(tokens.ok()) << tokens.status().ToString();
    return tokens.ok() ? *tokens : std::vector<int32_t>{};
  }

  std::string Expected(const BatchRequest& r, const std::vector<int32_t>& tokens) {
    if (!r.options.ignore_eos && !tokens.empty() && tokens.back() == config_.eos_token_id) return "eos";
    return "length";
  }

  void ExpectSameAsGenerate(const Gpt2Model& model, const std::vector<BatchRequest>& requests,
                            const BatchEngineOptions& options, int64_t* preemptions = nullptr,
                            int64_t* max_batch_seen = nullptr) {
    auto engine = BatchEngine::Create(model, options);
    ASSERT_TRUE(engine.ok()) << engine.status().ToString();
    for (const BatchRequest& r : requests) ASSERT_TRUE((*engine)->Add(r).ok()) << r.id;
    auto outcomes = RunToIdle(engine->get());
    ASSERT_EQ(outcomes.size(), requests.size());
    for (const BatchRequest& r : requests) {
      const std::vector<int32_t> alone = Alone(r, model);
      EXPECT_EQ(outcomes[r.id].tokens, alone) << r.id << " (" << r.prompt.size() << " prompt tokens, "
                                               << (r.options.sampling.greedy ? "greedy" : "sampled") << ")";
      EXPECT_EQ(outcomes[r.id].finish_reason, Expected(r, alone)) << r.id;
    }
    EXPECT_EQ((*engine)->free_blocks(), options.num_blocks) << "every block comes back";
    if (preemptions != nullptr) *preemptions = (*engine)->preemptions();
    if (max_batch_seen != nullptr) *max_batch_seen = (*engine)->max_batch_seen();
  }

  ModelConfig config_;
  std::unique_ptr<Gpt2Model> model_;
};

TEST_F(BatchEngineTest, MixedBatchOfSixteenGivesTheTokensOfGenerate) {
  BatchEngineOptions options;
  options.num_blocks = 256;
  int64_t preemptions = -1, max_batch_seen = 0;
  ExpectSameAsGenerate(*model_, MixedRequests(config_), options, &preemptions, &max_batch_seen);
  EXPECT_EQ(preemptions, 0);
  EXPECT_EQ(max_batch_seen, 16) << "all sixteen run in one batch";
}

TEST_F(BatchEngineTest, SeededSampledRequestIsTheSameAloneAndBatched) {
  std::vector<BatchRequest> requests = MixedRequests(config_);
  BatchRequest sampled = requests[1];
  ASSERT_FALSE(sampled.options.sampling.greedy);
  BatchEngineOptions options;
  options.num_blocks = 256;
  auto engine = BatchEngine::Create(*model_, options);
  ASSERT_TRUE(engine.ok());
  ASSERT_TRUE((*engine)->Add(sampled).ok());
  auto alone = RunToIdle(engine->get());
  ASSERT_TRUE((*engine)->Add(sampled).ok()) << "a finished id can be used again";
  for (size_t i = 2; i < requests.size(); ++i) ASSERT_TRUE((*engine)->Add(requests[i]).ok());
  auto batched = RunToIdle(engine->get());
  EXPECT_EQ(alone[sampled.id].tokens, batched[sampled.id].tokens);
  EXPECT_EQ(alone[sampled.id].tokens, Alone(sampled, *model_));
  // A different seed gives a different stream: the seed is used.
  BatchRequest other = sampled;
  other.options.sampling.seed += 1;
  EXPECT_NE(Alone(other, *model_), alone[sampled.id].tokens);
}

TEST_F(BatchEngineTest, PoolTooSmallForAllStillFinishesEveryRequestWithTheSameTokens) {
  BatchEngineOptions options;
  options.num_blocks = 8;  // the largest request needs 7 blocks of 16; all sixteen need far more
  int64_t preemptions = 0;
  ExpectSameAsGenerate(*model_, MixedRequests(config_), options, &preemptions);
  EXPECT_GT(preemptions, 0) << "the pool forces preemption";
}

TEST_F(BatchEngineTest, ChunkedPrefillAndSmallBlocksGiveTheSameTokens) {
  BatchEngineOptions options;
  options.num_blocks = 400;
  options.block_size = 3;
  options.prefill_chunk = 7;
  options.max_batch = 5;
  ExpectSameAsGenerate(*model_, MixedRequests(config_), options);
}

// bf16: the batch's GEMMs (oneDNN, bf16 out) and batch 1's GEMV (float accumulators, rounded to
// bf16 after) round differently. Greedy requests keep Generate's tokens; a sampled stream follows
// its sampler's uniforms through probabilities that differ in the third digit, so it may part
// from Generate's after some tokens: the test prints where, and requires the greedy ones equal.
TEST_F(BatchEngineTest, Bf16BatchGivesTheGreedyTokensOfGenerate) {
  auto model = RandomModel(config_, at::kBFloat16);
  BatchEngineOptions options;
  options.num_blocks = 256;
  const std::vector<BatchRequest> requests = MixedRequests(config_);
  auto engine = BatchEngine::Create(*model, options);
  ASSERT_TRUE(engine.ok());
  for (const BatchRequest& r : requests) ASSERT_TRUE((*engine)->Add(r).ok());
  auto outcomes = RunToIdle(engine->get());
  int sampled_same = 0, sampled = 0;
  for (const BatchRequest& r : requests) {
    const std::vector<int32_t> alone = Alone(r, *model);
    if (r.options.sampling.greedy) {
      EXPECT_EQ(outcomes[r.id].tokens, alone) << r.id;
      continue;
    }
    ++sampled;
    const auto& got = outcomes[r.id].tokens;
    size_t agree = 0;
    while (agree < got.size() && agree < alone.size() && got[agree] == alone[agree]) ++agree;
    sampled_same += agree == alone.size() && got.size() == alone.size();
    std::printf("bf16 sampled %s: first %zu of %zu tokens as Generate's\n", r.id.c_str(), agree, alone.size());
  }
  std::printf("bf16: %d of %d sampled requests identical to Generate's\n", sampled_same, sampled);
}

TEST_F(BatchEngineTest, CancelFreesItsBlocksAndEndsOnlyThatRequest) {
  std::vector<BatchRequest> requests = MixedRequests(config_);
  requests.resize(3);
  for (auto& r : requests) r.options.max_new_tokens = 30;
  BatchEngineOptions options;
  options.num_blocks = 64;
  auto engine = BatchEngine::Create(*model_, options);
  ASSERT_TRUE(engine.ok());
  for (const auto& r : requests) ASSERT_TRUE((*engine)->Add(r).ok());
  std::map<std::string, Outcome> first;
  for (int i = 0; i < 5; ++i) {
    auto events = (*engine)->Step();
    ASSERT_TRUE(events.ok());
    for (const auto& e : *events) {
      ASSERT_EQ(e.kind, BatchEvent::Kind::kToken);
      first[e.id].tokens.push_back(e.token);
    }
  }
  const int64_t free_before = (*engine)->free_blocks();
  EXPECT_TRUE((*engine)->Cancel("r1"));
  EXPECT_FALSE((*engine)->Cancel("r1"));
  EXPECT_FALSE((*engine)->Cancel("nobody"));
  // r1: 5 + 37 prompt tokens and 4 fed back make 46 positions: 3 blocks.
  EXPECT_EQ((*engine)->free_blocks(), free_before + 3);
  auto all = RunToIdle(engine->get(), first);
  EXPECT_EQ(all["r1"].finish_reason, "cancelled");
  EXPECT_EQ(all["r1"].tokens, first["r1"].tokens) << "no token after the cancel";
  for (const char* id : {"r0", "r2"}) {
    const BatchRequest& r = requests[id[1] == '0' ? 0 : 2];
    EXPECT_EQ(all[id].tokens, Alone(r, *model_)) << id;
    EXPECT_EQ(all[id].finish_reason, "length") << id;
  }
  EXPECT_EQ((*engine)->free_blocks(), 64);
  // Cancelling a waiting request works too.
  ASSERT_TRUE((*engine)->Add(requests[0]).ok());
  EXPECT_TRUE((*engine)->Cancel("r0"));
  auto cancelled = RunToIdle(engine->get());
  EXPECT_EQ(cancelled["r0"].finish_reason, "cancelled");
}

TEST_F(BatchEngineTest, StopPredicateEndsAGenerationWithReasonStop) {
  BatchRequest r = MixedRequests(config_)[0];
  r.options.max_new_tokens = 30;
  const std::vector<int32_t> alone = Alone(r, *model_);
  ASSERT_EQ(alone.size(), 30u);
  const int32_t marker = alone[9];
  r.stop = [marker](const std::vector<int32_t>& generated) { return generated.back() == marker; };
  BatchEngineOptions options;
  options.num_blocks = 32;
  auto engine = BatchEngine::Create(*model_, options);
  ASSERT_TRUE((*engine)->Add(r).ok());
  auto out = RunToIdle(engine->get());
  EXPECT_EQ(out[r.id].finish_reason, "stop");
  const size_t first = static_cast<size_t>(std::find(alone.begin(), alone.end(), marker) - alone.begin());
  EXPECT_EQ(out[r.id].tokens, std::vector<int32_t>(alone.begin(), alone.begin() + static_cast<long>(first) + 1));
}

TEST_F(BatchEngineTest, BadRequestsAreRefusedWithoutAffectingOthers) {
  std::vector<BatchRequest> good = MixedRequests(config_);
  good.resize(4);
  BatchEngineOptions options;
  options.num_blocks = 7;  // the largest of the four needs 7
  auto engine = BatchEngine::Create(*model_, options);
  ASSERT_TRUE(engine.ok());
  for (const auto& r : good) ASSERT_TRUE((*engine)->Add(r).ok());
  auto bad = [&](auto edit) {
    BatchRequest r = good[0];
    r.id = "bad";
    edit(r);
    return (*engine)->Add(r);
  };
  EXPECT_EQ(bad([](BatchRequest& r) { r.prompt.clear(); }).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(bad([](BatchRequest& r) { r.prompt[0] = 512; }).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(bad([](BatchRequest& r) { r.prompt[0] = -1; }).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(bad([](BatchRequest& r) { r.options.max_new_tokens = 0; }).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(bad([](BatchRequest& r) { r.options.max_new_tokens = 200; }).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(bad([](BatchRequest& r) { r.id = ""; }).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(bad([](BatchRequest& r) { r.id = "r0"; }).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(bad([](BatchRequest& r) {
              r.options.sampling.greedy = false;
              r.options.sampling.top_p = 0;
            }).code(),
            StatusCode::kInvalidArgument);
  Status too_big = bad([](BatchRequest& r) {
    r.prompt.assign(100, 1);
    r.options.max_new_tokens = 28;
  });
  EXPECT_EQ(too_big.code(), StatusCode::kResourceExhausted);
  EXPECT_NE(too_big.message().find("KV blocks"), std::string::npos) << too_big.message();
  auto outcomes = RunToIdle(engine->get());
  EXPECT_EQ(outcomes.size(), good.size());
  for (const auto& r : good) EXPECT_EQ(outcomes[r.id].tokens, Alone(r, *model_)) << r.id;
  EXPECT_FALSE(BatchEngine::Create(*model_, {16, 0, 64, 256}).ok()) << "no blocks";
  EXPECT_FALSE(BatchEngine::Create(*model_, {0, 8, 64, 256}).ok()) << "no block size";
  EXPECT_FALSE(BatchEngine::Create(*model_, {16, 8, 0, 256}).ok()) << "no batch";
}

// The multi-row kernels give every row bit for bit what the batch-1 kernel gives it alone, for any
// number of rows: the register tiles (4 rows, 64 columns), their row and column tails and a K
// that is not a multiple of eight per thread, with float and bfloat16 weights.
TEST(MultiRowKernelsTest, EveryRowIsBitIdenticalToBatchOne) {
  at::manual_seed(5);
  for (const at::ScalarType dtype : {at::kFloat, at::kBFloat16}) {
    for (const auto& [k, n] : std::vector<std::pair<int64_t, int64_t>>{{768, 2304}, {101, 83}, {64, 16}}) {
      const at::Tensor w = at::randn({k, n}).to(dtype), bias = at::randn({n}).to(dtype);
      for (const int64_t m : {1, 2, 3, 5, 9, 16, 33}) {
        const at::Tensor x = at::randn({m, k});
        const at::Tensor rows = RowsTimesMatrix(x, w, bias);
        ASSERT_EQ(rows.sizes(), (std::vector<int64_t>{m, n}));
        for (int64_t r = 0; r < m; ++r) {
          EXPECT_TRUE(at::equal(rows[r], RowTimesMatrix(x.narrow(0, r, 1), w, bias)[0]))
              << "RowsTimesMatrix row " << r << " of " << m << ", K " << k << ", N " << n << ", " << dtype;
        }
      }
    }
    for (const auto& [v, k] : std::vector<std::pair<int64_t, int64_t>>{{1003, 768}, {77, 50}}) {
      const at::Tensor e = at::randn({v, k}).to(dtype);
      for (const int64_t m : {1, 2, 4, 7, 16}) {
        const at::Tensor x = at::randn({m, k});
        const at::Tensor rows = RowsDotRows(x, e);
        for (int64_t r = 0; r < m; ++r) {
          EXPECT_TRUE(at::equal(rows[r], RowDotRows(x.narrow(0, r, 1), e)[0]))
              << "RowsDotRows row " << r << " of " << m << ", V " << v << ", K " << k << ", " << dtype;
        }
      }
    }
  }
}

// Paged attention with batch 1's arithmetic gives every row what DecodeAttention gives it over a
// contiguous cache holding the same keys and values, whatever the block size and the length.
TEST(MultiRowKernelsTest, PagedAttentionIsBitIdenticalToBatchOne) {
  at::manual_seed(7);
  const int64_t heads = 3, dim = 64, capacity = 70;
  for (const at::ScalarType dtype : {at::kFloat, at::kBFloat16}) {
    for (const int64_t block_size : {16, 32, 5}) {
      const int64_t blocks = (capacity + block_size - 1) / block_size;
      const at::Tensor keys = at::randn({1, heads, capacity, dim}).to(dtype);
      const at::Tensor values = at::randn({1, heads, capacity, dim}).to(dtype);
      // The pool holds the positions in reversed block order: table[b] = blocks - 1 - b.
      at::Tensor pool_k = at::zeros({blocks, heads, dim, block_size}, dtype);
      at::Tensor pool_v = at::zeros({blocks, heads, block_size, dim}, dtype);
      std::vector<int32_t> table;
      for (int64_t b = 0; b < blocks; ++b) table.push_back(static_cast<int32_t>(blocks - 1 - b));
      for (int64_t p = 0; p < capacity; ++p) {
        pool_k[table[static_cast<size_t>(p / block_size)]].select(2, p % block_size).copy_(keys[0].select(1, p));
        pool_v[table[static_cast<size_t>(p / block_size)]].select(1, p % block_size).copy_(values[0].select(1, p));
      }
      const std::vector<int64_t> lengths = {1, 3, 4, 9, 17, 40, 64, 70};
      const int64_t rows = static_cast<int64_t>(lengths.size());
      const at::Tensor q = at::randn({rows, heads * dim});
      std::vector<int32_t> tables;
      std::vector<int64_t> offsets;
      for (int64_t r = 0; r < rows; ++r) {
        offsets.push_back(static_cast<int64_t>(tables.size()));
        tables.insert(tables.end(), table.begin(), table.end());
      }
      const at::Tensor paged = PagedDecodeAttention(q, pool_k, pool_v, tables, offsets, lengths, 0.125, true);
      for (int64_t r = 0; r < rows; ++r) {
        const at::Tensor alone = DecodeAttention(q[r].view({1, heads, 1, dim}), keys, values,
                                                 lengths[static_cast<size_t>(r)], 0.125);
        EXPECT_TRUE(at::equal(paged[r], alone[0]))
            << "length " << lengths[static_cast<size_t>(r)] << ", block size " << block_size << ", " << dtype;
      }
    }
  }
}

TEST(BlocksForBytesTest, CountsKeysAndValuesOfEveryLayer) {
  ModelConfig c = *ArchitectureConfig("111m");
  // 2 (K, V) * 10 layers * 768 * 16 tokens * 4 bytes = 983,040 bytes per block.
  EXPECT_EQ(BytesPerBlock(c, at::kFloat, 16), 983040);
  EXPECT_EQ(BlocksForBytes(c, at::kFloat, 983040 * 10 + 5), 10);
  EXPECT_EQ(BlocksForBytes(c, at::kBFloat16, 983040 * 10), 20);
  EXPECT_EQ(BlocksForBytes(c, at::kFloat, -1), 0);
}

}  // namespace
}  // namespace fuji::engine
