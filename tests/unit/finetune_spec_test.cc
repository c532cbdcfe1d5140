// Tests of the fine-tuning specification: defaults, the JSON round trip, and the messages for each
// kind of bad input (type, range, combinations).
#include <gtest/gtest.h>

#include "lib/spec/finetune_spec.h"

namespace fuji {
namespace {

nlohmann::json Minimal() { return {{"model", "/m"}, {"data", "/d.txt"}}; }

// The error message for Minimal() with `key` set to `value`; "" when it parses.
std::string ErrorWith(const std::string& key, const nlohmann::json& value) {
  nlohmann::json j = Minimal();
  j[key] = value;
  auto s = FinetuneSpec::FromJson(j);
  if (s.ok()) return "";
  EXPECT_EQ(s.status().code(), StatusCode::kInvalidArgument);
  return s.status().message();
}

TEST(FinetuneSpecTest, DefaultsFromAMinimalSpec) {
  auto s = FinetuneSpec::FromJson(Minimal());
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  EXPECT_EQ(s->ranks, 1);
  EXPECT_EQ(s->device, "cpu");
  EXPECT_EQ(s->zero, 0);
  EXPECT_EQ(s->offload, "none");
  EXPECT_EQ(s->precision, "fp32");
  EXPECT_EQ(s->seq_len, 128);
  EXPECT_EQ(s->steps, 10);
  EXPECT_DOUBLE_EQ(s->lr, 1e-4);
  EXPECT_DOUBLE_EQ(s->EffectiveMinLr(), 1e-5);
  EXPECT_EQ(s->EffectiveWarmupSteps(), 1);
  EXPECT_DOUBLE_EQ(s->beta2, 0.95);
  EXPECT_EQ(s->eval_batches, 4);
  EXPECT_DOUBLE_EQ(s->holdout, 0.05);
  EXPECT_EQ(s->resume, "auto");
  EXPECT_EQ(s->collective_timeout_ms, 120000);
  EXPECT_TRUE(s->save_to.empty());
  EXPECT_EQ(s->keep_last, -1);  // unset: the agent's default
}

TEST(FinetuneSpecTest, RoundTripsEveryField) {
  FinetuneSpec a;
  a.model = "/models/m";
  a.data = "/data/d.jsonl";
  a.token_cache = "/c/x.tok";
  a.cache_dir = "/c";
  a.ranks = 3;
  a.rank = 2;
  a.rendezvous = "file:/tmp/rv/store";
  a.device = "cuda";
  a.zero = 3;
  a.offload = "params";
  a.precision = "bf16";
  a.seq_len = 256;
  a.micro_batch = 4;
  a.grad_accum = 2;
  a.steps = 20;
  a.lr = 3e-4;
  a.min_lr = 0;
  a.warmup_steps = 5;
  a.weight_decay = 0.01;
  a.clip = 0;
  a.beta1 = 0.8;
  a.beta2 = 0.99;
  a.eps = 1e-6;
  a.eval_every = 5;
  a.eval_batches = 2;
  a.holdout = 0.1;
  a.activation_checkpointing = true;
  a.save_to = "/out";
  a.save_every = 10;
  a.resume = "never";
  a.stop_after = 10;
  a.keep_last = 3;
  a.seed = 1ull << 63;
  a.initial_loss_scale = 1024;
  a.loss_scale_window = 50;
  a.collective_timeout_ms = 5000;
  a.threads = 2;
  auto b = FinetuneSpec::FromJson(a.ToJson());
  ASSERT_TRUE(b.ok()) << b.status().ToString();
  EXPECT_EQ(b->ToJson(), a.ToJson());
  EXPECT_EQ(b->seed, 1ull << 63);
  EXPECT_EQ(b->EffectiveWarmupSteps(), 5);
  EXPECT_DOUBLE_EQ(b->EffectiveMinLr(), 0.0);
}

TEST(FinetuneSpecTest, IgnoresTheRankRequestsOwnKeys) {
  nlohmann::json j = Minimal();
  j["op"] = "finetune";
  j["id"] = "r1";
  EXPECT_TRUE(FinetuneSpec::FromJson(j).ok());
}

TEST(FinetuneSpecTest, RequiresModelAndData) {
  EXPECT_NE(FinetuneSpec::FromJson(nlohmann::json{{"data", "/d"}}).status().message().find("'model'"), std::string::npos);
  EXPECT_NE(FinetuneSpec::FromJson(nlohmann::json{{"model", "/m"}}).status().message().find("'data'"), std::string::npos);
  EXPECT_NE(ErrorWith("model", "").find("'model' is required"), std::string::npos);
  EXPECT_NE(ErrorWith("data", std::string("a\0b", 3)).find("NUL"), std::string::npos);
  EXPECT_NE(ErrorWith("save_to", std::string("/o\0", 3)).find("'save_to'"), std::string::npos);
  EXPECT_EQ(ErrorWith("save_to", ""), "");
  EXPECT_FALSE(FinetuneSpec::FromJson(nlohmann::json::array()).ok());
}

TEST(FinetuneSpecTest, RefusesTheIssuesBadInputsWithClearMessages) {
  EXPECT_EQ(ErrorWith("micro_batch", 0), "field 'micro_batch' must be at least 1");
  EXPECT_EQ(ErrorWith("zero", 4), "field 'zero' must be 0, 1, 2 or 3, not 4");
  nlohmann::json j = Minimal();
  j["offload"] = "params";
  j["zero"] = 2;
  EXPECT_EQ(FinetuneSpec::FromJson(j).status().message(), "field 'offload' params needs zero 3 (zero is 2)");
  j["zero"] = 3;
  EXPECT_TRUE(FinetuneSpec::FromJson(j).ok());
}

TEST(FinetuneSpecTest, ChecksTypes) {
  EXPECT_NE(ErrorWith("ranks", "2").find("'ranks' must be an integer"), std::string::npos);
  EXPECT_NE(ErrorWith("steps", 1.5).find("'steps' must be an integer"), std::string::npos);
  EXPECT_NE(ErrorWith("lr", "big").find("'lr' must be a number"), std::string::npos);
  EXPECT_NE(ErrorWith("activation_checkpointing", 1).find("true or false"), std::string::npos);
  EXPECT_NE(ErrorWith("model", 3).find("'model' must be a string"), std::string::npos);
  EXPECT_NE(ErrorWith("seed", -1).find("'seed'"), std::string::npos);
}

TEST(FinetuneSpecTest, ChecksRanges) {
  struct Case {
    const char* key;
    nlohmann::json bad, good;
  };
  const Case cases[] = {
      {"ranks", 0, 64},          {"ranks", 65, 1},           {"zero", -1, 0},
      {"seq_len", 0, 1},         {"seq_len", 65537, 65536},  {"grad_accum", 0, 4096},
      {"grad_accum", 4097, 1},   {"steps", 0, 10000000},     {"steps", 10000001, 1},
      {"lr", 0.0, 1.0},          {"lr", 1.5, 1e-9},          {"lr", -1e-4, 1e-4},
      {"eval_batches", 0, 1},    {"holdout", 0.51, 0.5},     {"holdout", -0.1, 0.0},
      {"collective_timeout_ms", 999, 1000}, {"collective_timeout_ms", 3600001, 3600000},
      {"device", "tpu", "cuda"}, {"precision", "fp8", "fp16"}, {"offload", "disk", "optimizer"},
      {"resume", "always", "never"}, {"eps", 0.0, 1e-8},     {"threads", -1, 0},
      {"keep_last", -2, -1},     {"keep_last", 1000001, 0},  {"keep_last", "2", 2},
  };
  for (const Case& c : cases) {
    const std::string bad = ErrorWith(c.key, c.bad);
    EXPECT_NE(bad.find(std::string("'") + c.key + "'"), std::string::npos) << c.key << " = " << c.bad << ": " << bad;
    EXPECT_EQ(ErrorWith(c.key, c.good), "") << c.key << " = " << c.good;
  }
}

TEST(FinetuneSpecTest, ChecksRankAndRendezvous) {
  nlohmann::json j = Minimal();
  j["ranks"] = 2;
  j["rank"] = 2;
  EXPECT_NE(FinetuneSpec::FromJson(j).status().message().find("'rank' 2 is not below ranks 2"), std::string::npos);
  j["rank"] = 1;
  EXPECT_TRUE(FinetuneSpec::FromJson(j).ok());
  EXPECT_EQ(ErrorWith("rendezvous", "file:/tmp/x"), "");
  EXPECT_EQ(ErrorWith("rendezvous", "tcp:127.0.0.1:29500"), "");
  EXPECT_NE(ErrorWith("rendezvous", "file:relative").find("'rendezvous'"), std::string::npos);
  EXPECT_NE(ErrorWith("rendezvous", "tcp:host:99999").find("'rendezvous'"), std::string::npos);
  EXPECT_NE(ErrorWith("min_lr", 0.5).find("'min_lr' is above lr"), std::string::npos);
}

TEST(FinetuneSpecTest, DefaultTokenCacheDirFollowsXdg) {
  const char* old = std::getenv("XDG_CACHE_HOME");
  const std::string saved = old ? old : "";
  setenv("XDG_CACHE_HOME", "/xdg", 1);
  EXPECT_EQ(DefaultTokenCacheDir(), "/xdg/fuji/tokens");
  unsetenv("XDG_CACHE_HOME");
  setenv("HOME", "/home/u", 1);
  EXPECT_EQ(DefaultTokenCacheDir(), "/home/u/.cache/fuji/tokens");
  if (old) setenv("XDG_CACHE_HOME", saved.c_str(), 1);
}

}  // namespace
}  // namespace fuji
