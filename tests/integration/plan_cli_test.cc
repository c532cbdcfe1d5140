// `fuji plan` and `fuji estimate` end to end through the built binary: the JSON contract, the
// table with the recommendation and the reasons, and bad input refused in one line with exit 2.
#include <unistd.h>

#include <gtest/gtest.h>

#include "tests/integration/process_util.h"

namespace fuji::testing {
namespace {

class PlanCliTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = std::string(FUJI_BINARY_DIR) + "/plan_cli_test_" + std::to_string(::getpid());
    ASSERT_EQ(std::system(("rm -rf " + dir_ + " && mkdir -p " + dir_).c_str()), 0);
  }
  static void TearDownTestSuite() { std::system(("rm -rf " + dir_).c_str()); }
  static CliResult Fuji(const std::vector<std::string>& args) { return RunFuji(args, dir_); }

  static void ExpectRefused(const std::vector<std::string>& args, const std::string& message) {
    CliResult r = Fuji(args);
    EXPECT_EQ(r.exit_code, 2) << message << ": " << r.err;
    EXPECT_EQ(r.err.rfind("fuji: ", 0), 0u) << r.err;
    EXPECT_NE(r.err.find(message), std::string::npos) << r.err;
    EXPECT_EQ(r.err.find('\n'), r.err.size() - 1) << "one line: " << r.err;
    EXPECT_TRUE(r.out.empty()) << r.out;
  }

  static std::string dir_;
};

std::string PlanCliTest::dir_;

TEST_F(PlanCliTest, JsonHoldsEveryPlanAndTheRecommendation) {
  CliResult r = Fuji({"plan", "--model", "2.7b", "--mode", "finetune", "--gpus", "8", "--gpu-memory", "40GiB",
                      "--precision", "bf16", "--output", "json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  ASSERT_TRUE(r.json.is_object()) << r.out;
  ASSERT_EQ(r.json["plans"].size(), 9u);
  for (const auto& p : r.json["plans"]) {
    for (const char* key : {"zero", "offload", "gpu_bytes", "host_bytes", "fits", "step_seconds"}) {
      EXPECT_TRUE(p.contains(key)) << key;
    }
  }
  EXPECT_FALSE(r.json["plans"][0]["fits"].get<bool>());
  ASSERT_TRUE(r.json["recommended"].is_object());
  EXPECT_TRUE(r.json["recommended"]["fits"].get<bool>());
  bool listed = false;
  for (const auto& p : r.json["plans"]) listed |= p == r.json["recommended"];
  EXPECT_TRUE(listed);

  r = Fuji({"plan", "--model", "13b", "--mode", "finetune", "--gpus", "1", "--gpu-memory", "8G",
            "--host-memory", "16G", "--output", "json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(r.json["recommended"].is_null());
}

TEST_F(PlanCliTest, TableMarksTheRecommendedPlanAndSaysWhyOthersDoNotFit) {
  CliResult r = Fuji({"plan", "--model", "cerebras-gpt-13b", "--mode", "infer", "--gpu-memory", "40GiB",
                      "--precision", "fp32", "--seq-len", "128"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("* recommended: zero 3, offload params"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("zero 0, offload none: GPU memory: needs"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("12.85B parameters"), std::string::npos) << r.out;
}

TEST_F(PlanCliTest, BadInputIsRefusedInOneLine) {
  const std::vector<std::string> base = {"plan", "--model", "13b", "--mode", "infer"};
  auto with = [&](std::vector<std::string> extra) {
    std::vector<std::string> args = base;
    args.insert(args.end(), extra.begin(), extra.end());
    return args;
  };
  ExpectRefused(with({"--gpu-memory", "40XB"}), "size '40XB' not understood");
  ExpectRefused(with({"--gpu-memory=-40GiB"}), "negative");
  ExpectRefused(with({"--gpu-memory", "0"}), "must be positive");
  ExpectRefused(with({"--gpu-memory", "40GiB", "--host-memory", "lots"}), "size 'lots' not understood");
  ExpectRefused(with({}), "--gpu-memory is required");
  ExpectRefused(with({"--gpu-memory", "40GiB", "--gpus", "0"}), "gpus must be between 1 and 4096");
  ExpectRefused(with({"--gpu-memory", "40GiB", "--seq-len", "4096"}), "seq_len 4096 above the model's n_positions 2048");
  ExpectRefused({"plan", "--model", "99b", "--gpu-memory", "40GiB"}, "unknown architecture '99b'");
  ExpectRefused({"plan", "--model", "13b", "--gpu-memory", "40GiB", "--precision", "int8"}, "precision");
  ExpectRefused({"estimate", "--tokens-per-s", "0", "--corpus-tokens", "100"}, "tokens per second must be positive");
  ExpectRefused({"estimate", "--tokens-per-s", "10"}, "give one of --corpus-tokens and --corpus");
}

TEST_F(PlanCliTest, EstimateScalesWithGpus) {
  // 1,000 tokens/s measured on one GPU, 8 GPUs, a corpus of 8,000 * 14 days of tokens: 2 weeks.
  CliResult r = Fuji({"estimate", "--tokens-per-s", "1000", "--corpus-tokens", "9676800000", "--epochs", "1",
                      "--gpus", "8", "--output", "json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_DOUBLE_EQ(r.json["seconds"].get<double>(), 14 * 86400.0);
  EXPECT_EQ(r.json["duration"], "2.0 weeks");
  r = Fuji({"estimate", "--tokens-per-s", "8000", "--measured-gpus", "8", "--corpus-tokens", "4838400000",
            "--epochs", "2", "--gpus", "8"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("2.0 weeks"), std::string::npos) << r.out;
}

}  // namespace
}  // namespace fuji::testing
