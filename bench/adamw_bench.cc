// fuji-adamw-bench: one AdamW step over a flat buffer of 100M fp32 parameters, fuji's
// CpuAdamW (all cores, its own pool) against libtorch's torch::optim::AdamW (at::set_num_threads
// all cores) on the same data; best of 5 steps each, params/s and the ratio as one JSON line.
// usage: fuji-adamw-bench [--params N] [--threads T] [--steps S]
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/optim/adamw.h>

#include "worker/engine/device.h"
#include "worker/optim/adamw.h"

namespace {

double Seconds(std::chrono::steady_clock::time_point a, std::chrono::steady_clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

template <typename F>
double BestOf(int steps, const F& f) {
  double best = 1e30;
  for (int s = 0; s < steps; ++s) {
    const auto t0 = std::chrono::steady_clock::now();
    f(s);
    best = std::min(best, Seconds(t0, std::chrono::steady_clock::now()));
  }
  return best;
}

}  // namespace

int main(int argc, char** argv) {
  fuji::engine::ReexecWithPassiveOpenMp(argv);
  int64_t n = 100'000'000;
  int threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  int steps = 5;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    if (flag == "--params")
      n = std::atoll(argv[i + 1]);
    else if (flag == "--threads")
      threads = std::atoi(argv[i + 1]);
    else if (flag == "--steps")
      steps = std::atoi(argv[i + 1]);
    else {
      std::fprintf(stderr, "usage: fuji-adamw-bench [--params N] [--threads T] [--steps S]\n");
      return 2;
    }
  }
  at::set_num_threads(threads);
  at::manual_seed(0);
  const at::Tensor init = at::randn({n}) * 0.02;
  const at::Tensor grad = at::randn({n}) * 0.01;

  fuji::optim::AdamWConfig config;
  config.lr = 1e-4;
  config.weight_decay = 0.1;

  // torch: one parameter tensor, its AdamW state created by a first (untimed) step.
  at::Tensor param = init.clone().set_requires_grad(true);
  param.mutable_grad() = grad.clone();
  torch::optim::AdamW torch_opt(
      {param},
      torch::optim::AdamWOptions(config.lr).betas({0.9, 0.95}).eps(1e-8).weight_decay(0.1));
  {
    at::NoGradGuard no_grad;
    torch_opt.step();
  }
  const double torch_s = BestOf(steps, [&](int) { torch_opt.step(); });

  // fuji: the same data, moments zeroed and touched by a first (untimed) step.
  std::vector<float> master(init.data_ptr<float>(), init.data_ptr<float>() + n);
  std::vector<float> exp_avg(n, 0.0f), exp_avg_sq(n, 0.0f);
  std::vector<uint16_t> bf16(n);
  const float* g = grad.data_ptr<float>();
  fuji::optim::CpuAdamW optimizer(threads);
  fuji::optim::AdamWShard shard{master.data(), exp_avg.data(), exp_avg_sq.data(), g};
  shard.n = n;
  fuji::optim::AdamWShard shard_out = shard;
  shard_out.param_out = bf16.data();
  int64_t step = 0;
  auto fuji_step = [&](const fuji::optim::AdamWShard& s) {
    const fuji::Status status = optimizer.Step(config, ++step, 1.0f, s);
    if (!status.ok()) {
      std::fprintf(stderr, "%s\n", status.ToString().c_str());
      std::exit(1);
    }
  };
  fuji_step(shard);
  const double fuji_s = BestOf(steps, [&](int) { fuji_step(shard); });
  const double fuji_out_s = BestOf(steps, [&](int) { fuji_step(shard_out); });
  const double sumsq_s = BestOf(steps, [&](int) { optimizer.SumOfSquares(g, n); });

  // Both took 1 + steps steps with the same gradient; fuji then took `steps` more. Replay torch's
  // count on a fresh fuji copy to check that the two agree.
  std::vector<float> check(init.data_ptr<float>(), init.data_ptr<float>() + n);
  std::fill(exp_avg.begin(), exp_avg.end(), 0.0f);
  std::fill(exp_avg_sq.begin(), exp_avg_sq.end(), 0.0f);
  shard.master = check.data();
  step = 0;
  for (int s = 0; s <= steps; ++s) fuji_step(shard);
  const float* tp = param.data_ptr<float>();
  double max_diff = 0, max_abs = 0;
  for (int64_t i = 0; i < n; ++i) {
    max_diff = std::max(max_diff, std::fabs(static_cast<double>(check[i]) - tp[i]));
    max_abs = std::max(max_abs, std::fabs(static_cast<double>(tp[i])));
  }

  const double nd = static_cast<double>(n);
  std::printf(
      "{\"bench\":\"adamw\",\"params\":%lld,\"threads\":%d,\"steps\":%d,"
      "\"fuji_params_per_s\":%.4g,\"fuji_bf16_out_params_per_s\":%.4g,"
      "\"torch_params_per_s\":%.4g,\"ratio\":%.3f,\"fuji_step_s\":%.4f,\"torch_step_s\":%.4f,"
      "\"sum_of_squares_params_per_s\":%.4g,\"max_diff_vs_torch\":%.3g}\n",
      static_cast<long long>(n), threads, steps, nd / fuji_s, nd / fuji_out_s, nd / torch_s,
      torch_s / fuji_s, fuji_s, torch_s, nd / sumsq_s, max_abs > 0 ? max_diff / max_abs : max_diff);
  return 0;
}
