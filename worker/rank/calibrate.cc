// The planner's rates measured on this node; see calibrate.h.
#include "worker/rank/calibrate.h"

#include <stdlib.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <functional>
#include <limits>
#include <string>
#include <thread>
#include <vector>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include "worker/dist/communicator.h"
#include "worker/engine/cpu_kernels.h"
#include "worker/engine/device.h"
#include "worker/optim/adamw.h"

namespace fuji::rank {
namespace {

// The shortest of `reps` runs of `fn` after one warm-up run, in seconds.
double BestSeconds(int reps, const std::function<void()>& fn) {
  fn();
  double best = std::numeric_limits<double>::infinity();
  for (int i = 0; i < reps; ++i) {
    const auto start = std::chrono::steady_clock::now();
    fn();
    best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  }
  return best;
}

// ZeRO's bytes per rank per second between two ranks of this node over Gloo, called as the
// trainer calls it: a reduce-scatter of 64 MiB of fp32 gradients, then an all-gather of the
// updated shards, into buffers allocated for each call as the trainer's are (through the same
// allocator: fuji-rank's cache of large blocks), while another thread computes as the ranks do
// during a step; the median of five. Two threads stand in for the two rank processes. 0 when the
// group cannot form (the planner keeps its default).
double GlooBandwidth() {
  char dir_template[] = "/tmp/fuji-calibrate-XXXXXX";
  if (::mkdtemp(dir_template) == nullptr) return 0;  // private (0700): the store's file lives there
  const std::string store = std::string("file:") + dir_template + "/store";
  constexpr int64_t kElements = int64_t{16} << 20;
  constexpr int kReps = 5;
  std::atomic<int> failed{0};
  double seconds[2] = {0, 0};
  auto rank = [&](int r) {
    try {
      dist::CommOptions options;
      options.rank = r;
      options.world_size = 2;
      options.rendezvous = store;
      options.timeout = std::chrono::milliseconds(30000);
      Result<std::unique_ptr<dist::Communicator>> comm = dist::Communicator::Create(options);
      if (!comm.ok()) {
        ++failed;
        return;
      }
      std::vector<double> times;
      for (int i = 0; i <= kReps; ++i) {  // the first is a warm-up (Gloo's connections)
        (*comm)->Barrier();
        const auto start = std::chrono::steady_clock::now();
        at::Tensor grads = at::ones({kElements});
        at::Tensor shard = at::empty({kElements / 2});
        (*comm)->ReduceScatterSum(grads, shard);
        at::Tensor full = at::empty({kElements});
        (*comm)->AllGather(shard, full);
        const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
        if (i > 0) times.push_back(s);
      }
      // The median, not the best: a step's collectives run beside the other rank's compute, and
      // the best of a few quiet transfers predicted 2-rank steps about 1.5x too fast.
      std::sort(times.begin(), times.end());
      seconds[r] = times[times.size() / 2];
    } catch (const std::exception&) {
      ++failed;
    }
  };
  // In a step the collectives run beside the ranks' compute, which takes the same cores: a third
  // thread keeps multiplying matrices meanwhile (measured alone, on an idle machine, Gloo's rate
  // predicted 2-rank steps up to 2x too fast).
  std::atomic<bool> done{false};
  std::thread compute([&] {
    const at::Tensor a = at::randn({256, 768}), b = at::randn({768, 768});
    while (!done) (void)at::mm(a, b);
  });
  std::thread peer(rank, 1);
  rank(0);
  peer.join();
  done = true;
  compute.join();
  ::unlink((std::string(dir_template) + "/store").c_str());
  ::rmdir(dir_template);
  if (failed > 0) return 0;
  // Per rank: reduce-scatter B (N-1)/N and all-gather S (N-1), B = 4 x elements, S = B / 2.
  const double bytes = 4.0 * kElements * 0.5 + 4.0 * (kElements / 2);
  return bytes / std::max(seconds[0], seconds[1]);
}

}  // namespace

nlohmann::json MeasureRates() {
  at::NoGradGuard no_grad;
  nlohmann::json rates;
  // Compute: fp32 matrix products of a 111M-shaped layer over 512 tokens ([512, 768] x [768,
  // 3072]): the GEMMs that make up most of a training step's work.
  {
    const int64_t m = 512, k = 768, n = 3072;
    const at::Tensor a = at::randn({m, k}), b = at::randn({k, n});
    at::Tensor c = at::empty({m, n});
    const double s = BestSeconds(4, [&] { at::mm_out(c, a, b); });
    rates["cpu_flops"] = 2.0 * static_cast<double>(m * k * n) / s;
  }
  // Memory: the engine's batch-1 decode kernel over 16 fp32 weight matrices of a 111M-shaped
  // layer's MLP ([768, 3072], 9 MiB each, 144 MiB in all: far beyond the caches), one after the
  // other as a decode step reads them: the read bandwidth a decode step gets, with the start and
  // end of each matrix's parallel region in it, which one big matrix would leave out.
  {
    std::vector<at::Tensor> w;
    for (int i = 0; i < 16; ++i) w.push_back(at::full({768, 3072}, 0.5f));
    const at::Tensor x = at::ones({1, 768}), bias = at::zeros({3072});
    const double s = BestSeconds(4, [&] {
      for (const at::Tensor& m : w) (void)engine::RowTimesMatrix(x, m, bias);
    });
    rates["cpu_memory_bandwidth"] = static_cast<double>(16 * w[0].nbytes()) / s;
  }
  // fuji's CPU AdamW (worker/optim) over 4M parameters, fp32 and writing a bf16 copy.
  {
    const int64_t n = int64_t{4} << 20;
    std::vector<float> master(n, 0.5f), m(n, 0.f), v(n, 0.f), grad(n, 1e-3f);
    std::vector<uint16_t> half(n);
    optim::CpuAdamW adamw(at::get_num_threads());
    optim::AdamWConfig config;
    optim::AdamWShard shard;
    shard.master = master.data();
    shard.exp_avg = m.data();
    shard.exp_avg_sq = v.data();
    shard.grad = grad.data();
    shard.n = n;
    int64_t step = 0;
    const double fp32 = BestSeconds(3, [&] { (void)adamw.Step(config, ++step, 1.0f, shard); });
    shard.param_out = half.data();
    shard.param_out_precision = optim::Precision::kBF16;
    const double bf16 = BestSeconds(3, [&] { (void)adamw.Step(config, ++step, 1.0f, shard); });
    rates["cpu_adamw_params_per_s_fp32"] = static_cast<double>(n) / fp32;
    rates["cpu_adamw_params_per_s_half"] = static_cast<double>(n) / bf16;
  }
  // Ranks on one node: Gloo, as the trainer's collectives use it.
  if (const double link = GlooBandwidth(); link > 0) rates["cpu_link_bandwidth"] = link;
  // Host to device: 256 MiB of pinned host memory to the first GPU.
  if (engine::CudaDeviceCount() > 0) {
    const at::Tensor host = at::ones({int64_t{64} << 20}).pin_memory();
    const c10::Device cuda(c10::DeviceType::CUDA, 0);
    const double s = BestSeconds(3, [&] { (void)host.to(cuda, /*non_blocking=*/false).sum().item<float>(); });
    rates["host_device_bandwidth"] = static_cast<double>(host.nbytes()) / s;
  }
  rates["threads"] = at::get_num_threads();
  return rates;
}

}  // namespace fuji::rank
