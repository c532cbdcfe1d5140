// fuji::optim's CPU AdamW against a double-precision reference written from torch.optim.AdamW's
// documented algorithm; bf16/fp16 conversions, thread-count independence, sum of squares.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <tuple>
#include <vector>

#include <gtest/gtest.h>

#include "lib/common/half.h"
#include "worker/optim/adamw.h"

namespace fuji::optim {
namespace {

struct State {
  std::vector<float> p, m, v;
};

State RandomState(int64_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  State s;
  s.p.resize(n);
  s.m.assign(n, 0.0f);
  s.v.assign(n, 0.0f);
  for (auto& x : s.p) x = normal(rng) * 0.02f;
  return s;
}

std::vector<float> RandomGrads(int64_t n, uint32_t seed, float scale = 1e-2f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> g(n);
  for (auto& x : g) x = normal(rng) * scale;
  return g;
}

// torch.optim.AdamW (amsgrad off, maximize off), in double.
struct Reference {
  std::vector<double> p, m, v;
  explicit Reference(const State& s)
      : p(s.p.begin(), s.p.end()), m(s.m.begin(), s.m.end()), v(s.v.begin(), s.v.end()) {}
  void Step(const AdamWConfig& c, int64_t step, const std::vector<double>& grad,
            bool decay = true) {
    const double bc1 = 1 - std::pow(c.beta1, static_cast<double>(step));
    const double bc2 = 1 - std::pow(c.beta2, static_cast<double>(step));
    for (size_t i = 0; i < p.size(); ++i) {
      const double g = grad[i];
      if (decay) p[i] *= 1 - c.lr * c.weight_decay;
      m[i] = c.beta1 * m[i] + (1 - c.beta1) * g;
      v[i] = c.beta2 * v[i] + (1 - c.beta2) * g * g;
      const double denom = std::sqrt(v[i]) / std::sqrt(bc2) + c.eps;
      p[i] -= c.lr / bc1 * m[i] / denom;
    }
  }
};

// Largest |a - b| / max(|b|, mean |b|): relative error, measured against the typical magnitude
// for elements near zero (where the moments cancel and relative error means nothing).
double MaxRelativeError(const std::vector<float>& a, const std::vector<double>& b) {
  double mean = 0;
  for (double x : b) mean += std::fabs(x);
  mean /= static_cast<double>(b.size());
  double worst = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    const double denom = std::max(std::fabs(b[i]), mean);
    worst = std::max(worst, std::fabs(static_cast<double>(a[i]) - b[i]) / denom);
  }
  return worst;
}

void ExpectClose(const State& s, const Reference& r, double tol = 1e-6) {
  EXPECT_LE(MaxRelativeError(s.p, r.p), tol) << "master";
  EXPECT_LE(MaxRelativeError(s.m, r.m), tol) << "exp_avg";
  EXPECT_LE(MaxRelativeError(s.v, r.v), tol) << "exp_avg_sq";
}

void ExpectBitwiseEqual(const std::vector<float>& a, const std::vector<float>& b) {
  ASSERT_EQ(a.size(), b.size());
  EXPECT_EQ(std::memcmp(a.data(), b.data(), a.size() * sizeof(float)), 0);
}

AdamWConfig Config(double wd) {
  AdamWConfig c;
  c.lr = 1e-3;
  c.weight_decay = wd;
  return c;
}

// An independent bf16 round to nearest even: pick the nearer of the two neighbours in double.
uint16_t ReferenceBf16(float f) {
  if (std::isnan(f)) return 0x7FC0;
  uint32_t u;
  std::memcpy(&u, &f, 4);
  const uint32_t lo_bits = u & 0xFFFF0000u;
  float lo, hi;
  std::memcpy(&lo, &lo_bits, 4);
  const uint32_t hi_bits = lo_bits + 0x10000u;
  std::memcpy(&hi, &hi_bits, 4);
  const double dlo = std::fabs(static_cast<double>(f) - lo);
  // The upper neighbour of the largest finite bf16 is infinity: measure it as 2^128.
  const double dhi = std::isinf(hi) ? std::fabs(std::ldexp(std::copysign(1.0, f), 128) - f)
                                    : std::fabs(static_cast<double>(hi) - f);
  if (dlo < dhi) return static_cast<uint16_t>(lo_bits >> 16);
  if (dhi < dlo) return static_cast<uint16_t>(hi_bits >> 16);
  return static_cast<uint16_t>(((lo_bits >> 16) & 1) ? hi_bits >> 16 : lo_bits >> 16);
}

class AdamWSizes : public ::testing::TestWithParam<std::tuple<int64_t, double>> {};

TEST_P(AdamWSizes, TenStepsMatchTheDoubleReference) {
  const auto [n, wd] = GetParam();
  const AdamWConfig config = Config(wd);
  State s = RandomState(n, 1);
  Reference ref(s);
  for (int64_t step = 1; step <= 10; ++step) {
    const std::vector<float> g = RandomGrads(n, 100 + static_cast<uint32_t>(step));
    ASSERT_TRUE(
        AdamWStep(config, step, 1.0f, s.p.data(), s.m.data(), s.v.data(), g.data(), n, nullptr)
            .ok());
    ref.Step(config, step, std::vector<double>(g.begin(), g.end()));
  }
  ExpectClose(s, ref);
}

INSTANTIATE_TEST_SUITE_P(Optim, AdamWSizes,
                         ::testing::Combine(::testing::Values<int64_t>(1001, 1000003),
                                            ::testing::Values(0.0, 0.1)));

TEST(AdamWTest, WeightDecayChangesOnlyDecayedShards) {
  const int64_t n = 1001;
  State a = RandomState(n, 2), b = a, c = a;
  const std::vector<float> g = RandomGrads(n, 3);
  ASSERT_TRUE(
      AdamWStep(Config(0.1), 1, 1.0f, a.p.data(), a.m.data(), a.v.data(), g.data(), n, nullptr)
          .ok());
  ASSERT_TRUE(
      AdamWStep(Config(0.0), 1, 1.0f, b.p.data(), b.m.data(), b.v.data(), g.data(), n, nullptr)
          .ok());
  AdamWShard shard{c.p.data(), c.m.data(), c.v.data(), g.data()};
  shard.n = n;
  shard.decay = false;
  ASSERT_TRUE(AdamWStep(Config(0.1), 1, 1.0f, shard).ok());
  ExpectBitwiseEqual(c.p, b.p);
  EXPECT_NE(std::memcmp(a.p.data(), b.p.data(), n * sizeof(float)), 0);
  ExpectBitwiseEqual(a.m, b.m);
}

TEST(AdamWTest, GradScaleIsFoldedIntoTheStep) {
  const int64_t n = 4099;
  const AdamWConfig config = Config(0.1);
  // A power of two: scaling is exact, so the step must be bitwise the unscaled one.
  State a = RandomState(n, 4), b = a;
  State c = a;
  Reference ref(c);
  for (int64_t step = 1; step <= 10; ++step) {
    const std::vector<float> g = RandomGrads(n, 200 + static_cast<uint32_t>(step));
    std::vector<float> scaled(g), odd(g);
    for (auto& x : scaled) x *= 1024.0f;
    for (auto& x : odd) x *= 3.7f;
    ASSERT_TRUE(
        AdamWStep(config, step, 1.0f, a.p.data(), a.m.data(), a.v.data(), g.data(), n, nullptr)
            .ok());
    ASSERT_TRUE(AdamWStep(config, step, 1024.0f, b.p.data(), b.m.data(), b.v.data(), scaled.data(),
                          n, nullptr)
                    .ok());
    ASSERT_TRUE(
        AdamWStep(config, step, 3.7f, c.p.data(), c.m.data(), c.v.data(), odd.data(), n, nullptr)
            .ok());
    std::vector<double> unscaled(n);
    for (int64_t i = 0; i < n; ++i) unscaled[i] = static_cast<double>(odd[i]) / 3.7f;
    ref.Step(config, step, unscaled);
  }
  ExpectBitwiseEqual(a.p, b.p);
  ExpectBitwiseEqual(a.m, b.m);
  ExpectBitwiseEqual(a.v, b.v);
  ExpectClose(c, ref);
}

TEST(AdamWTest, Bf16OutputIsTheRoundedMaster) {
  const int64_t n = 100003;
  State s = RandomState(n, 5);
  std::vector<uint16_t> out(n);
  for (int64_t step = 1; step <= 3; ++step) {
    const std::vector<float> g = RandomGrads(n, 300 + static_cast<uint32_t>(step));
    ASSERT_TRUE(AdamWStep(Config(0.1), step, 1.0f, s.p.data(), s.m.data(), s.v.data(), g.data(), n,
                          out.data())
                    .ok());
  }
  int64_t mismatches = 0;
  for (int64_t i = 0; i < n; ++i) mismatches += out[i] != ReferenceBf16(s.p[i]);
  EXPECT_EQ(mismatches, 0);
}

TEST(AdamWTest, Bf16RoundingMatchesReferenceOnEdgeCases) {
  std::vector<float> values = {0.0f,
                               -0.0f,
                               1.0f,
                               -1.0f,
                               3.14159265f,
                               65504.0f,
                               1e-40f,
                               -1e-40f,
                               std::numeric_limits<float>::max(),
                               -std::numeric_limits<float>::max(),
                               std::numeric_limits<float>::infinity(),
                               -std::numeric_limits<float>::infinity()};
  // Ties: 1 + 2^-8 rounds down to 1 (even), 1 + 3 * 2^-8 up to 1 + 2^-6.
  values.push_back(1.0f + std::ldexp(1.0f, -8));
  values.push_back(1.0f + 3 * std::ldexp(1.0f, -8));
  std::mt19937 rng(6);
  for (int i = 0; i < 100000; ++i) {
    const uint32_t bits = rng();
    float f;
    std::memcpy(&f, &bits, 4);
    if (!std::isnan(f)) values.push_back(f);
  }
  for (float f : values) {
    ASSERT_EQ(FloatToBf16(f), ReferenceBf16(f)) << f;
  }
  EXPECT_TRUE(std::isnan(Bf16ToFloat(FloatToBf16(std::nanf("")))));
  EXPECT_EQ(Bf16ToFloat(0x3F80), 1.0f);
}

#if defined(__FLT16_MAX__)
TEST(AdamWTest, F16ConversionsMatchTheCompiler) {
  for (uint32_t h = 0; h < 65536; ++h) {
    _Float16 x;
    const uint16_t h16 = static_cast<uint16_t>(h);
    std::memcpy(&x, &h16, 2);
    const float expected = static_cast<float>(x);
    const float got = F16ToFloat(h16);
    if (std::isnan(expected)) {
      ASSERT_TRUE(std::isnan(got)) << h;
    } else {
      ASSERT_EQ(std::memcmp(&expected, &got, 4), 0) << h;
    }
  }
  std::mt19937 rng(7);
  for (int i = 0; i < 1000000; ++i) {
    uint32_t bits = rng();
    // Half the draws from the range where halves live, so subnormals and ties are exercised.
    if (i % 2) bits = (bits & 0x80FFFFFFu) | ((100u + (bits >> 24) % 45u) << 23);
    float f;
    std::memcpy(&f, &bits, 4);
    if (std::isnan(f)) continue;
    const _Float16 x = static_cast<_Float16>(f);
    uint16_t expected;
    std::memcpy(&expected, &x, 2);
    ASSERT_EQ(FloatToF16(f), expected) << f;
  }
}
#endif

TEST(AdamWTest, Bf16AndF16GradsMatchTheReference) {
  const int64_t n = 20011;
  for (Precision precision : {Precision::kBF16, Precision::kF16}) {
    const AdamWConfig config = Config(0.1);
    State s = RandomState(n, 8);
    Reference ref(s);
    std::vector<uint16_t> out(n);
    for (int64_t step = 1; step <= 10; ++step) {
      const std::vector<float> g = RandomGrads(n, 400 + static_cast<uint32_t>(step));
      std::vector<uint16_t> half(n);
      std::vector<double> exact(n);
      for (int64_t i = 0; i < n; ++i) {
        half[i] = precision == Precision::kBF16 ? FloatToBf16(g[i]) : FloatToF16(g[i] * 256.0f);
        exact[i] =
            precision == Precision::kBF16 ? Bf16ToFloat(half[i]) : F16ToFloat(half[i]) / 256.0;
      }
      AdamWShard shard{s.p.data(), s.m.data(), s.v.data(), half.data(),
                       precision,  out.data(), precision,  n};
      ASSERT_TRUE(
          AdamWStep(config, step, precision == Precision::kF16 ? 256.0f : 1.0f, shard).ok());
      ref.Step(config, step, exact);
    }
    ExpectClose(s, ref);
    for (int64_t i = 0; i < n; ++i) {
      const uint16_t expected =
          precision == Precision::kBF16 ? FloatToBf16(s.p[i]) : FloatToF16(s.p[i]);
      ASSERT_EQ(out[i], expected) << i;
    }
  }
}

TEST(AdamWTest, ThreadCountDoesNotChangeABit) {
  // Several shards of mixed sizes, decay and gradient types, stepped as one call.
  const std::vector<int64_t> sizes = {1001, 1, 0, 63, 250007, 17, 4096};
  int64_t total = 0;
  for (int64_t s : sizes) total += s;
  const State start = RandomState(total, 9);
  const std::vector<float> g = RandomGrads(total, 10);
  std::vector<uint16_t> gb(total);
  for (int64_t i = 0; i < total; ++i) gb[i] = FloatToBf16(g[i]);

  auto run = [&](int threads, State& s, std::vector<uint16_t>& out) {
    std::vector<AdamWShard> shards;
    int64_t off = 0;
    for (size_t k = 0; k < sizes.size(); ++k) {
      AdamWShard shard;
      shard.master = s.p.data() + off;
      shard.exp_avg = s.m.data() + off;
      shard.exp_avg_sq = s.v.data() + off;
      shard.grad_precision = k % 2 ? Precision::kBF16 : Precision::kF32;
      shard.grad = k % 2 ? static_cast<const void*>(gb.data() + off) : g.data() + off;
      shard.param_out = out.data() + off;
      shard.n = sizes[k];
      shard.decay = k % 3 != 1;
      shards.push_back(shard);
      off += sizes[k];
    }
    for (int64_t step = 1; step <= 3; ++step) {
      if (threads == 0) {
        for (const auto& shard : shards)
          ASSERT_TRUE(AdamWStep(Config(0.1), step, 2.0f, shard).ok());
      } else {
        CpuAdamW optimizer(threads);
        ASSERT_EQ(optimizer.threads(), threads);
        ASSERT_TRUE(optimizer.Step(Config(0.1), step, 2.0f, shards).ok());
      }
    }
  };
  State serial = start;
  std::vector<uint16_t> serial_out(total);
  run(0, serial, serial_out);
  for (int threads : {1, 2, 3, 7}) {
    State s = start;
    std::vector<uint16_t> out(total);
    run(threads, s, out);
    ExpectBitwiseEqual(s.p, serial.p);
    ExpectBitwiseEqual(s.m, serial.m);
    ExpectBitwiseEqual(s.v, serial.v);
    EXPECT_EQ(out, serial_out) << threads << " threads";
  }
}

TEST(AdamWTest, RejectsBadArguments) {
  std::vector<float> p(4), m(4), v(4), g(4);
  EXPECT_EQ(
      AdamWStep(Config(0.1), 0, 1.0f, p.data(), m.data(), v.data(), g.data(), 4, nullptr).code(),
      StatusCode::kInvalidArgument);
  EXPECT_EQ(
      AdamWStep(Config(0.1), 1, 0.0f, p.data(), m.data(), v.data(), g.data(), 4, nullptr).code(),
      StatusCode::kInvalidArgument);
  EXPECT_EQ(
      AdamWStep(Config(0.1), 1, 1.0f, p.data(), m.data(), nullptr, g.data(), 4, nullptr).code(),
      StatusCode::kInvalidArgument);
  AdamWConfig bad = Config(0.1);
  bad.beta2 = 1.0;
  EXPECT_EQ(bad.Validate().code(), StatusCode::kInvalidArgument);
  CpuAdamW optimizer(2);
  EXPECT_TRUE(optimizer.Step(Config(0.1), 1, 1.0f, std::vector<AdamWShard>{}).ok());
}

TEST(SumOfSquaresTest, MatchesDoubleReferenceForAnyThreadCount) {
  for (int64_t n : {int64_t{0}, int64_t{1001}, int64_t{3000017}}) {
    const std::vector<float> g = RandomGrads(n, 11, 3.0f);
    double expected = 0;
    for (float x : g) expected += static_cast<double>(x) * x;
    const double serial = SumOfSquares(g.data(), n);
    EXPECT_NEAR(serial, expected, 1e-12 * std::max(1.0, expected));
    for (int threads : {1, 2, 3}) {
      CpuAdamW optimizer(threads);
      const double got = optimizer.SumOfSquares(g.data(), n);
      EXPECT_EQ(std::memcmp(&got, &serial, sizeof got), 0) << threads << " threads, n " << n;
    }
    std::vector<uint16_t> gb(n);
    double expected_bf16 = 0;
    for (int64_t i = 0; i < n; ++i) {
      gb[i] = FloatToBf16(g[i]);
      expected_bf16 += static_cast<double>(Bf16ToFloat(gb[i])) * Bf16ToFloat(gb[i]);
    }
    CpuAdamW optimizer(3);
    EXPECT_NEAR(optimizer.SumOfSquares(gb.data(), n, Precision::kBF16), expected_bf16,
                1e-12 * std::max(1.0, expected_bf16));
    EXPECT_EQ(SumOfSquares(gb.data(), n, Precision::kBF16),
              optimizer.SumOfSquares(gb.data(), n, Precision::kBF16));
  }
}

TEST(SumOfSquaresTest, OverflowShowsAsNonFinite) {
  std::vector<float> g(100000, 1.0f);
  g[77777] = std::numeric_limits<float>::infinity();
  CpuAdamW optimizer(2);
  EXPECT_FALSE(std::isfinite(optimizer.SumOfSquares(g.data(), 100000)));
  g[77777] = std::nanf("");
  EXPECT_FALSE(std::isfinite(optimizer.SumOfSquares(g.data(), 100000)));
}

}  // namespace
}  // namespace fuji::optim
