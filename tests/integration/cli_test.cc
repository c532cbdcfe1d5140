// The fuji CLI end to end: real fuji and fuji-rank processes, a random checkpoint on disk, and
// the one-line errors and non-zero exits that bad input must give.
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <sstream>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "tests/integration/process_util.h"

namespace {

using fuji::testing::CliResult;

class CliTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = std::string(FUJI_BINARY_DIR) + "/cli_test_" + std::to_string(::getpid());
    ASSERT_EQ(std::system(("rm -rf " + dir_ + " && mkdir -p " + dir_).c_str()), 0);
    CliResult r = Fuji({"model", "init", "--arch", "tiny", "--out", dir_ + "/tiny", "--seed", "1"});
    ASSERT_EQ(r.exit_code, 0) << r.err;
  }
  static void TearDownTestSuite() { std::system(("rm -rf " + dir_).c_str()); }

  static CliResult Fuji(const std::vector<std::string>& args) { return fuji::testing::RunFuji(args, dir_); }

  // Bad input: a non-zero exit and exactly one line on stderr, "fuji: ..." containing `expected`.
  static void ExpectOneLineError(const CliResult& r, const std::string& expected) {
    EXPECT_NE(r.exit_code, 0);
    EXPECT_EQ(r.err.rfind("fuji: ", 0), 0u) << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
    EXPECT_NE(r.err.find(expected), std::string::npos) << r.err;
  }

  static std::string dir_;
};
std::string CliTest::dir_;

TEST_F(CliTest, TokenizeAndDetokenizeRoundTrip) {
  CliResult r = Fuji({"tokenize", "--model", dir_ + "/tiny", "--text", "Hello world", "--output", "json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(nlohmann::json::parse(r.out), nlohmann::json::parse(R"({"ids": [15496, 995]})"));
  r = Fuji({"detokenize", "--model", dir_ + "/tiny", "--ids", "15496,995"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "Hello world");
  std::ofstream(dir_ + "/ja.txt") << "富士山は日本一高い山です。\n";
  r = Fuji({"tokenize", "--model", dir_ + "/tiny", "--file", dir_ + "/ja.txt"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::ofstream(dir_ + "/ids.json") << r.out;
  r = Fuji({"detokenize", "--model", dir_ + "/tiny", "--file", dir_ + "/ids.json"});
  EXPECT_EQ(r.out, "富士山は日本一高い山です。\n");
}

TEST_F(CliTest, RunInferGivesTheJsonResult) {
  CliResult r = Fuji({"run", "infer", "--model", dir_ + "/tiny", "--prompt",
                      "There are famous mountain like Mt.Fuji in Japan.", "--max-new-tokens", "12",
                      "--ignore-eos", "--output", "json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto j = nlohmann::json::parse(r.out);
  CliResult tokens = Fuji({"tokenize", "--model", dir_ + "/tiny", "--text",
                           "There are famous mountain like Mt.Fuji in Japan."});
  EXPECT_EQ(j["prompt_ids"], nlohmann::json::parse(tokens.out)["ids"]);
  EXPECT_EQ(j["output_ids"].size(), 12u);
  EXPECT_TRUE(j["text"].is_string());
  for (const char* key : {"load_ms", "tokenize_ms", "prefill_ms", "decode_ms", "decode_tokens_per_s", "total_ms"}) {
    EXPECT_TRUE(j["timings"][key].is_number()) << key;
  }
  EXPECT_GT(j["timings"]["decode_tokens_per_s"].get<double>(), 0);
  EXPECT_GT(j["memory"]["peak_rss_mib"].get<double>(), 1);

  // Same seed, same sampled text; --prompt-ids takes the ids directly.
  std::vector<std::string> sample = {"run", "infer", "--model", dir_ + "/tiny", "--prompt-ids", "464,3290",
                                     "--temperature", "0.8", "--top-k", "40", "--top-p", "0.9",
                                     "--seed", "3", "--max-new-tokens", "6", "--output", "json"};
  auto a = nlohmann::json::parse(Fuji(sample).out), b = nlohmann::json::parse(Fuji(sample).out);
  EXPECT_EQ(a["output_ids"], b["output_ids"]);
  EXPECT_EQ(a["prompt_ids"], nlohmann::json::parse("[464, 3290]"));
}

// --offload params streams the weights from host memory unit by unit (the ZeRO-3 path): the same
// greedy continuation as the resident model.
TEST_F(CliTest, OffloadedParametersGenerateTheSameTokens) {
  std::vector<std::string> args = {"run", "infer", "--model", dir_ + "/tiny", "--prompt-ids", "464,3290,318",
                                   "--max-new-tokens", "10", "--ignore-eos", "--output", "json"};
  CliResult resident = Fuji(args);
  ASSERT_EQ(resident.exit_code, 0) << resident.err;
  args.insert(args.end(), {"--offload", "params"});
  // FUJI_CPU_OFFLOAD=emulate runs the streaming data path on the CPU, with host memory standing
  // in for the device's.
  CliResult streamed = fuji::testing::RunFuji(args, dir_, "FUJI_CPU_OFFLOAD=emulate");
  ASSERT_EQ(streamed.exit_code, 0) << streamed.err;
  const auto a = nlohmann::json::parse(resident.out), b = nlohmann::json::parse(streamed.out);
  EXPECT_EQ(b["offload"], "params");
  EXPECT_EQ(a["output_ids"], b["output_ids"]);
}

// On a CPU device host and device memory are the same memory: an explicit offload runs as none
// and says so in one line.
TEST_F(CliTest, OffloadOnACpuDeviceRunsAsNone) {
  CliResult r = Fuji({"run", "infer", "--model", dir_ + "/tiny", "--prompt-ids", "464,3290", "--max-new-tokens", "2",
                      "--offload", "params", "--output", "json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("fuji: note: offload params runs as offload none on a CPU device"), std::string::npos) << r.err;
  EXPECT_EQ(nlohmann::json::parse(r.out)["offload"], "none");
}

// auto on this machine: the planner's fastest plan that fits the host's free memory, said on
// stderr; a model that fits no plan is refused before any rank starts.
TEST_F(CliTest, AutoPicksThePlanThatFitsThisMachine) {
  CliResult r = Fuji({"run", "infer", "--model", dir_ + "/tiny", "--prompt-ids", "464,3290", "--max-new-tokens", "4",
                      "--offload", "auto", "--output", "json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("plan: offload none (the fastest that fits the "), std::string::npos) << r.err;
  EXPECT_EQ(nlohmann::json::parse(r.out)["offload"], "none");

  std::ofstream(dir_ + "/corpus.txt") << "Mt. Fuji is the highest mountain in Japan. " << std::string(2000, 'x') << "\n";
  r = Fuji({"run", "finetune", "--model", dir_ + "/tiny", "--data", dir_ + "/corpus.txt", "--ranks", "2",
            "--seq-len", "16", "--steps", "2", "--zero", "auto", "--offload", "auto", "--cache-dir", dir_ + "/tokens",
            "--output", "json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("plan: zero "), std::string::npos) << r.err;

  // A 13B shape (its config only) fits no plan in this machine's memory.
  ASSERT_EQ(std::system(("mkdir -p " + dir_ + "/13b").c_str()), 0);
  std::ofstream(dir_ + "/13b/config.json") << R"({"n_layer": 40, "n_embd": 5120, "n_head": 40, "n_inner": 20480})";
  ExpectOneLineError(Fuji({"run", "finetune", "--model", dir_ + "/13b", "--data", dir_ + "/corpus.txt", "--zero", "auto",
                           "--cache-dir", dir_ + "/tokens"}),
                     "no plan fits the ");
  ExpectOneLineError(Fuji({"run", "finetune", "--model", dir_ + "/tiny", "--data", dir_ + "/corpus.txt", "--zero", "4"}),
                     "--zero");
}

TEST_F(CliTest, BadInferenceInputIsRefusedInOneLine) {
  const std::string m = dir_ + "/tiny";
  ExpectOneLineError(Fuji({"run", "infer", "--model", dir_ + "/nope", "--prompt", "x"}), "no such checkpoint directory");
  ExpectOneLineError(Fuji({"run", "infer", "--model", m, "--prompt", ""}), "empty prompt");
  ExpectOneLineError(Fuji({"run", "infer", "--model", m, "--prompt-ids", "1,50257"}), "outside the vocabulary");
  ExpectOneLineError(Fuji({"run", "infer", "--model", m, "--prompt-ids", "1,x"}), "not a token id");
  ExpectOneLineError(Fuji({"run", "infer", "--model", m, "--prompt", "caf\xc3"}), "not valid UTF-8");
  std::string long_ids = "1";
  for (int i = 0; i < 300; ++i) long_ids += ",1";
  ExpectOneLineError(Fuji({"run", "infer", "--model", m, "--prompt-ids", long_ids}), "longer than the model's 256 positions");
  ExpectOneLineError(Fuji({"run", "infer", "--model", m, "--prompt", "x", "--max-new-tokens", "-3"}), "max_new_tokens");
  ExpectOneLineError(Fuji({"run", "infer", "--model", m, "--prompt", "x", "--device", "tpu"}), "device");
  ExpectOneLineError(Fuji({"run", "infer", "--model", m, "--prompt", "x", "--precision", "fp8"}), "precision");
}

TEST_F(CliTest, BadCheckpointsAreRefusedInOneLine) {
  ExpectOneLineError(Fuji({"model", "init", "--arch", "tiny", "--width", "70", "--out", dir_ + "/bad"}),
                     "not divisible by n_head");
  ExpectOneLineError(Fuji({"model", "init", "--arch", "gpt-5", "--out", dir_ + "/bad"}), "unknown architecture");
  // A truncated safetensors file.
  ASSERT_EQ(std::system(("cp -r " + dir_ + "/tiny " + dir_ + "/cut && truncate -s 100000 " + dir_ +
                         "/cut/model.safetensors").c_str()), 0);
  CliResult r = Fuji({"run", "infer", "--model", dir_ + "/cut", "--prompt", "x"});
  ExpectOneLineError(r, "model.safetensors");
  EXPECT_EQ(r.exit_code, 2);
}

TEST_F(CliTest, ConvertWritesALoadableCheckpoint) {
  CliResult r = Fuji({"model", "convert", "--in", dir_ + "/tiny", "--out", dir_ + "/bf16", "--dtype", "bf16"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  r = Fuji({"run", "infer", "--model", dir_ + "/bf16", "--prompt", "Hello", "--max-new-tokens", "3",
            "--precision", "bf16", "--output", "json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(nlohmann::json::parse(r.out)["precision"], "bf16");
}

}  // namespace
