// Token sampling (worker/engine/generate.h) against the exact distribution: temperature, top-k and
// top-p computed independently here, frequencies of 20,000 seeded draws checked with Pearson's
// chi-square test, and the seed's determinism through TokenSampler and Generate.
#include <algorithm>
#include <cmath>
#include <iostream>
#include <numeric>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "worker/engine/generate.h"
#include "worker/engine/random_init.h"

namespace fuji::engine {
namespace {

// Twelve tokens, not in sorted order, so that a sampler mixing up sorted ranks and token ids
// draws the wrong tokens.
const std::vector<float> kLogits = {0.3f, 2.0f, -1.0f, 0.9f, 1.5f, -3.0f, 0.1f, 1.2f, -0.5f, 0.7f, -1.5f, -0.2f};
constexpr int kDraws = 20000;

// Regularized upper incomplete gamma Q(a, x) = Γ(a, x) / Γ(a): the power series of P(a, x) below
// x = a + 1, Legendre's continued fraction for Γ(a, x) (evaluated by the modified Lentz method)
// above, where each converges fast.
double GammaQ(double a, double x) {
  if (x <= 0) return 1.0;
  const double log_prefix = -x + a * std::log(x) - std::lgamma(a);
  if (x < a + 1) {
    double term = 1.0 / a, sum = term;
    for (int n = 1; n < 1000 && std::fabs(term) > std::fabs(sum) * 1e-16; ++n) {
      term *= x / (a + n);
      sum += term;
    }
    return 1.0 - sum * std::exp(log_prefix);
  }
  constexpr double kTiny = 1e-300;
  double b = x + 1 - a, c = 1 / kTiny, d = 1 / b, h = d;
  for (int i = 1; i < 1000; ++i) {
    const double an = -i * (i - a);
    b += 2;
    d = an * d + b;
    if (std::fabs(d) < kTiny) d = kTiny;
    c = b + an / c;
    if (std::fabs(c) < kTiny) c = kTiny;
    d = 1 / d;
    const double delta = d * c;
    h *= delta;
    if (std::fabs(delta - 1) < 1e-16) break;
  }
  return std::exp(log_prefix) * h;
}

// P(X >= x) for X chi-square with `df` degrees of freedom.
double ChiSquareSurvival(double x, int df) { return GammaQ(df / 2.0, x / 2.0); }

struct Setting {
  const char* name;
  double temperature;
  int64_t top_k;
  double top_p;
};

// The distribution a sampler with these settings must draw from, computed in double:
// softmax(logits / T); the top_k most probable tokens kept and renormalized; then the nucleus:
// the smallest prefix of the tokens sorted by decreasing probability whose cumulative
// probability reaches top_p (the token that crosses top_p is kept), renormalized. That is HF's
// TopPLogitsWarper's set too: it drops the tokens whose ascending cumulative sum is <= 1 - top_p,
// i.e. exactly those whose more probable predecessors already sum to >= top_p.
std::vector<double> ExactDistribution(const Setting& s) {
  const size_t n = kLogits.size();
  std::vector<double> p(n);
  double max_scaled = -INFINITY;
  for (size_t i = 0; i < n; ++i) max_scaled = std::max(max_scaled, kLogits[i] / s.temperature);
  for (size_t i = 0; i < n; ++i) p[i] = std::exp(kLogits[i] / s.temperature - max_scaled);
  std::vector<size_t> order(n);
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) { return p[a] > p[b]; });
  size_t kept = s.top_k > 0 ? std::min(n, static_cast<size_t>(s.top_k)) : n;
  double total = 0;
  for (size_t r = 0; r < kept; ++r) total += p[order[r]];
  double cumulative = 0;
  for (size_t r = 0; r < kept && s.top_p < 1; ++r) {
    const double before = cumulative;
    cumulative += p[order[r]] / total;
    if (cumulative >= s.top_p) {
      // A boundary within rounding of top_p would make the kept set a matter of float error.
      EXPECT_GT(std::fabs(cumulative - s.top_p), 1e-6) << s.name;
      EXPECT_GT(std::fabs(before - s.top_p), 1e-6) << s.name;
      kept = r + 1;
      break;
    }
  }
  std::vector<double> out(n, 0.0);
  double mass = 0;
  for (size_t r = 0; r < kept; ++r) mass += p[order[r]];
  for (size_t r = 0; r < kept; ++r) out[order[r]] = p[order[r]] / mass;
  return out;
}

// Pearson's statistic over the tokens with non-zero probability; tokens expected fewer than five
// times are pooled into one cell, as the chi-square approximation needs. Returns the p-value.
double ChiSquarePValue(const std::vector<int>& counts, const std::vector<double>& probs, int draws,
                       double* statistic, int* df) {
  double x = 0, pooled_expected = 0;
  int pooled_observed = 0, cells = 0;
  for (size_t i = 0; i < probs.size(); ++i) {
    if (probs[i] == 0) continue;
    const double expected = probs[i] * draws;
    if (expected < 5) {
      pooled_expected += expected;
      pooled_observed += counts[i];
      continue;
    }
    x += (counts[i] - expected) * (counts[i] - expected) / expected;
    ++cells;
  }
  if (pooled_expected > 0) {
    x += (pooled_observed - pooled_expected) * (pooled_observed - pooled_expected) / pooled_expected;
    ++cells;
  }
  *statistic = x;
  *df = cells - 1;
  return ChiSquareSurvival(x, cells - 1);
}

TEST(SamplingTest, ChiSquareSurvivalMatchesTables) {
  // Upper 0.1% critical values of the chi-square distribution (NIST/SEMATECH e-Handbook of
  // Statistical Methods, section 1.3.6.7.4) and the closed form exp(-x/2) for two degrees.
  EXPECT_NEAR(ChiSquareSurvival(10.828, 1), 0.001, 2e-6);
  EXPECT_NEAR(ChiSquareSurvival(18.467, 4), 0.001, 2e-6);
  EXPECT_NEAR(ChiSquareSurvival(29.588, 10), 0.001, 2e-6);
  EXPECT_NEAR(ChiSquareSurvival(31.264, 11), 0.001, 2e-6);
  for (double x : {0.1, 1.0, 3.0, 10.0, 40.0}) EXPECT_NEAR(ChiSquareSurvival(x, 2), std::exp(-x / 2), 1e-14);
  EXPECT_NEAR(ChiSquareSurvival(4.0, 4), 3 * std::exp(-2.0), 1e-14);  // (1 + x/2) e^{-x/2}
}

TEST(SamplingTest, FrequenciesMatchTheExactDistribution) {
  const Setting settings[] = {
      {"temperature 0.7", 0.7, 0, 1.0},
      {"top-k 4", 1.0, 4, 1.0},
      {"top-p 0.8", 1.0, 0, 0.8},
      {"temperature 1.3, top-k 8, top-p 0.9", 1.3, 8, 0.9},
  };
  uint64_t seed = 20240601;
  for (const Setting& s : settings) {
    const std::vector<double> probs = ExactDistribution(s);
    TokenSampler sampler({false, s.temperature, s.top_k, s.top_p, seed++});
    std::vector<int> counts(kLogits.size(), 0);
    for (int i = 0; i < kDraws; ++i) {
      const int32_t token = sampler.Sample(kLogits.data(), static_cast<int64_t>(kLogits.size()));
      ASSERT_GE(token, 0);
      ASSERT_LT(token, static_cast<int32_t>(kLogits.size()));
      ++counts[static_cast<size_t>(token)];
    }
    std::string table;
    for (size_t i = 0; i < counts.size(); ++i) {
      table += " " + std::to_string(i) + ":" + std::to_string(counts[i]) + "/" +
               std::to_string(static_cast<int>(std::lround(probs[i] * kDraws)));
      // A token outside the kept set is a wrong set, whatever the statistics say.
      if (probs[i] == 0) {
        EXPECT_EQ(counts[i], 0) << s.name << ": token " << i << " is outside the kept set";
      }
    }
    double statistic = 0;
    int df = 0;
    const double p_value = ChiSquarePValue(counts, probs, kDraws, &statistic, &df);
    EXPECT_GT(p_value, 0.001) << s.name << ": chi-square " << statistic << " on " << df
                              << " degrees of freedom; token:observed/expected" << table;
    std::cout << s.name << ": chi-square " << statistic << ", df " << df << ", p " << p_value << "\n";
  }
}

TEST(SamplingTest, ASeedGivesTheSameIdsEveryTime) {
  const SamplingOptions options{false, 0.9, 6, 0.95, 77};
  TokenSampler a(options), b(options);
  SamplingOptions other_seed = options;
  other_seed.seed = 78;
  TokenSampler c(other_seed);
  std::vector<int32_t> draws_a, draws_b, draws_c;
  for (int i = 0; i < 1000; ++i) {
    draws_a.push_back(a.Sample(kLogits.data(), static_cast<int64_t>(kLogits.size())));
    draws_b.push_back(b.Sample(kLogits.data(), static_cast<int64_t>(kLogits.size())));
    draws_c.push_back(c.Sample(kLogits.data(), static_cast<int64_t>(kLogits.size())));
  }
  EXPECT_EQ(draws_a, draws_b);
  EXPECT_NE(draws_a, draws_c);

  // And through Generate: each call starts its own sampler from the seed.
  ModelConfig config = *ArchitectureConfig("tiny");
  config.vocab_size = 97;
  config.n_positions = 64;
  ASSERT_TRUE(config.Validate().ok());
  const std::vector<ParamInfo> layout = ParameterLayout(config);
  std::vector<at::Tensor> params;
  for (size_t i = 0; i < layout.size(); ++i) params.push_back(RandomParameter(layout[i], 5, i));
  Gpt2Model model(config, std::move(params));
  GenerateOptions generate;
  generate.max_new_tokens = 40;
  generate.ignore_eos = true;
  generate.sampling = {false, 1.0, 0, 1.0, 1234};
  auto first = Generate(model, {1, 2, 3}, generate, nullptr);
  auto second = Generate(model, {1, 2, 3}, generate, nullptr);
  ASSERT_TRUE(first.ok() && second.ok());
  EXPECT_EQ(*first, *second);
  generate.sampling.seed = 1235;
  EXPECT_NE(*Generate(model, {1, 2, 3}, generate, nullptr), *first);
}

}  // namespace
}  // namespace fuji::engine
