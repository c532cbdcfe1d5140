// Tests of the engine: random init, checkpoint round trips, KV cache, precisions, sampling,
// and the clear errors for bad checkpoints and bad generation requests.
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "lib/common/file_util.h"
#include "worker/engine/checkpoint.h"
#include "worker/engine/device.h"
#include "worker/engine/generate.h"
#include "worker/engine/random_init.h"
#include "lib/format/safetensors.h"

namespace fuji::engine {
namespace {

class EngineTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::string(FUJI_BINARY_DIR) + "/engine_test_" + std::to_string(::getpid()) + "_" +
           ::testing::UnitTest::GetInstance()->current_test_info()->name();
    ASSERT_EQ(std::system(("rm -rf " + dir_ + " && mkdir -p " + dir_).c_str()), 0);
    config_ = *ArchitectureConfig("tiny");
    config_.vocab_size = 512;
    config_.n_positions = 64;
    ASSERT_TRUE(config_.Validate().ok());
  }
  void TearDown() override { std::system(("rm -rf " + dir_).c_str()); }

  std::string Write(const std::string& name, format::DType dtype = format::DType::kF32) {
    const std::string out = dir_ + "/" + name;
    Status s = WriteRandomCheckpoint(config_, out, 7, dtype, "");
    EXPECT_TRUE(s.ok()) << s.ToString();
    return out;
  }

  std::unique_ptr<Gpt2Model> Load(const std::string& dir, at::ScalarType dtype = at::kFloat) {
    auto model = LoadModel(dir, {dtype, at::kCPU});
    EXPECT_TRUE(model.ok()) << model.status().ToString();
    return model.ok() ? std::move(model).value() : nullptr;
  }

  at::Tensor Logits(const Gpt2Model& model, const std::vector<int64_t>& ids) {
    at::Tensor t = at::tensor(ids, at::kLong).view({1, -1});
    return model.Logits(model.Forward(t, nullptr)).to(at::kFloat).squeeze(0);
  }

  std::string dir_;
  ModelConfig config_;
};

double RelativeError(const at::Tensor& a, const at::Tensor& b) {
  return (a.to(at::kDouble) - b.to(at::kDouble)).abs().max().item<double>() /
         b.to(at::kDouble).abs().max().item<double>();
}

TEST_F(EngineTest, RandomInitIsDeterministicWhateverTheThreads) {
  const auto layout = ParameterLayout(config_);
  at::set_num_threads(1);
  at::Tensor a = RandomParameter(layout[0], 3, 0);
  at::set_num_threads(2);
  at::Tensor b = RandomParameter(layout[0], 3, 0);
  EXPECT_TRUE(at::equal(a, b));
  EXPECT_FALSE(at::equal(a, RandomParameter(layout[0], 4, 0)));
  EXPECT_NEAR(a.std().item<double>(), 0.02, 0.002);
  EXPECT_NEAR(a.mean().item<double>(), 0.0, 0.002);
}

TEST_F(EngineTest, InitThenLoadGivesTheSameParameters) {
  auto model = Load(Write("m"));
  ASSERT_TRUE(model);
  const auto layout = ParameterLayout(config_);
  ASSERT_EQ(model->parameters().size(), layout.size());
  for (size_t i = 0; i < layout.size(); ++i) {
    EXPECT_TRUE(at::equal(model->parameters()[i], RandomParameter(layout[i], 7, i)))
        << layout[i].name;
  }
  auto config = LoadModelConfig(dir_ + "/m");
  ASSERT_TRUE(config.ok());
  EXPECT_EQ(config->n_head, 17);
  EXPECT_EQ(config->activation, Activation::kGeluErf);
}

TEST_F(EngineTest, KvCacheGenerationEqualsFullRecomputation) {
  auto model = Load(Write("m"));
  ASSERT_TRUE(model);
  const std::vector<int32_t> prompt = {5, 17, 300, 2, 99};
  GenerateOptions options;
  options.max_new_tokens = 24;
  options.ignore_eos = true;
  GenerateTimings timings;
  auto cached = Generate(*model, prompt, options, &timings);
  ASSERT_TRUE(cached.ok()) << cached.status().ToString();
  ASSERT_EQ(cached->size(), 24u);
  EXPECT_EQ(timings.decode_steps, 23);
  std::vector<int64_t> seq(prompt.begin(), prompt.end());
  for (size_t i = 0; i < cached->size(); ++i) {
    at::Tensor logits = Logits(*model, seq);
    EXPECT_EQ(logits[-1].argmax().item<int64_t>(), (*cached)[i]) << "token " << i;
    seq.push_back((*cached)[i]);
  }
  // The cached pass's logits equal the full pass's at every position.
  KvCache cache(config_, 1, 64, at::kFloat, at::kCPU);
  at::Tensor full = Logits(*model, seq);
  at::Tensor first =
      model
          ->Logits(model->Forward(
              at::tensor(std::vector<int64_t>(seq.begin(), seq.begin() + 10)).view({1, -1}),
              &cache))
          .squeeze(0);
  EXPECT_LT(RelativeError(first, full.narrow(0, 0, 10)), 1e-5);
  for (size_t t = 10; t < seq.size(); ++t) {
    at::Tensor step =
        model->Logits(model->Forward(at::full({1, 1}, seq[t], at::kLong), &cache)).view({-1});
    EXPECT_LT(RelativeError(step, full[static_cast<int64_t>(t)]), 1e-5) << "position " << t;
  }
}

// The fused decode step (one parallel region per token) against Forward + Logits: the same
// logits bit for bit and the same keys and values in the cache, in float and bfloat16, tied and
// untied heads, both GELUs, the inverse-layer attention scale, on 1, 2 and 3 threads.
TEST_F(EngineTest, DecodeStepGivesForwardsLogitsBitForBit) {
  struct Variant {
    const char* name;
    bool tie, tanh_gelu, inverse_layer_scale;
    format::DType dtype;
  };
  const Variant variants[] = {{"f32", true, false, false, format::DType::kF32},
                              {"bf16", true, false, false, format::DType::kBF16},
                              {"f32-untied-tanh-scaled", false, true, true, format::DType::kF32},
                              {"bf16-untied-tanh-scaled", false, true, true, format::DType::kBF16}};
  const int threads_before = at::get_num_threads();
  for (const Variant& v : variants) {
    config_.tie_word_embeddings = v.tie;
    config_.activation = v.tanh_gelu ? Activation::kGeluTanh : Activation::kGeluErf;
    config_.scale_attn_by_inverse_layer_idx = v.inverse_layer_scale;
    const at::ScalarType type = v.dtype == format::DType::kBF16 ? at::kBFloat16 : at::kFloat;
    auto model = Load(Write(v.name, v.dtype), type);
    ASSERT_TRUE(model);
    ASSERT_EQ(model->dtype(), type);
    for (const int threads : {1, 2, 3}) {
      at::set_num_threads(threads);
      SCOPED_TRACE(std::string(v.name) + ", " + std::to_string(threads) + " threads");
      KvCache forward_cache(config_, 1, 40, type, at::kCPU), step_cache(config_, 1, 40, type, at::kCPU);
      const at::Tensor prompt = at::tensor(std::vector<int64_t>{5, 17, 300, 2, 99}, at::kLong).view({1, -1});
      (void)model->Forward(prompt, &forward_cache);
      (void)model->Forward(prompt, &step_cache);
      ASSERT_TRUE(model->DecodeStepApplies(step_cache));
      int64_t token = 7;
      for (int step = 0; step < 30; ++step) {
        const at::Tensor expected =
            model->Logits(model->Forward(at::full({1, 1}, token, at::kLong), &forward_cache)).to(at::kFloat).view({-1});
        const at::Tensor got = model->DecodeStep(token, &step_cache).view({-1});
        ASSERT_EQ(got.scalar_type(), at::kFloat);
        ASSERT_TRUE(at::equal(got, expected)) << "step " << step << ": largest difference "
                                              << (got - expected).abs().max().item<float>();
        token = expected.argmax().item<int64_t>();
      }
      EXPECT_EQ(step_cache.length(), forward_cache.length());
    }
  }
  at::set_num_threads(threads_before);
  // A full cache, autograd and unit hooks take Forward's path.
  auto model = Load(Write("plain"));
  ASSERT_TRUE(model);
  KvCache full(config_, 1, 1, at::kFloat, at::kCPU);
  (void)model->Forward(at::full({1, 1}, int64_t{3}, at::kLong), &full);
  EXPECT_FALSE(model->DecodeStepApplies(full));
  KvCache room(config_, 1, 8, at::kFloat, at::kCPU);
  EXPECT_TRUE(model->DecodeStepApplies(room));
  model->set_unit_hooks({[](int) {}, nullptr});
  EXPECT_FALSE(model->DecodeStepApplies(room));
}

TEST_F(EngineTest, Bf16AndFp16StayWithinTheirToleranceOfFp32) {
  const std::string dir = Write("m");
  auto fp32 = Load(dir);
  auto bf16 = Load(dir, at::kBFloat16);
  ASSERT_TRUE(fp32 && bf16);
  EXPECT_EQ(bf16->dtype(), at::kBFloat16);
  const std::vector<int64_t> ids = {1, 2, 3, 4, 5, 6, 7, 8};
  at::Tensor ref = Logits(*fp32, ids);
  // bf16 keeps 8 mantissa bits: about 0.4% per rounding, a few percent through the blocks.
  EXPECT_LT(RelativeError(Logits(*bf16, ids), ref), 3e-2);

  // Token by token through the KV cache (the decode kernels), every step stays as close.
  KvCache cache32(config_, 1, 64, at::kFloat, at::kCPU), cache16(config_, 1, 64, at::kBFloat16, at::kCPU);
  for (int64_t id : ids) {
    at::Tensor step = at::full({1, 1}, id, at::kLong);
    at::Tensor a = fp32->Logits(fp32->Forward(step, &cache32)).view({-1});
    at::Tensor b = bf16->Logits(bf16->Forward(step, &cache16)).view({-1}).to(at::kFloat);
    EXPECT_LT(RelativeError(b, a), 3e-2);
  }
  GenerateOptions options;
  options.max_new_tokens = 8;
  options.ignore_eos = true;
  auto out = Generate(*bf16, {1, 2, 3}, options, nullptr);
  ASSERT_TRUE(out.ok()) << out.status().ToString();
  EXPECT_EQ(out->size(), 8u);

  if (CheckPrecisionOnDevice(at::kHalf, at::kCPU).ok()) {
    auto fp16 = Load(dir, at::kHalf);
    ASSERT_TRUE(fp16);
    EXPECT_LT(RelativeError(Logits(*fp16, ids), ref), 5e-3);
  } else {
    EXPECT_NE(CheckPrecisionOnDevice(at::kHalf, at::kCPU).message().find("use bf16 or fp32"), std::string::npos);
  }
}

TEST_F(EngineTest, Bf16CheckpointLoadsIntoFp32) {
  auto model = Load(Write("m", format::DType::kBF16));
  ASSERT_TRUE(model);
  const auto layout = ParameterLayout(config_);
  at::Tensor expected = RandomParameter(layout[2 + 2], 7, 4).to(at::kBFloat16).to(at::kFloat);
  EXPECT_TRUE(at::equal(model->parameters()[4], expected));
}

TEST_F(EngineTest, ShardedSafetensorsLoadLikeOneFile) {
  const std::string one = Write("one");
  auto single = format::SafetensorsFile::Open(one + "/model.safetensors");
  ASSERT_TRUE(single.ok());
  const std::string sharded = dir_ + "/sharded";
  ::mkdir(sharded.c_str(), 0755);
  nlohmann::json weight_map;
  const auto& tensors = single->tensors();
  const size_t half = tensors.size() / 2;
  for (int shard = 0; shard < 2; ++shard) {
    const std::string file = "model-0000" + std::to_string(shard + 1) + "-of-00002.safetensors";
    std::vector<format::TensorSpec> specs;
    const size_t begin = shard == 0 ? 0 : half, end = shard == 0 ? half : tensors.size();
    for (size_t i = begin; i < end; ++i) {
      specs.push_back({tensors[i].name, tensors[i].dtype, tensors[i].shape});
      weight_map[tensors[i].name] = file;
    }
    auto writer = format::SafetensorsWriter::Create(sharded + "/" + file, specs);
    ASSERT_TRUE(writer.ok());
    for (size_t i = begin; i < end; ++i)
      ASSERT_TRUE(writer->Write(tensors[i].data, tensors[i].nbytes).ok());
    ASSERT_TRUE(writer->Finish().ok());
  }
  ASSERT_TRUE(WriteFileAtomically(sharded + "/model.safetensors.index.json",
                                  nlohmann::json({{"weight_map", weight_map}}).dump())
                  .ok());
  ASSERT_EQ(std::system(("cp " + one + "/config.json " + sharded + "/").c_str()), 0);
  LoadReport report;
  auto a = Load(one);
  auto b = LoadModel(sharded, {}, &report);
  ASSERT_TRUE(b.ok()) << b.status().ToString();
  EXPECT_EQ(report.format, "safetensors-sharded");
  EXPECT_EQ(report.files, 2);
  for (size_t i = 0; i < a->parameters().size(); ++i)
    EXPECT_TRUE(at::equal(a->parameters()[i], (*b)->parameters()[i]));

  // A shard name that leaves the directory is refused.
  weight_map[tensors[0].name] = "../one/model.safetensors";
  ASSERT_TRUE(WriteFileAtomically(sharded + "/model.safetensors.index.json",
                                  nlohmann::json({{"weight_map", weight_map}}).dump())
                  .ok());
  auto bad = LoadModel(sharded, {});
  EXPECT_EQ(bad.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(bad.status().message().find("not a file in the checkpoint directory"),
            std::string::npos);
}

TEST_F(EngineTest, ConvertKeepsValuesAndCanChangeDtype) {
  const std::string src = Write("src");
  ASSERT_TRUE(ConvertCheckpoint(src, dir_ + "/same", std::nullopt).ok());
  ASSERT_TRUE(ConvertCheckpoint(src, dir_ + "/half", format::DType::kBF16).ok());
  auto a = Load(src), b = Load(dir_ + "/same"), c = Load(dir_ + "/half");
  ASSERT_TRUE(a && b && c);
  for (size_t i = 0; i < a->parameters().size(); ++i) {
    EXPECT_TRUE(at::equal(a->parameters()[i], b->parameters()[i]));
    EXPECT_TRUE(at::equal(a->parameters()[i].to(at::kBFloat16).to(at::kFloat), c->parameters()[i]));
  }
}

TEST_F(EngineTest, BadCheckpointsGiveErrorsNamingTheProblem) {
  EXPECT_EQ(LoadModel(dir_ + "/missing", {}).status().code(), StatusCode::kNotFound);

  const std::string dir = Write("m");
  // n_embd not divisible by n_head.
  nlohmann::json config = config_.ToJson();
  config["n_head"] = 5;
  ASSERT_TRUE(WriteFileAtomically(dir + "/config.json", config.dump()).ok());
  auto s = LoadModel(dir, {}).status();
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("not divisible by n_head"), std::string::npos) << s.message();

  // A shape that disagrees with config.json names the tensor.
  config["n_head"] = 17;
  config["n_inner"] = 300;
  ASSERT_TRUE(WriteFileAtomically(dir + "/config.json", config.dump()).ok());
  s = LoadModel(dir, {}).status();
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("h.0.mlp.c_fc.weight"), std::string::npos) << s.message();

  // More layers in config.json than in the file: the first missing tensor is named.
  config["n_inner"] = 272;
  config["n_layer"] = 3;
  ASSERT_TRUE(WriteFileAtomically(dir + "/config.json", config.dump()).ok());
  s = LoadModel(dir, {}).status();
  EXPECT_EQ(s.code(), StatusCode::kNotFound);
  EXPECT_NE(s.message().find("missing tensor 'h.2.ln_1.weight'"), std::string::npos) << s.message();

  ASSERT_TRUE(WriteFileAtomically(dir + "/config.json", "{not json").ok());
  EXPECT_EQ(LoadModel(dir, {}).status().code(), StatusCode::kInvalidArgument);

  // No weights at all.
  ::unlink((dir + "/model.safetensors").c_str());
  ASSERT_TRUE(WriteFileAtomically(dir + "/config.json", config_.ToJson().dump()).ok());
  s = LoadModel(dir, {}).status();
  EXPECT_EQ(s.code(), StatusCode::kNotFound);
  EXPECT_NE(s.message().find("no model.safetensors"), std::string::npos);
}

TEST_F(EngineTest, MinimalConfigTakesGpt2Defaults) {
  auto c = ParseModelConfig(
      nlohmann::json::parse(R"({"n_embd": 2560, "n_head": 32, "n_layer": 32})"), "config.json");
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->vocab_size, 50257);
  EXPECT_EQ(c->n_positions, 1024);
  EXPECT_EQ(c->ffn(), 4 * 2560);
  EXPECT_EQ(c->activation, Activation::kGeluTanh);
  EXPECT_DOUBLE_EQ(c->layer_norm_epsilon, 1e-5);
  EXPECT_EQ(ParseModelConfig(nlohmann::json::parse(R"({"n_layer": "x"})"), "c").status().code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(ParseModelConfig(nlohmann::json::parse(R"({"activation_function": "relu"})"), "c")
                .status()
                .code(),
            StatusCode::kInvalidArgument);
  // The seven Cerebras-GPT sizes.
  EXPECT_NEAR(ArchitectureConfig("111m")->NumParameters() / 1e6, 111, 1);
  EXPECT_NEAR(ArchitectureConfig("256m")->NumParameters() / 1e6, 256, 1);
  EXPECT_NEAR(ArchitectureConfig("590m")->NumParameters() / 1e6, 590, 2);
  EXPECT_NEAR(ArchitectureConfig("1.3b")->NumParameters() / 1e9, 1.3, 0.05);
  EXPECT_NEAR(ArchitectureConfig("2.7b")->NumParameters() / 1e9, 2.7, 0.05);
  EXPECT_NEAR(ArchitectureConfig("6.7b")->NumParameters() / 1e9, 6.7, 0.05);
  EXPECT_NEAR(ArchitectureConfig("13b")->NumParameters() / 1e9, 12.85, 0.05);
  EXPECT_FALSE(ArchitectureConfig("7b").ok());
}

TEST_F(EngineTest, GenerationRequestsAreChecked) {
  auto model = Load(Write("m"));
  ASSERT_TRUE(model);
  GenerateOptions options;
  options.max_new_tokens = 4;
  auto code = [&](const std::vector<int32_t>& prompt) {
    return Generate(*model, prompt, options, nullptr).status();
  };
  EXPECT_NE(code({}).message().find("empty prompt"), std::string::npos);
  EXPECT_NE(code({1, 512}).message().find("outside the vocabulary"), std::string::npos);
  EXPECT_NE(code({1, -1}).message().find("outside the vocabulary"), std::string::npos);
  EXPECT_NE(
      code(std::vector<int32_t>(65, 1)).message().find("longer than the model's 64 positions"),
      std::string::npos);
  EXPECT_NE(code(std::vector<int32_t>(62, 1)).message().find("exceeds the model's 64 positions"),
            std::string::npos);
  options.max_new_tokens = 0;
  EXPECT_EQ(code({1}).code(), StatusCode::kInvalidArgument);
}

TEST_F(EngineTest, SamplingIsSeededAndTopKOneIsGreedy) {
  auto model = Load(Write("m"));
  ASSERT_TRUE(model);
  GenerateOptions greedy;
  greedy.max_new_tokens = 12;
  greedy.ignore_eos = true;
  GenerateOptions sampled = greedy;
  sampled.sampling = {false, 1.5, 0, 0.95, 42};
  auto a = Generate(*model, {1, 2}, sampled, nullptr);
  auto b = Generate(*model, {1, 2}, sampled, nullptr);
  sampled.sampling.seed = 43;
  auto c = Generate(*model, {1, 2}, sampled, nullptr);
  EXPECT_EQ(*a, *b);
  EXPECT_NE(*a, *c);
  GenerateOptions top1 = greedy;
  top1.sampling = {false, 0.7, 1, 1.0, 5};
  EXPECT_EQ(*Generate(*model, {1, 2}, top1, nullptr), *Generate(*model, {1, 2}, greedy, nullptr));
}

}  // namespace
}  // namespace fuji::engine
