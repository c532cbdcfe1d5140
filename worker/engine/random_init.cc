// Counter-based normal random numbers (splitmix64 + Box-Muller), filled in parallel.
#include "worker/engine/random_init.h"

#include <algorithm>
#include <cmath>
#include <thread>
#include <vector>

#include <ATen/ATen.h>

#include "worker/engine/checkpoint.h"

namespace fuji::engine {
namespace {

uint64_t Mix(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

// Two independent uniforms in (0, 1] from one counter.
void Uniforms(uint64_t key, uint64_t counter, double* u1, double* u2) {
  const uint64_t a = Mix(key + 0x9E3779B97F4A7C15ull * (2 * counter + 1));
  const uint64_t b = Mix(key + 0x9E3779B97F4A7C15ull * (2 * counter + 2));
  *u1 = (static_cast<double>(a >> 11) + 1.0) * (1.0 / 9007199254740992.0);
  *u2 = (static_cast<double>(b >> 11) + 1.0) * (1.0 / 9007199254740992.0);
}

}  // namespace

at::Tensor RandomParameter(const ParamInfo& info, uint64_t seed, size_t index) {
  at::Tensor t = at::empty(info.shape, at::kFloat);
  if (info.is_layer_norm_weight) return t.fill_(1.0f);
  if (info.init_std == 0.0) return t.zero_();
  float* out = t.data_ptr<float>();
  const int64_t n = t.numel();
  const uint64_t key = Mix(seed * 0x100000001B3ull + index + 1);
  const double std = info.init_std;
  constexpr double kTwoPi = 6.283185307179586;
  // Each pair (2j, 2j+1) comes from counter j, so any split of the range gives the same numbers.
  // Plain threads rather than at::parallel_for: multi-GB shapes must fill at memory speed whatever
  // parallel backend the libtorch build has.
  const int64_t pairs = (n + 1) / 2;
  auto fill = [&](int64_t begin, int64_t end) {
    for (int64_t j = begin; j < end; ++j) {
      double u1, u2;
      Uniforms(key, static_cast<uint64_t>(j), &u1, &u2);
      const double r = std::sqrt(-2.0 * std::log(u1)) * std;
      out[2 * j] = static_cast<float>(r * std::cos(kTwoPi * u2));
      if (2 * j + 1 < n) out[2 * j + 1] = static_cast<float>(r * std::sin(kTwoPi * u2));
    }
  };
  const int64_t threads = std::min<int64_t>(std::max(1u, std::thread::hardware_concurrency()),
                                            std::max<int64_t>(1, pairs >> 16));
  std::vector<std::thread> workers;
  const int64_t chunk = (pairs + threads - 1) / threads;
  for (int64_t t = 1; t < threads; ++t) {
    workers.emplace_back(fill, std::min(pairs, t * chunk), std::min(pairs, (t + 1) * chunk));
  }
  fill(0, std::min(pairs, chunk));
  for (auto& w : workers) w.join();
  return t;
}

Status WriteRandomCheckpoint(const ModelConfig& config, const std::string& dir, uint64_t seed,
                             format::DType dtype, const std::string& vocab_dir) {
  const std::vector<ParamInfo> layout = ParameterLayout(config);
  return WriteCheckpoint(
      config, dir, dtype,
      [&](size_t i) -> Result<at::Tensor> { return RandomParameter(layout[i], seed, i); },
      vocab_dir);
}

}  // namespace fuji::engine
