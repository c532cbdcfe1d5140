// Training step benchmark: full steps of fuji's trainer (train::ZeroModel at stage 0 in one
// process, no collectives, fp32 on the CPU) on a checkpoint, for comparison with the same step in
// Python PyTorch eager (bench/python_train_step.py, same weights, same token ids, same threads).
// A step is one micro-batch's forward and backward, then Step: gradient clipping at 1.0 and AdamW
// (betas 0.9/0.95, eps 1e-8, weight decay 0.1 on the matrices). Token ids are deterministic:
// ids[b][t] = (b*7919 + t*104729 + 13) % vocab, targets the next id of the same rule.
// usage: fuji-train-bench MODEL_DIR [--seq N] [--batch N] [--steps N] [--lr X]
// Prints one JSON line; bench/run_train_bench.sh runs both sides and prints the ratio.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include <time.h>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <nlohmann/json.hpp>

#include "worker/engine/checkpoint.h"
#include "worker/engine/device.h"
#include "worker/train/zero_model.h"

namespace {

using Clock = std::chrono::steady_clock;

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n == 0 ? 0 : n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

int Fail(const std::string& message) {
  std::fprintf(stderr, "fuji-train-bench: %s\n", message.c_str());
  return 1;
}

// CPU time of the whole process (every thread) in ms: less moved by neighbours than wall time.
double ProcessCpuMs() {
  timespec ts{};
  ::clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) * 1e3 + static_cast<double>(ts.tv_nsec) / 1e6;
}

// The benchmark's token rule; python_train_step.py has the same.
int64_t TokenId(int64_t b, int64_t t, int64_t vocab) { return (b * 7919 + t * 104729 + 13) % vocab; }

}  // namespace

int main(int argc, char** argv) {
  fuji::engine::ReexecWithPassiveOpenMp(argv);
  const int threads = fuji::engine::ConfigureThreads();
  fuji::engine::KeepFreedMemory();  // as fuji-rank does
  if (argc < 2 || argv[1][0] == '-') {
    std::fprintf(stderr, "usage: fuji-train-bench MODEL_DIR [--seq N] [--batch N] [--steps N] [--lr X]\n");
    return 2;
  }
  const std::string dir = argv[1];
  int64_t seq = 256, batch = 4, steps = 5;
  double lr = 1e-4;
  for (int i = 2; i < argc; i += 2) {
    if (i + 1 >= argc) return Fail(std::string("missing value after ") + argv[i]);
    const std::string flag = argv[i], value = argv[i + 1];
    char* end = nullptr;
    const double number = std::strtod(value.c_str(), &end);
    if (end == value.c_str() || *end != '\0') return Fail(flag + " needs a number, not '" + value + "'");
    if (flag == "--seq") seq = static_cast<int64_t>(number);
    else if (flag == "--batch") batch = static_cast<int64_t>(number);
    else if (flag == "--steps") steps = static_cast<int64_t>(number);
    else if (flag == "--lr") lr = number;
    else return Fail("unknown flag " + flag);
  }
  if (seq < 1 || batch < 1 || steps < 1) return Fail("--seq, --batch and --steps must be at least 1");

  auto loaded = fuji::engine::LoadModel(dir, {at::kFloat, at::kCPU});
  if (!loaded.ok()) return Fail(loaded.status().ToString());
  const fuji::engine::ModelConfig config = (*loaded)->config();
  if (seq > config.n_positions) return Fail("--seq above the model's n_positions");
  std::vector<at::Tensor> weights = std::move((*loaded)->parameters());
  loaded->reset();
  fuji::train::ZeroOptions options;  // stage 0, fp32, CPU
  options.optimizer_threads = threads;
  auto created = fuji::train::ZeroModel::Create(config, std::move(weights), options, nullptr);
  if (!created.ok()) return Fail(created.status().ToString());
  fuji::train::ZeroModel& model = **created;

  at::Tensor ids = at::empty({batch, seq}, at::kLong), targets = at::empty({batch, seq}, at::kLong);
  int64_t* id = ids.data_ptr<int64_t>();
  int64_t* target = targets.data_ptr<int64_t>();
  for (int64_t b = 0; b < batch; ++b) {
    for (int64_t t = 0; t < seq; ++t) {
      id[b * seq + t] = TokenId(b, t, config.vocab_size);
      target[b * seq + t] = TokenId(b, t + 1, config.vocab_size);
    }
  }
  fuji::optim::AdamWConfig adamw;
  adamw.lr = lr;
  adamw.beta1 = 0.9;
  adamw.beta2 = 0.95;
  adamw.eps = 1e-8;
  adamw.weight_decay = 0.1;

  std::vector<double> losses, grad_norms, step_ms, cpu_ms, forward_ms, backward_ms, optimizer_ms;
  for (int64_t step = 1; step <= steps + 1; ++step) {  // step 1 is the warmup
    const fuji::train::PhaseTimes before = model.times();
    const auto start = Clock::now();
    const double cpu_start = ProcessCpuMs();
    losses.push_back(model.ForwardBackward(ids, targets, /*loss_scale=*/1.0, /*last_micro=*/true));
    const fuji::train::StepStats stats = model.Step(adamw, step, /*grad_divisor=*/1.0, /*loss_scale=*/1.0,
                                                    /*clip=*/1.0);
    const double ms = std::chrono::duration<double, std::milli>(Clock::now() - start).count();
    const double cpu = ProcessCpuMs() - cpu_start;
    grad_norms.push_back(stats.grad_norm);
    if (step == 1) continue;
    const fuji::train::PhaseTimes after = model.times();
    step_ms.push_back(ms);
    cpu_ms.push_back(cpu);
    forward_ms.push_back(after.forward_ms - before.forward_ms);
    backward_ms.push_back(after.backward_ms - before.backward_ms);
    optimizer_ms.push_back(after.optimizer_ms - before.optimizer_ms);
  }
  nlohmann::json j = {{"bench", "train_step"},
                      {"impl", "fuji"},
                      {"threads", at::get_num_threads()},
                      {"seq", seq},
                      {"batch", batch},
                      {"steps", steps},
                      {"step_ms", Median(step_ms)},
                      {"step_ms_all", step_ms},
                      {"step_cpu_ms", Median(cpu_ms)},
                      {"forward_ms", Median(forward_ms)},
                      {"backward_ms", Median(backward_ms)},
                      {"optimizer_ms", Median(optimizer_ms)},
                      {"tokens_per_s", static_cast<double>(batch * seq) * 1000.0 / Median(step_ms)},
                      {"losses", losses},
                      {"grad_norms", grad_norms}};
  std::printf("%s\n", j.dump().c_str());
  return 0;
}
