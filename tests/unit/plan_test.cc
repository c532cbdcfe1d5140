// The memory planner: the seed study's findings on 40 GiB GPUs, ZeRO's arithmetic as the trainer
// keeps it, the recommendation, inference sized for its request and batched on a warm rank,
// parameter offload's host memory, and bad input.
#include <algorithm>
#include <optional>

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "lib/plan/plan.h"
#include "lib/plan/spec_plans.h"

namespace fuji::plan {
namespace {

constexpr int64_t kGiB = int64_t{1} << 30;

PlanRequest Request(const std::string& model, const std::string& mode, int gpus, int64_t gpu_memory,
                    const std::string& precision) {
  PlanRequest r;
  auto config = ResolveModel(model, nullptr);
  EXPECT_TRUE(config.ok()) << config.status().message();
  r.config = *config;
  r.mode = mode;
  r.gpus = gpus;
  r.gpu_memory_bytes = gpu_memory;
  r.precision = precision;
  return r;
}

const Plan& Find(const std::vector<Plan>& plans, int zero, const std::string& offload) {
  for (const Plan& p : plans) {
    if (p.zero == zero && p.offload == offload) return p;
  }
  ADD_FAILURE() << "no plan zero " << zero << " offload " << offload;
  return plans.front();
}

// One configuration through PlanOne (also an offload on a CPU device, which PlanAll never offers).
Plan One(const PlanRequest& r, int zero, const std::string& offload) {
  auto plan = PlanOne(r, zero, offload);
  EXPECT_TRUE(plan.ok()) << plan.status().message();
  return plan.ok() ? *plan : Plan{};
}

double GiB(int64_t b) { return static_cast<double>(b) / static_cast<double>(kGiB); }

// The seed: 13B inference on one 40 GB A100 ran out of memory in fp32 (40,459 MiB when it died),
// and took 5,723 MiB with DeepSpeed's offload. Its prompt and 64 new tokens fit 128 positions.
// fuji-rank adds its KV pool on the GPU (4 GiB by default, room for the batch of a warm rank).
TEST(PlanTest, ThirteenBillionInferenceOnOneFortyGiBGpu) {
  PlanRequest r = Request("13b", "infer", 1, 40 * kGiB, "fp32");
  r.seq_len = 128;
  EXPECT_NEAR(static_cast<double>(r.config.NumParameters()) / 1e9, 12.85, 0.01);
  auto fp32 = PlanAll(r);
  ASSERT_TRUE(fp32.ok()) << fp32.status().message();
  ASSERT_EQ(fp32->size(), 2u);
  const Plan& resident = Find(*fp32, 0, "none");
  EXPECT_NEAR(GiB(resident.breakdown.params_device), 47.9, 0.1);  // about 48 GiB of weights alone
  EXPECT_FALSE(resident.fits);
  EXPECT_NE(resident.why_not.find("GPU memory: needs"), std::string::npos) << resident.why_not;
  EXPECT_NE(resident.why_not.find("40.0 GiB available"), std::string::npos) << resident.why_not;
  const Plan& streamed = Find(*fp32, 3, "params");
  EXPECT_TRUE(streamed.fits);
  EXPECT_EQ(streamed.breakdown.kv_cache, kRankKvPoolBytesGpu / (40 * 2 * 16 * 5120 * 4) * (40 * 2 * 16 * 5120 * 4));
  EXPECT_LT(streamed.gpu_bytes - streamed.breakdown.kv_cache, 6 * kGiB);
  EXPECT_EQ(streamed.breakdown.params_host, resident.breakdown.params_device);
  auto best = Recommend(*fp32);
  ASSERT_TRUE(best.has_value());
  EXPECT_EQ(best->offload, "params");

  r.precision = "bf16";
  auto bf16 = PlanAll(r);
  ASSERT_TRUE(bf16.ok());
  const Plan& half = Find(*bf16, 0, "none");
  EXPECT_TRUE(half.fits) << half.why_not;
  EXPECT_GE(half.gpu_bytes, 28 * kGiB);  // 24 GiB of weights, the 4 GiB pool
  EXPECT_LE(half.gpu_bytes, 32 * kGiB);
  EXPECT_LT(Find(*bf16, 3, "params").gpu_bytes, 8 * kGiB);
  best = Recommend(*bf16);
  ASSERT_TRUE(best.has_value());
  EXPECT_EQ(best->offload, "none");  // resident weights decode faster than streamed ones
}

// The seed: fine-tuning 2.7B on 8 x 40 GB needed ZeRO. At stage 0, 16 bytes per parameter of
// model states alone are 42.4 GB (39.5 GiB, over the card's 40 GB, next to all of its 40 GiB);
// with the activations of a 2048-token sequence the plan is well over 40 GiB.
TEST(PlanTest, FineTuningTwoPointSevenBillionOnEightGpus) {
  PlanRequest r = Request("cerebras-gpt-2.7b", "finetune", 8, 40 * kGiB, "bf16");
  r.seq_len = 2048;
  auto plans = PlanAll(r);
  ASSERT_TRUE(plans.ok()) << plans.status().message();
  ASSERT_EQ(plans->size(), 9u);
  const Plan& plain = Find(*plans, 0, "none");
  const Breakdown& b = plain.breakdown;
  EXPECT_GT(b.device_states(), 40'000'000'000);
  EXPECT_GT(plain.gpu_bytes, 40 * kGiB);
  EXPECT_NEAR(static_cast<double>(b.device_states()) / static_cast<double>(r.config.NumParameters()), 16.0, 0.01);
  EXPECT_FALSE(plain.fits);
  bool some_fit = false;
  for (const Plan& p : *plans) some_fit |= p.fits;
  EXPECT_TRUE(some_fit);
  auto best = Recommend(*plans);
  ASSERT_TRUE(best.has_value());
  EXPECT_TRUE(best->fits);
  EXPECT_GE(best->zero, 1);
  for (const Plan& p : *plans) {
    if (p.fits) {
      EXPECT_GE(p.step_seconds, best->step_seconds);
    }
  }
  // Offload moves the optimizer states to the host; stage 3 also shards the parameters.
  const Plan& offload = Find(*plans, 2, "optimizer");
  EXPECT_EQ(offload.breakdown.optimizer_device, 0);
  EXPECT_GT(offload.breakdown.optimizer_host, 0);
  EXPECT_GT(offload.step.copies, 0);
  EXPECT_GT(offload.step.cpu_optimizer, 0);
  EXPECT_LT(Find(*plans, 3, "none").breakdown.params_device, Find(*plans, 2, "none").breakdown.params_device / 7);
  EXPECT_GT(Find(*plans, 3, "none").step.communication, Find(*plans, 2, "none").step.communication);
}

// The trainer's accounting for the 17-head tiny model on 3 ranks (uneven shards), fp32, by hand.
TEST(PlanTest, ModelStatesFollowTheTrainersArithmetic) {
  PlanRequest r = Request("tiny", "finetune", 3, 0, "fp32");
  r.device = DeviceKind::kCpu;
  r.seq_len = 32;
  const int64_t C = 68, F = 272, V = 50257, P = 256;
  const std::vector<int64_t> numels = {V * C + P * C, 4 * C + C * 3 * C + 3 * C + C * C + C + C * F + F + F * C + C,
                                       4 * C + C * 3 * C + 3 * C + C * C + C + C * F + F + F * C + C, 2 * C};
  int64_t shard = 0, padded = 0, max_shard = 0;
  for (int64_t n : numels) {
    shard += (n + 2) / 3;
    padded += (n + 2) / 3 * 3;
    max_shard = std::max(max_shard, (n + 2) / 3);
  }
  auto plans = PlanAll(r);
  ASSERT_TRUE(plans.ok()) << plans.status().message();
  const Breakdown& z0 = Find(*plans, 0, "none").breakdown;
  EXPECT_EQ(z0.params_device, 4 * padded);
  EXPECT_EQ(z0.grads_device, 4 * padded);
  EXPECT_EQ(z0.optimizer_device, 8 * padded);  // the fp32 parameters are the master weights
  const Breakdown z1 = One(r, 1, "optimizer").breakdown;
  EXPECT_EQ(z1.optimizer_host, 12 * shard);  // a separate master with offload
  EXPECT_EQ(z1.grads_host, 0);               // no pinned staging on a CPU device
  const Breakdown z2 = One(r, 2, "optimizer").breakdown;
  EXPECT_EQ(z2.grads_host, 4 * shard);
  EXPECT_EQ(z2.params_device, 4 * padded);
  const Breakdown z3 = One(r, 3, "params").breakdown;
  EXPECT_EQ(z3.params_host, 4 * shard);
  EXPECT_EQ(z3.params_device, 0);
  EXPECT_EQ(z3.device_states(), 0);
  // Stage 3 without offload: shards resident, and at the peak two gathered blocks, both blocks'
  // full gradients, a reduce-scatter output and the embedding's full gradient.
  const Breakdown& z3n = Find(*plans, 3, "none").breakdown;
  EXPECT_EQ(z3n.params_device, 4 * shard);
  EXPECT_GT(z3n.peak_device_states, z3n.device_states());

  // On a GPU with the optimizer offloaded, pinned staging buffers join the host side.
  r.device = DeviceKind::kCuda;
  r.gpu_memory_bytes = kGiB;
  plans = PlanAll(r);
  ASSERT_TRUE(plans.ok());
  EXPECT_EQ(Find(*plans, 1, "optimizer").breakdown.grads_host, 4 * max_shard);
  EXPECT_EQ(Find(*plans, 1, "optimizer").breakdown.optimizer_host, 12 * shard + 4 * max_shard);
  EXPECT_EQ(Find(*plans, 2, "optimizer").breakdown.grads_host, 4 * shard);
}

// A CPU device's memory is the host's: the planner offers no offload there, for fine-tunes or
// inference, and so never recommends one (it used to tie offload params with none and pick it
// for its smaller "device" bytes, streaming every weight through RAM for each token).
TEST(PlanTest, NoOffloadOnACpuDevice) {
  for (const char* mode : {"finetune", "infer"}) {
    PlanRequest r = Request("111m", mode, 2, 0, "fp32");
    r.device = DeviceKind::kCpu;
    r.seq_len = 128;
    if (std::string(mode) == "infer") r.gpus = 1;
    auto plans = PlanAll(r);
    ASSERT_TRUE(plans.ok()) << plans.status().message();
    EXPECT_EQ(plans->size(), std::string(mode) == "infer" ? 1u : 4u) << mode;
    for (const Plan& p : *plans) EXPECT_EQ(p.offload, "none") << mode;
    auto best = Recommend(*plans);
    ASSERT_TRUE(best.has_value());
    EXPECT_EQ(best->offload, "none");
    // PlanOne still predicts an emulated offload: the same work plus copies through host memory.
    const Plan none = One(r, 3, "none"), params = One(r, 3, "params");
    EXPECT_GT(params.step.copies, 0) << mode;
    EXPECT_GT(params.step_seconds, none.step_seconds) << mode;
  }
  PlanRequest r = Request("111m", "finetune", 2, 0, "fp32");
  r.device = DeviceKind::kCpu;
  EXPECT_EQ(PlanOne(r, 2, "params").status().message(), "offload params needs zero 3");
  EXPECT_EQ(PlanOne(r, 2, "disk").status().code(), StatusCode::kInvalidArgument);
}

TEST(PlanTest, NothingFitsGivesNoRecommendation) {
  PlanRequest r = Request("13b", "finetune", 1, 8 * kGiB, "bf16");
  r.host_memory_bytes = 16 * kGiB;
  auto plans = PlanAll(r);
  ASSERT_TRUE(plans.ok());
  for (const Plan& p : *plans) {
    EXPECT_FALSE(p.fits);
    // Every offload holds at least the optimizer states of 13B on the host; without offload the
    // host holds the process and one unit while loading, and the GPU is what is short.
    const std::string short_of = p.offload == "none" ? "GPU memory: needs" : "host memory: needs";
    EXPECT_NE(p.why_not.find(short_of), std::string::npos) << p.why_not;
  }
  EXPECT_FALSE(Recommend(*plans).has_value());
}

// A fine-tune's ranks read only what their stage keeps: at stage 3 each rank's load holds one
// unit's shard (its file pages, an fp32 buffer and the compute-dtype copy) beside the states, at
// stages 0-2 one whole unit, never the model.
TEST(PlanTest, FinetuneLoadHoldsOneUnitRangeBesideTheStates) {
  PlanRequest r = Request("13b", "finetune", 8, 40 * kGiB, "bf16");
  r.checkpoint_bytes = 4 * r.config.NumParameters();  // an fp32 checkpoint
  auto plans = PlanAll(r);
  ASSERT_TRUE(plans.ok());
  const zero::Layout layout(r.config);
  int64_t max_unit = 0;
  for (const zero::Unit& u : layout.units()) max_unit = std::max(max_unit, u.numel);
  const zero::Sharding largest = zero::ShardUnit(max_unit, 8);
  const Breakdown& z3 = Find(*plans, 3, "none").breakdown;
  // File pages (4 bytes an element here), the fp32 buffer and the bf16 copy of the largest shard.
  EXPECT_NEAR(static_cast<double>(z3.load_host), 10.0 * static_cast<double>(largest.shard), 16.0);
  // Nothing stays on the host without offload: the peak is the process and the largest shard's load.
  EXPECT_EQ(z3.host_peak, z3.base_rss + z3.load_host);
  EXPECT_EQ(Find(*plans, 3, "none").host_bytes, 8 * (z3.base_rss + z3.load_host));
  const Breakdown& z2 = Find(*plans, 2, "none").breakdown;
  EXPECT_NEAR(static_cast<double>(z2.load_host), 10.0 * static_cast<double>(largest.padded), 16.0);
  for (const Plan& p : *plans) {
    // The largest unit, the embedding, is 2.9 GiB so; the checkpoint is 48 GiB.
    EXPECT_LT(p.breakdown.load_host, 3 * kGiB) << p.zero << " " << p.offload;
    // On a GPU the host holds its states and, while loading, at most one unit's pages and buffers.
    EXPECT_GE(p.breakdown.host_peak, p.breakdown.base_rss + p.breakdown.host_states());
    EXPECT_LE(p.breakdown.host_peak, p.breakdown.base_rss + p.breakdown.host_states() + p.breakdown.load_host);
  }
}

// 13B fine-tuned on an agent of 8 x 40 GiB GPUs and 128 GiB of host memory: with activation
// checkpointing ZeRO-3 without offload fits (every rank loading only its shard); no offload fits,
// as their host states alone are 24 GiB a rank.
TEST(PlanTest, ThirteenBillionFinetunesOnEightFortyGigabyteGpus) {
  PlanRequest r = Request("13b", "finetune", 8, 40 * kGiB, "bf16");
  r.host_memory_bytes = 128 * kGiB;
  r.activation_checkpointing = true;
  auto plans = PlanAll(r);
  ASSERT_TRUE(plans.ok());
  const std::optional<Plan> best = Recommend(*plans);
  ASSERT_TRUE(best.has_value());
  EXPECT_EQ(best->zero, 3);
  EXPECT_EQ(best->offload, "none");
  EXPECT_LT(best->gpu_bytes, 40 * kGiB);
  EXPECT_LT(best->host_bytes, 24 * kGiB);  // 8 ranks: the process and one unit's shard each
  EXPECT_GT(best->host_bytes, 16 * kGiB);
  EXPECT_FALSE(Find(*plans, 3, "optimizer").fits);
  EXPECT_NE(Find(*plans, 3, "optimizer").why_not.find("host memory"), std::string::npos);
}

TEST(PlanTest, ActivationCheckpointingKeepsLessActivation) {
  PlanRequest r = Request("1.3b", "finetune", 2, 80 * kGiB, "bf16");
  auto full = PlanAll(r);
  r.activation_checkpointing = true;
  auto ckpt = PlanAll(r);
  ASSERT_TRUE(full.ok() && ckpt.ok());
  EXPECT_LT(Find(*ckpt, 2, "none").breakdown.activations, Find(*full, 2, "none").breakdown.activations / 2);
  EXPECT_GT(Find(*ckpt, 2, "none").step.compute, Find(*full, 2, "none").step.compute);
}

TEST(PlanTest, Sizes) {
  EXPECT_EQ(*ParseSize("40GiB"), 40 * kGiB);
  EXPECT_EQ(*ParseSize("40G"), 40 * kGiB);
  EXPECT_EQ(*ParseSize("40g"), 40 * kGiB);
  EXPECT_EQ(*ParseSize("40GB"), 40'000'000'000);
  EXPECT_EQ(*ParseSize("512MiB"), int64_t{512} << 20);
  EXPECT_EQ(*ParseSize("1.5GiB"), 3 * kGiB / 2);
  EXPECT_EQ(*ParseSize("4096"), 4096);
  for (const char* bad : {"40XB", "-40GiB", "0", "0GiB", "", "GiB", "1..5G", "40 GiB", "-1"}) {
    auto s = ParseSize(bad);
    EXPECT_FALSE(s.ok()) << bad;
    EXPECT_EQ(s.status().code(), StatusCode::kInvalidArgument) << bad;
    EXPECT_EQ(s.status().message().find('\n'), std::string::npos);
  }
  EXPECT_NE(ParseSize("-40GiB").status().message().find("negative"), std::string::npos);
}

TEST(PlanTest, BadInput) {
  auto unknown = ResolveModel("cerebras-gpt-99b", nullptr);
  ASSERT_FALSE(unknown.ok());
  EXPECT_NE(unknown.status().message().find("unknown architecture 'cerebras-gpt-99b'"), std::string::npos);
  EXPECT_EQ(ResolveModel("/nonexistent/model", nullptr).status().code(), StatusCode::kNotFound);

  PlanRequest r = Request("111m", "finetune", 1, 40 * kGiB, "bf16");
  auto expect_bad = [](PlanRequest req, const std::string& message) {
    auto plans = PlanAll(req);
    ASSERT_FALSE(plans.ok()) << message;
    EXPECT_EQ(plans.status().code(), StatusCode::kInvalidArgument);
    EXPECT_NE(plans.status().message().find(message), std::string::npos) << plans.status().message();
  };
  PlanRequest bad = r;
  bad.seq_len = 4096;
  expect_bad(bad, "seq_len 4096 above the model's n_positions 2048");
  bad = r;
  bad.micro_batch = 0;
  expect_bad(bad, "micro_batch must be at least 1");
  bad = r;
  bad.gpus = 0;
  expect_bad(bad, "gpus must be between 1 and 4096");
  bad = r;
  bad.gpu_memory_bytes = 0;
  expect_bad(bad, "gpu memory must be positive");
  bad = r;
  bad.host_memory_bytes = -1;
  expect_bad(bad, "host memory must not be negative");
  bad = r;
  bad.mode = "train";
  expect_bad(bad, "mode must be finetune or infer");
  bad = r;
  bad.precision = "int8";
  expect_bad(bad, "precision must be fp32, bf16 or fp16");
}

TEST(PlanTest, InferencePlansForItsRequestInWholeKvBlocks) {
  EXPECT_EQ(RequestTokens(10, 54, 2048), 64);
  EXPECT_EQ(RequestTokens(10, 55, 2048), 80);
  EXPECT_EQ(RequestTokens(0, 0, 2048), 16);
  EXPECT_EQ(RequestTokens(2000, 100, 2048), 2048);
  EXPECT_EQ(RequestTokens(-5, 1, 0), 16);
  // 10 prompt ids and 54 new tokens: a 64-token KV cache, not the model's 2048 positions.
  nlohmann::json spec = {{"model", "111m"}, {"prompt_ids", std::vector<int>(10, 7)}, {"max_new_tokens", 54},
                         {"device", "cpu"}, {"precision", "fp32"}};
  auto ask = AskOfSpec(false, spec);
  ASSERT_TRUE(ask.ok()) << ask.status().message();
  auto plans = OpenPlans(&*ask);
  ASSERT_TRUE(plans.ok()) << plans.status().message();
  const engine::ModelConfig& m = ask->request.config;
  EXPECT_EQ(ask->request.seq_len, 64);
  EXPECT_EQ(plans->front().breakdown.kv_cache, m.n_layer * 2 * 64 * m.n_embd * 4);
  // A prompt of text counts a token per byte (5) before its 100 new tokens: 112.
  spec.erase("prompt_ids");
  spec["prompt"] = "hello";
  spec["max_new_tokens"] = 100;
  ask = AskOfSpec(false, spec);
  ASSERT_TRUE(ask.ok()) << ask.status().message();
  EXPECT_EQ(ask->request.seq_len, 112);
  // Capped at the model's positions.
  spec["max_new_tokens"] = 4000;
  ask = AskOfSpec(false, spec);
  ASSERT_TRUE(ask.ok()) << ask.status().message();
  ASSERT_TRUE(OpenPlans(&*ask).ok());
  EXPECT_EQ(ask->request.seq_len, 2048);
}

// A warm rank serves many requests in one batch: the weights and (on a GPU) the KV pool are
// there once, each request adds its activations, on a CPU its KV blocks too (Breakdown::request).
// 16 requests of 13B bf16 on one 40 GiB GPU.
TEST(PlanTest, BatchedRequestsAddOnlyTheirKvCacheAndActivations) {
  PlanRequest r = Request("13b", "infer", 1, 40 * kGiB, "bf16");
  r.seq_len = 128;
  auto plans = PlanAll(r);
  ASSERT_TRUE(plans.ok());
  const Plan& p = Find(*plans, 0, "none");
  const Breakdown& b = p.breakdown;
  EXPECT_EQ(b.request, b.activations + static_cast<int64_t>(0.10 * static_cast<double>(b.activations)));
  const int64_t warm = p.gpu_bytes - b.request;
  EXPECT_GE(warm, b.params_device + b.kv_cache + b.cuda_context);  // weights, pool, context, slack
  EXPECT_LE(warm + 16 * b.request, 40 * kGiB);
  EXPECT_GT(2 * p.gpu_bytes, 40 * kGiB);  // two copies of the weights do not fit
  // On a CPU the pool's pages cost nothing until written: the request's blocks, of the host's
  // memory.
  r.device = DeviceKind::kCpu;
  r.precision = "fp32";
  plans = PlanAll(r);
  ASSERT_TRUE(plans.ok());
  EXPECT_EQ(plans->front().breakdown.request, plans->front().breakdown.kv_cache + plans->front().breakdown.activations);
  EXPECT_LT(plans->front().breakdown.request, plans->front().host_bytes);
}

// Parameter offload as fuji-rank loads it: each parameter is freed once its unit is in the ZeRO-3
// shards, so the peak is one copy of the weights and one unit (fp32, beside its shard); the warm
// rank then holds one copy.
TEST(PlanTest, ParameterOffloadPeaksAtOneCopyAndAUnit) {
  PlanRequest r = Request("13b", "infer", 1, 80 * kGiB, "fp32");
  r.seq_len = 128;
  auto plans = PlanAll(r);
  ASSERT_TRUE(plans.ok());
  const Plan& p = Find(*plans, 3, "params");
  const Breakdown& b = p.breakdown;
  const int64_t weights = 4 * r.config.NumParameters();
  EXPECT_EQ(b.params_host, weights);
  EXPECT_GE(p.host_bytes, b.base_rss + weights);
  EXPECT_LE(p.host_bytes, b.base_rss + weights + 3 * kGiB);  // and one unit in fp32 beside its shard
  EXPECT_LT(GiB(p.host_bytes), 55.0);  // not the two copies (98.9 GiB) of a load into one arena
  EXPECT_EQ(b.host_resident, b.base_rss + weights);
  EXPECT_NEAR(GiB(b.host_resident), 49.9, 0.1);
  // Without offload the weights go from the checkpoint's pages to the GPU.
  EXPECT_EQ(Find(*plans, 0, "none").breakdown.host_resident, b.base_rss);
}

TEST(PlanTest, TimeToTrain) {
  // The seed's 2.7B: about 2 weeks on 8 GPUs.
  auto e = EstimateTraining(8 * 1000.0, 8 * 1000.0 * 14 * 86400, 1);
  ASSERT_TRUE(e.ok());
  EXPECT_EQ(FormatDuration(e->seconds), "2.0 weeks");
  EXPECT_EQ(FormatDuration(76 * 86400), "2.5 months");
  EXPECT_EQ(FormatDuration(42), "42 s");
  EXPECT_FALSE(EstimateTraining(0, 1, 1).ok());
  EXPECT_FALSE(EstimateTraining(1, -1, 1).ok());
  EXPECT_FALSE(EstimateTraining(1, 1, 0).ok());
}

}  // namespace
}  // namespace fuji::plan
