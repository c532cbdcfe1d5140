// fuji's trainer against PyTorch (tests/reference/trainer_reference.py: GPT-2 built from torch.nn
// modules in float64, autograd, clip_grad_norm_, torch.optim.AdamW with two parameter groups):
// the loss, the gradients and the weights after one step of real fuji-rank gangs, on one rank and
// at every ZeRO stage on two, with and without active clipping, on a random checkpoint whose
// biases and LayerNorm parameters are far from zero and one.
//
// The gangs are started exactly as `fuji run finetune` starts them (PrepareFinetune, then a Gang
// of fuji-rank processes), from a spec rather than flags because the spec also sets AdamW's eps
// (see kEps). What fuji computed is read from its one-step checkpoint: the master weights, and the
// moments, whose exp_avg after step 1 is (1 - beta1) times the gradient AdamW used (averaged over
// ranks and accumulation, clipped). Nothing in production code is there for this test.
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "worker/data/token_cache.h"
#include "worker/launcher/finetune_prepare.h"
#include "worker/launcher/gang.h"

namespace fuji {
namespace {

const std::string kScript = std::string(FUJI_SOURCE_DIR) + "/tests/reference/trainer_reference.py";

// The step: S-token blocks, a global batch of kGlobal blocks (1 rank x 6 x 2 accumulation, or
// 2 ranks x 3 x 2), AdamW at step 1 of a 4-step warmup from 4e-3 (so lr = 1e-3 exactly).
constexpr int64_t kSeqLen = 16, kGlobal = 12, kAccum = 2;
constexpr double kLr = 4e-3, kWarmup = 4, kWeightDecay = 0.1, kBeta1 = 0.9, kBeta2 = 0.95;
// AdamW's eps. At step 1 AdamW moves each weight by lr * g / (|g| + eps): for |g| >> eps that is
// lr * sign(g), so a gradient whose exact value is 0 (the attention key biases': softmax ignores
// a shift shared by every key) or nearly 0 is moved by +-lr on the sign of its float32 rounding
// noise, which no implementation reproduces (measured: 1.8e-4 between torch in float32 and
// float64 with eps 1e-8). With eps 1e-4 an error e in g moves the weight by at most lr * e / eps,
// while the larger gradients (the matrices', up to 1e-2) still see AdamW's normalization and the
// smaller ones (most of the token embedding's, ~1e-6) its eps.
constexpr double kEps = 1e-4;
// The clipped runs clip at this fraction of the unclipped gradient norm: clipping is active.
constexpr double kClipFraction = 0.5;

// Tolerances (the reference is float64; fuji trains in float32):
constexpr double kLossRel = 1e-6;      // |loss - ref| / |ref|
constexpr double kGradNormRel = 1e-5;  // the global gradient norm fuji reports
constexpr double kGradRel = 1e-5;      // per parameter: max |g - ref| / max |ref|
constexpr double kExpAvgSqRel = 2e-5;  // the same for AdamW's second moment (g squared: twice g's)
constexpr double kWeightAbs = 1e-6;    // per parameter: max |w - ref| after the step (lr 1e-3)

struct FujiRun {
  std::string name, save_to;
  int ranks = 1, zero = 0;
  std::string offload = "none";
  double clip = 0;
  double loss = NAN, grad_norm = NAN, lr = NAN;  // as rank 0 reported them
};

class TrainerReferenceTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = std::string(FUJI_BINARY_DIR) + "/trainer_reference_test_" + std::to_string(::getpid());
    ASSERT_EQ(std::system(("rm -rf " + dir_ + " && mkdir -p " + dir_).c_str()), 0);
    // 2 layers of width 64 (4 heads), erf GELU as Cerebras-GPT's config.json says; the GPT-2
    // vocabulary, which the data's tokenizer needs.
    Run("/usr/bin/python3 " + kScript + " init " + dir_ +
        "/model --seed 7 --layers 2 --heads 4 --width 64"
        " --positions 32 --activation gelu");
    // Text of 260 common words, about one GPT-2 token each: some 16 blocks of 16 tokens, of which
    // the held-out split below leaves exactly the global batch for training.
    static const char* kWords[] = {
        " the",   " of",     " and",   " to",    " in",    " is",     " was",   " for",   " on",
        " are",   " with",   " as",    " his",   " they",  " be",     " at",    " one",   " have",
        " this",  " from",   " by",    " hot",   " word",  " but",    " what",  " some",  " we",
        " can",   " out",    " other", " were",  " all",   " there",  " when",  " up",    " use",
        " your",  " how",    " said",  " an",    " each",  " she",    " which", " do",    " their",
        " time",  " if",     " will",  " way",   " about", " many",   " then",  " them",  " write",
        " would", " like",   " so",    " these", " her",   " long",   " make",  " thing", " see",
        " him",   " two",    " has",   " look",  " more",  " day",    " could", " go",    " come",
        " did",   " number", " sound", " no",    " most",  " people", " my",    " over",  " know",
        " water", " than",   " call"};
    std::string text = "Mountain";
    uint64_t state = 12345;
    for (int i = 1; i < 260; ++i) {
      state = state * 6364136223846793005ULL + 1442695040888963407ULL;
      text += kWords[(state >> 33) % (sizeof kWords / sizeof kWords[0])];
    }
    std::ofstream(dir_ + "/corpus.txt") << text;

    // Tokenize once, then hold out every block but the global batch: the one step then trains on
    // all the training blocks, whatever order the sampler gives them, so the reference needs
    // nothing from fuji's sampler. (Every micro-batch holds the same number of targets, so the
    // order changes no mean.)
    auto prepared = launch::PrepareFinetune(BaseSpec(1, 0, 0, ""), launch::PrepareOptions());
    ASSERT_TRUE(prepared.ok()) << prepared.status().ToString();
    const int64_t num_blocks = static_cast<int64_t>((prepared->num_tokens - 1) / kSeqLen);
    ASSERT_GT(num_blocks, kGlobal) << prepared->num_tokens << " tokens";
    ASSERT_LE(num_blocks, 2 * kGlobal) << prepared->num_tokens << " tokens";  // holdout <= 0.5
    holdout_ = static_cast<double>(num_blocks - kGlobal) / static_cast<double>(num_blocks);
    auto cache = data::TokenCache::Load(prepared->spec.token_cache);
    ASSERT_TRUE(cache.ok()) << cache.status().ToString();
    tokens_.resize(static_cast<size_t>(kGlobal * kSeqLen + 1));
    cache->CopyTokens(0, tokens_.size(), tokens_.data());
  }
  static void TearDownTestSuite() { std::system(("rm -rf " + dir_).c_str()); }

  static double Seconds(std::chrono::steady_clock::time_point start) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  }

  static void Run(const std::string& command) {
    ASSERT_EQ(std::system(command.c_str()), 0) << command;
  }

  static FinetuneSpec BaseSpec(int ranks, int zero, double clip, const std::string& save_to,
                               const std::string& offload = "none") {
    FinetuneSpec s;
    s.model = dir_ + "/model";
    s.data = dir_ + "/corpus.txt";
    s.cache_dir = dir_ + "/cache";
    s.ranks = ranks;
    s.zero = zero;
    s.offload = offload;
    s.precision = "fp32";
    s.seq_len = kSeqLen;
    s.micro_batch = kGlobal / kAccum / ranks;
    s.grad_accum = kAccum;
    s.steps = 1;
    s.lr = kLr;
    s.warmup_steps = kWarmup;
    s.weight_decay = kWeightDecay;
    s.clip = clip;
    s.beta1 = kBeta1;
    s.beta2 = kBeta2;
    s.eps = kEps;
    s.holdout = holdout_;
    s.eval_batches = 1;
    s.save_to = save_to;
    s.threads = 1;
    s.seed = 3;
    return s;
  }

  // One step on a gang of fuji-rank processes, as `fuji run finetune` runs it; fills the loss,
  // gradient norm and learning rate rank 0 reported.
  static void Train(FujiRun* run) {
    const auto start = std::chrono::steady_clock::now();
    run->save_to = dir_ + "/runs/" + std::to_string(run->ranks) + "-" + std::to_string(run->zero) +
                   "-" + run->offload + (run->clip > 0 ? "-clipped" : "-unclipped");
    auto prepared = launch::PrepareFinetune(
        BaseSpec(run->ranks, run->zero, run->clip, run->save_to, run->offload),
        launch::PrepareOptions());
    ASSERT_TRUE(prepared.ok()) << prepared.status().ToString();
    launch::Gang gang(prepared->spec, launch::GangOptions());
    std::string logs;
    auto result = gang.Run([&](const launch::GangOutput& o) {
      if (o.output.kind == launch::ChildOutput::Kind::kLog) {
        logs += "rank " + std::to_string(o.rank) + ": " + o.output.line + "\n";
        return;
      }
      const nlohmann::json& e = o.output.event;
      if (e.value("event", "") == "loss" && e.value("split", "") == "train") {
        run->loss = e.at("loss").get<double>();
        run->grad_norm = e.at("grad_norm").get<double>();
        run->lr = e.at("lr").get<double>();
      }
    });
    ASSERT_TRUE(result.ok()) << run->name << ": " << result.status().ToString() << "\n" << logs;
    ASSERT_FALSE(std::isnan(run->loss)) << run->name << ": no train loss event";
    std::printf("%s: %.1f s\n", run->name.c_str(), Seconds(start));
  }

  // The PyTorch reference of every run at once (one torch start-up): what it measured, per run.
  static nlohmann::json Compare(const std::vector<FujiRun>& runs) {
    nlohmann::json request = {{"model", dir_ + "/model"},
                              {"tokens", tokens_},
                              {"seq_len", kSeqLen},
                              {"lr", kLr},
                              {"warmup_steps", kWarmup},
                              {"weight_decay", kWeightDecay},
                              {"beta1", kBeta1},
                              {"beta2", kBeta2},
                              {"eps", kEps}};
    std::vector<int64_t> blocks;
    for (int64_t b = 0; b < kGlobal; ++b) blocks.push_back(b);
    request["blocks"] = blocks;
    for (const FujiRun& r : runs) {
      request["runs"].push_back({{"name", r.name},
                                 {"save_to", r.save_to},
                                 {"clip", r.clip},
                                 {"loss", r.loss},
                                 {"grad_norm", r.grad_norm},
                                 {"lr", r.lr}});
    }
    const std::string in = dir_ + "/request.json", out = dir_ + "/compare.json";
    std::ofstream(in) << request.dump();
    std::remove(out.c_str());
    const std::string command = "/usr/bin/python3 " + kScript + " compare " + in + " " + out;
    const auto start = std::chrono::steady_clock::now();
    EXPECT_EQ(std::system(command.c_str()), 0) << command;
    std::printf("the reference and the comparisons: %.1f s\n", Seconds(start));
    std::ifstream f(out);
    if (!f) return nlohmann::json::object();
    return nlohmann::json::parse(f);
  }

  static void ExpectMatches(const nlohmann::json& run) {
    const std::string what = run.at("name").get<std::string>();
    const double loss = run["loss"]["fuji"], ref_loss = run["loss"]["torch"];
    EXPECT_LE(run["loss"]["rel"].get<double>(), kLossRel)
        << what << ": loss " << loss << " vs torch " << ref_loss;
    // The schedule's rate at step 1 of the warmup, exactly.
    EXPECT_EQ(run["lr"]["fuji"].get<double>(), run["lr"]["torch"].get<double>()) << what << ": lr";
    EXPECT_LE(run["grad_norm"]["rel"].get<double>(), kGradNormRel)
        << what << ": gradient norm " << run["grad_norm"]["fuji"].get<double>() << " vs torch "
        << run["grad_norm"]["torch"].get<double>();
    // One failure per run and quantity, naming every parameter over the tolerance.
    struct Check {
      const char* metric;
      double tolerance;
      const char* what;
    };
    for (const Check& c :
         {Check{"grad", kGradRel, "gradient (max abs error / max abs)"},
          Check{"exp_avg_sq", kExpAvgSqRel, "exp_avg_sq (max abs error / max abs)"},
          Check{"weight", kWeightAbs, "weight after the step (max abs error)"}}) {
      std::ostringstream over;
      int count = 0;
      for (const auto& [name, p] : run["params"].items()) {
        const double value = p[c.metric].get<double>();
        if (value <= c.tolerance) continue;
        ++count;
        over << "\n  " << name << ": " << value;
        if (std::string(c.metric) == "weight") {
          over << " (the step moved it by up to " << p["update"].get<double>() << ")";
        }
      }
      EXPECT_EQ(count, 0) << what << ": " << c.what << " above " << c.tolerance << " for " << count
                          << " parameters:" << over.str();
    }
    std::printf(
        "%s: loss %.9g vs %.9g (rel %.1e)  grad norm rel %.1e  grad rel %.1e (%s)  "
        "exp_avg_sq rel %.1e  weight abs %.1e (%s)\n",
        what.c_str(), loss, ref_loss, run["loss"]["rel"].get<double>(),
        run["grad_norm"]["rel"].get<double>(), run["max_grad"]["value"].get<double>(),
        run["max_grad"]["param"].get<std::string>().c_str(),
        run["max_exp_avg_sq"]["value"].get<double>(), run["max_weight"]["value"].get<double>(),
        run["max_weight"]["param"].get<std::string>().c_str());
  }

  static std::string dir_;
  static double holdout_;
  static std::vector<int64_t> tokens_;
};

std::string TrainerReferenceTest::dir_;
double TrainerReferenceTest::holdout_ = 0;
std::vector<int64_t> TrainerReferenceTest::tokens_;

// One rank without clipping (the gradients themselves) and with the clip at half the gradient
// norm, and every ZeRO stage on two ranks. Clipping to a fixed norm cancels a gradient scaled by
// a constant factor (a doubled reduction, say): the gradient norm fuji reports, taken before
// clipping, is what catches that in a clipped run, and the unclipped ones see it directly.
TEST_F(TrainerReferenceTest, LossGradientsAndOneAdamWStepMatchPyTorch) {
  auto make = [](int ranks, int zero, double clip) {
    FujiRun r;
    r.name = std::to_string(ranks) + (ranks == 1 ? " rank" : " ranks") + ", zero " +
             std::to_string(zero) + (clip > 0 ? ", clipped" : ", unclipped");
    r.ranks = ranks;
    r.zero = zero;
    r.clip = clip;
    return r;
  };
  std::vector<FujiRun> runs = {make(1, 0, 0)};
  Train(&runs[0]);
  if (HasFatalFailure()) return;
  char clip_text[32];
  std::snprintf(clip_text, sizeof clip_text, "%.4g", kClipFraction * runs[0].grad_norm);
  const double clip = std::stod(clip_text);
  runs.push_back(make(1, 0, clip));
  // Each stage once, clipped or not in turn (the clipping itself is the same code at every stage).
  for (int zero = 0; zero <= 3; ++zero) runs.push_back(make(2, zero, zero % 3 == 0 ? clip : 0));
  // Offload params: the parameters are no longer the master weights, which live apart (and the
  // gradient shards on the host), so the updated weights must be copied back.
  runs.push_back(make(2, 3, 0));
  runs.back().offload = "params";
  runs.back().name += ", offload params";
  for (size_t i = 1; i < runs.size(); ++i) {
    Train(&runs[i]);
    if (HasFatalFailure()) return;
  }
  const nlohmann::json measured = Compare(runs);
  ASSERT_TRUE(measured.contains("runs")) << "no comparison";
  ASSERT_EQ(measured["runs"].size(), runs.size());
  for (const auto& run : measured["runs"]) ExpectMatches(run);
}

}  // namespace
}  // namespace fuji
