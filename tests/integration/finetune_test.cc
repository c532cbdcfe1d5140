// Fine-tuning end to end through `fuji run finetune`: real fuji-rank gangs over Gloo, a random
// 17-head checkpoint, text from Debian's packages. The ZeRO stages and offloads must give the
// losses and weights of plain single-rank training with the same global batch; memory must match
// ZeRO's arithmetic; a resumed run must continue exactly; the model must learn.
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <map>
#include <sstream>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "tests/integration/process_util.h"
#include "worker/ckpt/retention.h"
#include "worker/ckpt/zero_checkpoint.h"
#include "lib/model/model_config.h"

namespace {

using fuji::testing::CliResult;
using fuji::testing::Quote;

class FinetuneTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = std::string(FUJI_BINARY_DIR) + "/finetune_test_" + std::to_string(::getpid());
    ASSERT_EQ(std::system(("rm -rf " + dir_ + " && mkdir -p " + dir_).c_str()), 0);
    const std::string corpora = std::string(FUJI_SOURCE_DIR) + "/tests/reference/make_corpora.sh";
    ASSERT_EQ(std::system(("sh " + Quote(corpora) + " " + Quote(dir_ + "/text")).c_str()), 0);
    CliResult r = Fuji({"model", "init", "--arch", "tiny", "--out", dir_ + "/tiny", "--seed", "1"});
    ASSERT_EQ(r.exit_code, 0) << r.err;
  }
  static void TearDownTestSuite() { std::system(("rm -rf " + dir_).c_str()); }

  // FUJI_CPU_OFFLOAD=emulate: an explicit offload runs its data path on these CPU ranks (fuji
  // would otherwise run it as none), so every offload is checked without a GPU.
  static CliResult Fuji(const std::vector<std::string>& args) {
    return fuji::testing::RunFuji(args, dir_, "FUJI_CPU_OFFLOAD=emulate");
  }

  // A fine-tune of the tiny model on English text: 20 steps, accumulation 2, clipping active.
  static CliResult Finetune(int ranks, int zero, const std::string& offload, int micro_batch,
                            const std::string& save_to, std::vector<std::string> extra = {},
                            int steps = 20) {
    std::vector<std::string> args = {
        "run", "finetune", "--model", dir_ + "/tiny", "--data", dir_ + "/text/english.txt",
        "--ranks", std::to_string(ranks), "--zero", std::to_string(zero), "--offload", offload,
        "--precision", "fp32", "--seq-len", "32", "--micro-batch", std::to_string(micro_batch),
        "--grad-accum", "2", "--steps", std::to_string(steps), "--lr", "2e-3", "--warmup-steps", "2", "--clip", "0.5",
        "--cache-dir", dir_ + "/cache", "--threads", "1", "--output", "json"};
    if (!save_to.empty()) {
      args.push_back("--save-to");
      args.push_back(save_to);
    }
    args.insert(args.end(), extra.begin(), extra.end());
    return Fuji(args);
  }

  static std::vector<double> Losses(const nlohmann::json& result) {
    std::vector<double> out;
    for (const auto& l : result["losses"]) out.push_back(l["loss"].get<double>());
    return out;
  }

  // Every unit's master weights of a checkpoint, assembled.
  static std::vector<std::vector<float>> Weights(const std::string& save_to) {
    auto reader = fuji::ckpt::CheckpointReader::Open(save_to);
    EXPECT_TRUE(reader.ok()) << reader.status().message();
    std::vector<std::vector<float>> out;
    if (!reader.ok()) return out;
    for (size_t u = 0; u < reader->meta().units.size(); ++u) {
      const int64_t n = reader->meta().units[u].numel;
      out.emplace_back(static_cast<size_t>(n));
      const auto s = reader->Read(u, 0, n, out.back().data(), nullptr, nullptr);
      EXPECT_TRUE(s.ok()) << s.message();
    }
    return out;
  }

  static void ExpectSameLosses(const std::vector<double>& got, const std::vector<double>& want,
                               double tolerance, const std::string& what) {
    ASSERT_EQ(got.size(), want.size()) << what;
    for (size_t i = 0; i < got.size(); ++i) {
      EXPECT_LE(std::fabs(got[i] - want[i]), tolerance * std::fabs(want[i]))
          << what << " step " << i + 1 << ": " << got[i] << " vs " << want[i];
    }
  }

  static void ExpectSameWeights(const std::vector<std::vector<float>>& got,
                                const std::vector<std::vector<float>>& want, double tolerance,
                                const std::string& what) {
    ASSERT_EQ(got.size(), want.size()) << what;
    for (size_t u = 0; u < got.size(); ++u) {
      ASSERT_EQ(got[u].size(), want[u].size()) << what;
      double max_diff = 0, max_ref = 0;
      for (size_t i = 0; i < got[u].size(); ++i) {
        max_diff = std::max(max_diff, static_cast<double>(std::fabs(got[u][i] - want[u][i])));
        max_ref = std::max(max_ref, static_cast<double>(std::fabs(want[u][i])));
      }
      EXPECT_LE(max_diff, tolerance * max_ref) << what << " unit " << u;
    }
  }

  static std::string dir_;
};

std::string FinetuneTest::dir_;

// 2 and 3 ranks (3 makes uneven shards) at every stage and offload give the losses and final
// weights of one rank with the same global batch.
TEST_F(FinetuneTest, EveryStageMatchesOneRank) {
  for (int ranks : {2, 3}) {
    const std::string ref_dir = dir_ + "/ref" + std::to_string(ranks);
    CliResult ref = Finetune(1, 0, "none", 2 * ranks, ref_dir);
    ASSERT_EQ(ref.exit_code, 0) << ref.err;
    const std::vector<double> ref_losses = Losses(ref.json);
    ASSERT_EQ(ref_losses.size(), 20u);
    const auto ref_weights = Weights(ref_dir);
    for (int zero = 0; zero <= 3; ++zero) {
      std::vector<std::string> offloads = {"none", "optimizer"};
      if (zero == 3) offloads.push_back("params");
      for (const std::string& offload : offloads) {
        const std::string what = std::to_string(ranks) + " ranks, zero " + std::to_string(zero) +
                                 ", offload " + offload;
        const std::string save = dir_ + "/run-" + std::to_string(ranks) + "-" + std::to_string(zero) + "-" + offload;
        CliResult r = Finetune(ranks, zero, offload, 2, save);
        ASSERT_EQ(r.exit_code, 0) << what << ": " << r.err;
        ExpectSameLosses(Losses(r.json), ref_losses, 1e-5, what);
        ExpectSameWeights(Weights(save), ref_weights, 1e-4, what);
        std::system(("rm -rf " + Quote(save)).c_str());
      }
    }
  }
}

// Memory on N ranks follows ZeRO's arithmetic exactly (padding included): stage 1 holds 1/N of
// the optimizer state, stage 2 also 1/N of the gradients, stage 3 also 1/N of the parameters;
// offload moves those bytes from the device to the host.
TEST_F(FinetuneTest, MemoryFollowsZeroArithmetic) {
  auto config = fuji::engine::LoadModelConfig(dir_ + "/tiny");
  ASSERT_TRUE(config.ok());
  const auto units = fuji::ckpt::UnitsOf(*config);
  const int N = 3;
  int64_t full = 0, shard = 0;  // elements, padded as the trainer pads
  for (const auto& u : units) {
    const int64_t s = (u.numel + N - 1) / N;
    shard += s;
    full += s * N;
  }
  struct Case {
    int zero;
    std::string offload;
    int64_t params_device, params_host, grads_device, grads_host, optimizer_device, optimizer_host;
  };
  // fp32: parameters 4 bytes, gradients 4, AdamW moments 8, and a separate fp32 master copy (4)
  // only when the optimizer does not update the parameters in place (offload).
  const std::vector<Case> cases = {
      {0, "none", 4 * full, 0, 4 * full, 0, 8 * full, 0},
      {1, "none", 4 * full, 0, 4 * full, 0, 8 * shard, 0},
      {2, "none", 4 * full, 0, 4 * shard, 0, 8 * shard, 0},
      {3, "none", 4 * shard, 0, 4 * shard, 0, 8 * shard, 0},
      {2, "optimizer", 4 * full, 0, 0, 4 * shard, 0, 12 * shard},
      {3, "params", 0, 4 * shard, 0, 4 * shard, 0, 12 * shard},
  };
  for (const Case& c : cases) {
    const std::string what = "zero " + std::to_string(c.zero) + ", offload " + c.offload;
    CliResult r = Finetune(N, c.zero, c.offload, 1, "", {}, 2);
    ASSERT_EQ(r.exit_code, 0) << what << ": " << r.err;
    const auto& ranks = r.json["memory"]["ranks"];
    ASSERT_EQ(ranks.size(), static_cast<size_t>(N)) << what;
    for (const auto& m : ranks) {
      EXPECT_EQ(m["params_device_bytes"].get<int64_t>(), c.params_device) << what;
      EXPECT_EQ(m["params_host_bytes"].get<int64_t>(), c.params_host) << what;
      EXPECT_EQ(m["grads_device_bytes"].get<int64_t>(), c.grads_device) << what;
      EXPECT_EQ(m["grads_host_bytes"].get<int64_t>(), c.grads_host) << what;
      EXPECT_EQ(m["optimizer_device_bytes"].get<int64_t>(), c.optimizer_device) << what;
      EXPECT_EQ(m["optimizer_host_bytes"].get<int64_t>(), c.optimizer_host) << what;
      EXPECT_GT(m["peak_rss_bytes"].get<int64_t>(), 0) << what;
      EXPECT_GE(m["peak_device_bytes"].get<int64_t>(), c.params_device + c.grads_device) << what;
    }
  }
}

// 10 steps, save, resume for 10 more: the same losses and weights as 20 steps straight.
TEST_F(FinetuneTest, ResumeContinuesExactly) {
  const std::string straight = dir_ + "/straight", stopped = dir_ + "/stopped";
  CliResult a = Finetune(2, 2, "none", 2, straight);
  ASSERT_EQ(a.exit_code, 0) << a.err;
  CliResult b = Finetune(2, 2, "none", 2, stopped, {"--stop-after", "10"});
  ASSERT_EQ(b.exit_code, 0) << b.err;
  ASSERT_EQ(Losses(b.json).size(), 10u);
  CliResult c = Finetune(2, 2, "none", 2, stopped);
  ASSERT_EQ(c.exit_code, 0) << c.err;
  EXPECT_EQ(c.json["start_step"].get<int64_t>(), 10);
  std::vector<double> resumed = Losses(b.json);
  for (double l : Losses(c.json)) resumed.push_back(l);
  ExpectSameLosses(resumed, Losses(a.json), 1e-6, "resumed");
  ExpectSameWeights(Weights(stopped), Weights(straight), 1e-6, "resumed");

  // Run again once done (a retry of an attempt whose end never reached fujid): nothing left to
  // train, it succeeds with the finished checkpoint and the weights stay as they were.
  CliResult again = Finetune(2, 2, "none", 2, stopped);
  ASSERT_EQ(again.exit_code, 0) << again.err;
  EXPECT_EQ(again.json["start_step"].get<int64_t>(), 20);
  EXPECT_EQ(again.json["steps"].get<int64_t>(), 20);  // the steps done
  EXPECT_TRUE(again.json["losses"].empty());
  EXPECT_NE(again.json["checkpoint"].get<std::string>().find("step-00000020"), std::string::npos) << again.json.dump();
  ExpectSameWeights(Weights(stopped), Weights(straight), 1e-6, "after a run with nothing left");
}

// --keep-last 2, a checkpoint every 2 steps: only the newest two step directories remain, and a run
// resumed from them continues exactly as one that kept everything.
TEST_F(FinetuneTest, KeepLastLeavesTheNewestCheckpointsAndResumes) {
  const std::string straight = dir_ + "/keep_straight", kept = dir_ + "/keep_last";
  const auto step_dirs = [](const std::string& save_to) {
    auto names = fuji::ckpt::StepDirNames(save_to);
    EXPECT_TRUE(names.ok()) << names.status().ToString();
    return names.ok() ? *names : std::vector<std::string>();
  };
  const std::vector<std::string> every2 = {"--save-every", "2"};
  CliResult a = Finetune(2, 1, "none", 1, straight, every2, 8);
  ASSERT_EQ(a.exit_code, 0) << a.err;
  EXPECT_EQ(step_dirs(straight).size(), 4u);  // no --keep-last: all of them
  CliResult b = Finetune(2, 1, "none", 1, kept, {"--save-every", "2", "--keep-last", "2", "--stop-after", "6"}, 8);
  ASSERT_EQ(b.exit_code, 0) << b.err;
  EXPECT_EQ(step_dirs(kept), (std::vector<std::string>{"step-00000004", "step-00000006"}));
  CliResult c = Finetune(2, 1, "none", 1, kept, {"--save-every", "2", "--keep-last", "2"}, 8);
  ASSERT_EQ(c.exit_code, 0) << c.err;
  EXPECT_EQ(c.json["start_step"].get<int64_t>(), 6);
  EXPECT_EQ(step_dirs(kept), (std::vector<std::string>{"step-00000006", "step-00000008"}));
  std::vector<double> resumed = Losses(b.json);
  for (double l : Losses(c.json)) resumed.push_back(l);
  ExpectSameLosses(resumed, Losses(a.json), 1e-6, "resumed after pruning");
  ExpectSameWeights(Weights(kept), Weights(straight), 1e-6, "resumed after pruning");
}

// Fine-tuning the tiny model on Japanese text lowers the held-out loss clearly.
TEST_F(FinetuneTest, LearnsJapanese) {
  CliResult r = Fuji({"run", "finetune", "--model", dir_ + "/tiny", "--data", dir_ + "/text/japanese.txt",
                      "--ranks", "2", "--zero", "2", "--seq-len", "64", "--micro-batch", "4", "--steps", "60",
                      "--lr", "3e-3", "--warmup-steps", "5", "--eval-every", "30", "--eval-batches", "4",
                      "--cache-dir", dir_ + "/cache", "--threads", "1", "--output", "json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto& evals = r.json["eval_losses"];
  ASSERT_GE(evals.size(), 2u) << r.out;
  const double before = evals.front()["loss"].get<double>(), after = evals.back()["loss"].get<double>();
  EXPECT_EQ(evals.front()["step"].get<int64_t>(), 0);
  std::printf("held-out loss: %.3f at step 0, %.3f at step %lld\n", before, after,
              static_cast<long long>(evals.back()["step"].get<int64_t>()));
  EXPECT_LT(after, before - 2.0) << r.out;
}

// Bad input is refused before any rank starts, in one line: FUJI_RANK points at a script that
// would leave a mark if a rank were ever started.
TEST_F(FinetuneTest, BadInputIsRefusedBeforeAnyRankStarts) {
  const std::string mark = dir_ + "/rank-started";
  const std::string fake_rank = dir_ + "/fake-rank";
  {
    std::ofstream f(fake_rank);
    f << "#!/bin/sh\ntouch " << Quote(mark) << "\nexit 1\n";
  }
  ASSERT_EQ(::chmod(fake_rank.c_str(), 0755), 0);
  ASSERT_EQ(::setenv("FUJI_RANK", fake_rank.c_str(), 1), 0);
  {
    std::ofstream(dir_ + "/empty.txt");
    std::ofstream(dir_ + "/short.txt") << "Mt. Fuji";
    std::ofstream(dir_ + "/bad.txt") << "valid, then \xff\xfe not UTF-8\n";
    std::ofstream(dir_ + "/a-file") << "x";
  }
  const std::string model = dir_ + "/tiny", text = dir_ + "/text/english.txt";
  struct Case {
    std::vector<std::string> args;
    std::string expected;
  };
  const std::vector<Case> cases = {
      {{"--data", dir_ + "/empty.txt"}, "empty"},
      {{"--data", dir_ + "/short.txt", "--seq-len", "64"}, "shorter than one block"},
      {{"--data", dir_ + "/bad.txt"}, "UTF-8"},
      {{"--data", text, "--seq-len", "4096"}, "n_positions"},
      {{"--data", text, "--micro-batch", "0"}, "micro_batch"},
      {{"--data", text, "--zero", "4"}, "zero"},
      {{"--data", text, "--device", "cuda", "--ranks", "2"}, "devices"},
      {{"--data", text, "--ranks", "65"}, "ranks"},
      {{"--data", text, "--zero", "2", "--offload", "params"}, "zero 3"},
      {{"--data", text, "--save-to", dir_ + "/a-file/ckpt"}, "a-file"},
  };
  for (const Case& c : cases) {
    std::vector<std::string> args = {"run", "finetune", "--model", model, "--seq-len", "32",
                                     "--steps", "2", "--cache-dir", dir_ + "/cache"};
    // A later --seq-len would be refused as repeated: drop the default when a case sets it.
    bool sets_seq_len = false;
    for (const auto& a : c.args) sets_seq_len |= a == "--seq-len";
    if (sets_seq_len) args.erase(args.begin() + 4, args.begin() + 6);
    args.insert(args.end(), c.args.begin(), c.args.end());
    CliResult r = Fuji(args);
    std::string what;
    for (const auto& a : c.args) what += a + " ";
    EXPECT_EQ(r.exit_code, 2) << what << r.err;
    EXPECT_EQ(r.err.rfind("fuji: ", 0), 0u) << what << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << what << r.err;
    EXPECT_NE(r.err.find(c.expected), std::string::npos) << what << r.err;
    EXPECT_NE(::access(mark.c_str(), F_OK), 0) << what << ": a rank was started";
  }
  ::unsetenv("FUJI_RANK");
}

}  // namespace
