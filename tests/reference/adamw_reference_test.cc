// fuji::optim::CpuAdamW against torch.optim.AdamW itself: Debian's python3-torch runs
// tests/reference/adamw_reference.py on the same parameters and gradients (two param groups:
// decayed weights and undecayed biases/LayerNorms), 5 steps, betas 0.9/0.95, eps 1e-8, wd 0.1.
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "worker/optim/adamw.h"

namespace fuji::optim {
namespace {

double MaxRelativeError(const std::vector<float>& a, const std::vector<float>& b) {
  double mean = 0;
  for (float x : b) mean += std::fabs(x);
  mean /= static_cast<double>(b.size());
  double worst = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    const double denom = std::max<double>(std::fabs(b[i]), mean);
    worst = std::max(worst, std::fabs(static_cast<double>(a[i]) - b[i]) / denom);
  }
  return worst;
}

TEST(AdamWReferenceTest, MatchesTorchOptimAdamW) {
  const int64_t n = 100003, n_decay = 60001, steps = 5;
  const double lr = 1e-3;
  const std::string dir =
      std::string(FUJI_BINARY_DIR) + "/adamw_reference_test_" + std::to_string(::getpid());
  ASSERT_EQ(std::system(("rm -rf " + dir + " && mkdir -p " + dir).c_str()), 0);

  std::mt19937 rng(42);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> p(n), m(n, 0.0f), v(n, 0.0f);
  for (auto& x : p) x = 0.02f * normal(rng);
  std::vector<std::vector<float>> grads(steps, std::vector<float>(n));
  for (auto& g : grads) {
    for (auto& x : g) x = 0.01f * normal(rng);
  }
  {
    std::ofstream f(dir + "/in.bin", std::ios::binary);
    const int64_t header[3] = {n, n_decay, steps};
    f.write(reinterpret_cast<const char*>(header), sizeof header);
    f.write(reinterpret_cast<const char*>(p.data()), n * 4);
    for (const auto& g : grads) f.write(reinterpret_cast<const char*>(g.data()), n * 4);
    ASSERT_TRUE(f.good());
  }
  const std::string command = "/usr/bin/python3 " + std::string(FUJI_SOURCE_DIR) +
                              "/tests/reference/adamw_reference.py " + dir + "/in.bin " + dir +
                              "/out.bin " + std::to_string(lr);
  ASSERT_EQ(std::system(command.c_str()), 0) << command;

  AdamWConfig config;
  config.lr = lr;
  config.weight_decay = 0.1;
  CpuAdamW optimizer(3);
  std::vector<uint16_t> out(n);
  for (int64_t s = 0; s < steps; ++s) {
    AdamWShard decayed{p.data(), m.data(), v.data(), grads[s].data()};
    decayed.param_out = out.data();
    decayed.n = n_decay;
    AdamWShard plain{p.data() + n_decay, m.data() + n_decay, v.data() + n_decay,
                     grads[s].data() + n_decay};
    plain.param_out = out.data() + n_decay;
    plain.n = n - n_decay;
    plain.decay = false;
    ASSERT_TRUE(optimizer.Step(config, s + 1, 1.0f, {decayed, plain}).ok());
  }

  std::ifstream f(dir + "/out.bin", std::ios::binary);
  std::vector<float> ref_p(n), ref_m(n), ref_v(n);
  f.read(reinterpret_cast<char*>(ref_p.data()), n * 4);
  f.read(reinterpret_cast<char*>(ref_m.data()), n * 4);
  f.read(reinterpret_cast<char*>(ref_v.data()), n * 4);
  ASSERT_TRUE(f.good());
  EXPECT_LE(MaxRelativeError(p, ref_p), 1e-6);
  EXPECT_LE(MaxRelativeError(m, ref_m), 1e-6);
  EXPECT_LE(MaxRelativeError(v, ref_v), 1e-6);
  int64_t identical = 0;
  for (int64_t i = 0; i < n; ++i) identical += p[i] == ref_p[i];
  std::printf("parameters bitwise equal to torch: %lld of %lld\n",
              static_cast<long long>(identical), static_cast<long long>(n));
  std::system(("rm -rf " + dir).c_str());
}

}  // namespace
}  // namespace fuji::optim
