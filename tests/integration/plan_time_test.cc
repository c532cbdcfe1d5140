// The planner's step times against measured ones on this machine's CPU, planned with the rates a
// fuji-rank measures here (launch::MeasureNodeRates, what fuji-agent reports at Register): for
// inference of the 111M shape (one decode step per token) and a 2-rank fine-tuning step of it,
// the plan the planner ranks first takes within 2x of the predicted time. Offload none against
// (emulated) optimizer offload: the planner's order agrees with the measured one, or both are a
// tie (within 10%). Margins are wide (2x) because this is a prediction of a noisy machine, not
// a benchmark; bench/ and docs/performance.md hold the figures.
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <vector>

#include <gtest/gtest.h>

#include "tests/integration/process_util.h"
#include "worker/launcher/node_rates.h"
#include "lib/plan/plan.h"

namespace fuji::testing {
namespace {

constexpr int kRanks = 2;
constexpr int64_t kSeqLen = 64, kNewTokens = 32;
// "There are famous mountain like Mt.Fuji in Japan." in GPT-2 ids.
const char kPromptIds[] = "1858,389,5863,8598,588,18254,13,37,84,7285,287,2869,13";
constexpr int64_t kPromptTokens = 13;

class PlanTimeTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = std::string(FUJI_BINARY_DIR) + "/plan_time_test_" + std::to_string(::getpid());
    ASSERT_EQ(std::system(("rm -rf " + dir_ + " && mkdir -p " + dir_).c_str()), 0);
    const std::string corpora = std::string(FUJI_SOURCE_DIR) + "/tests/reference/make_corpora.sh";
    ASSERT_EQ(std::system(("sh " + Quote(corpora) + " " + Quote(dir_ + "/text") + " >/dev/null").c_str()), 0);
    CliResult r = RunFuji({"model", "init", "--arch", "cerebras-gpt-111m", "--out", dir_ + "/model", "--seed", "1"}, dir_);
    ASSERT_EQ(r.exit_code, 0) << r.err;
    auto rates = launch::MeasureNodeRates(std::string(FUJI_BINARY_DIR) + "/bin/fuji-rank", std::chrono::seconds(120));
    ASSERT_TRUE(rates.ok()) << rates.status().message();
    std::printf("measured rates: %s\n", rates->dump().c_str());
    auto throughput = plan::RatesFromJson(*rates, plan::kThroughput);
    ASSERT_TRUE(throughput.ok()) << throughput.status().message();
    rates_ = *throughput;
  }
  static void TearDownTestSuite() { std::system(("rm -rf " + dir_).c_str()); }

  static plan::PlanRequest Request(const std::string& mode) {
    plan::PlanRequest r;
    auto config = plan::ResolveModel(dir_ + "/model", &r.checkpoint_bytes);
    EXPECT_TRUE(config.ok()) << config.status().message();
    r.config = *config;
    r.mode = mode;
    r.device = plan::DeviceKind::kCpu;
    r.precision = "fp32";
    r.rates = rates_;
    return r;
  }

  // The measured seconds of one fine-tuning step (one micro-batch per rank, no accumulation) in
  // the steady state the planner predicts: the median of the steps after the first (which also
  // allocates the optimizer's states).
  static double FinetuneStep(int zero, const std::string& offload) {
    CliResult r = RunFuji({"run", "finetune", "--model", dir_ + "/model", "--data", dir_ + "/text/english.txt",
                           "--ranks", std::to_string(kRanks), "--zero", std::to_string(zero), "--offload", offload,
                           "--precision", "fp32", "--seq-len", std::to_string(kSeqLen), "--micro-batch", "1",
                           "--grad-accum", "1", "--steps", "5", "--cache-dir", dir_ + "/cache", "--output", "json"},
                          dir_, "FUJI_CPU_OFFLOAD=emulate");
    EXPECT_EQ(r.exit_code, 0) << r.err;
    if (r.exit_code != 0) return 0;
    EXPECT_EQ(r.json["offload"], offload);
    std::vector<double> ms;
    for (const auto& l : r.json["losses"]) {
      if (l["step"].get<int>() > 1) ms.push_back(l["ms"].get<double>());
    }
    EXPECT_EQ(ms.size(), 4u);
    if (ms.empty()) return 0;
    std::sort(ms.begin(), ms.end());
    return (ms[(ms.size() - 1) / 2] + ms[ms.size() / 2]) / 2 / 1000;
  }

  static void ExpectWithin2x(const char* what, double predicted, double measured) {
    std::printf("%s: predicted %.4f s, measured %.4f s (x%.2f)\n", what, predicted, measured, measured / predicted);
    EXPECT_GT(measured, 0) << what;
    EXPECT_LE(measured, 2 * predicted) << what;
    EXPECT_GE(measured, predicted / 2) << what;
  }

  static std::string dir_;
  static plan::Throughput rates_;
};

std::string PlanTimeTest::dir_;
plan::Throughput PlanTimeTest::rates_;

TEST_F(PlanTimeTest, InferenceDecodeStep) {
  plan::PlanRequest r = Request("infer");
  r.seq_len = kPromptTokens + kNewTokens;
  auto plans = plan::PlanAll(r);
  ASSERT_TRUE(plans.ok()) << plans.status().message();
  auto best = plan::Recommend(*plans);
  ASSERT_TRUE(best.has_value());
  EXPECT_EQ(best->offload, "none");
  CliResult run = RunFuji({"run", "infer", "--model", dir_ + "/model", "--prompt-ids", kPromptIds, "--max-new-tokens",
                           std::to_string(kNewTokens), "--ignore-eos", "--output", "json"},
                          dir_);
  ASSERT_EQ(run.exit_code, 0) << run.err;
  ExpectWithin2x("111M decode, one token", best->step_seconds,
                 1.0 / run.json["timings"]["decode_tokens_per_s"].get<double>());
}

TEST_F(PlanTimeTest, TwoRankFineTuningStep) {
  plan::PlanRequest r = Request("finetune");
  r.gpus = kRanks;
  r.seq_len = kSeqLen;
  r.micro_batch = 1;
  auto plans = plan::PlanAll(r);
  ASSERT_TRUE(plans.ok()) << plans.status().message();
  auto best = plan::Recommend(*plans);
  ASSERT_TRUE(best.has_value());
  EXPECT_EQ(best->offload, "none");
  const double none = FinetuneStep(best->zero, "none");
  ExpectWithin2x(("111M fine-tuning step, 2 ranks, zero " + std::to_string(best->zero)).c_str(), best->step_seconds,
                 none);

  // Optimizer offload at the same stage, its data path emulated on the CPU: measured within 10% of
  // each other, the planner must call it a tie too; predicted within 10%, the two runs may still
  // differ by the noise of a shared two-core machine (CI measured 0.895 against a predicted 1.039),
  // but not by a quarter; both further apart, the predicted order must be the measured one.
  auto offload = plan::PlanOne(r, best->zero, "optimizer");
  ASSERT_TRUE(offload.ok()) << offload.status().message();
  const double optimizer = FinetuneStep(best->zero, "optimizer");
  const double predicted_ratio = offload->step_seconds / best->step_seconds, measured_ratio = optimizer / none;
  std::printf("optimizer offload / none: predicted %.3f, measured %.3f\n", predicted_ratio, measured_ratio);
  const bool predicted_tie = std::fabs(predicted_ratio - 1) < 0.10, measured_tie = std::fabs(measured_ratio - 1) < 0.10;
  if (measured_tie) {
    EXPECT_TRUE(predicted_tie) << "measured a tie, predicted " << predicted_ratio;
  } else if (predicted_tie) {
    EXPECT_LT(std::fabs(measured_ratio - 1), 0.25) << "predicted a tie, measured " << measured_ratio;
  } else {
    EXPECT_EQ(predicted_ratio > 1, measured_ratio > 1)
        << "predicted " << predicted_ratio << ", measured " << measured_ratio;
  }
}

}  // namespace
}  // namespace fuji::testing
