// The memory planner: for a model, a mode and the devices, the bytes every ZeRO stage and offload
// choice needs per GPU and on the host, whether it fits, and its step time. Torch-free.
//
// Model states are the ZeRO layout's (lib/zero/layout.h, which the trainer allocates from):
// units, shards padded to the world size, and per stage and offload the bytes of parameters,
// gradients, optimizer states and pinned staging, by place; the planner sums them (zero::BytesOf).
// The transient peak of device model states (the trainer's peak_device_states) is simulated by
// walking the layout's schedule of a training micro-batch (zero::TrainingSchedule, which the
// trainer executes): stage 3 gathers (c * padded, two at a time, plus the embedding during the
// head), stage 2/3 full gradients of the current units and of the embedding for the whole
// backward, the reduce-scatter outputs (c * shard) with N > 1.
//
// Activations (per token of a micro-batch, per layer; GPT-2 pre-LN block of
// worker/engine/gpt2_model.cc, saved by autograd for backward):
//   input x, ln_1 out, qkv (3C), attention out, x after the attention residual, ln_2 out: 8C
//   c_fc out and GELU out: 2F                           -> (8C + 2F) * c bytes
//   LayerNorm mean and rstd, two LayerNorms: 16 bytes (fp32)
//   attention, CPU (or CUDA without PyTorch 2): the fp32 softmax [H, T] per token is saved, and its
//     compute-dtype copy when c != 4: H * T * (4 + (c != 4 ? c : 0)); the causal mask T * T bytes
//     per layer (shared over the batch)
//   attention, CUDA with PyTorch 2.x (fused SDPA, no T^2 scores): its output C * c and the fp32
//     log-sum-exp 4 * H
//   with activation checkpointing only the block input (C * c) is kept per layer, and one layer's
//   activations exist at a time during the recompute
// Head: fused with its loss over chunks of 256 rows (zero::kHeadChunkRows): one chunk's fp32
// logits and their compute-dtype gradient, min(B * T, 256) * V * (4 + c), and the hidden state's
// gradient. Workspace: one layer's activations again (backward of a block allocates gradients
// the size of what it saved).
//
// Inference: the weights (on the device, or streamed with offload params: two units gathered and
// one unit's staging), the KV cache [L, 2, B, H, T, D] in the compute dtype, the prefill's largest
// layer intermediates and the last position's fp32 logits. T is the request's tokens (prompt and
// new tokens, in 16-token blocks: lib/plan/spec_plans.h), not the model's whole context. On a GPU
// fuji-rank allocates its paged KV pool whole when it loads (worker/rank/rank_service.cc Load:
// FUJI_KV_CACHE_MIB, by default kRankKvPoolBytesGpu, no more than kRankMaxBatch sequences of the
// model's positions and at least one), so the plan counts the pool there; on a CPU the pool's
// pages cost nothing until a request writes them, so the plan counts the request's blocks. A
// warm rank (fuji-agent --keep-warm) serves further requests of its model in one batch: each adds
// its activations, and on a CPU its KV blocks (Breakdown::request); the rest it already holds.
// A fine-tune's load (worker/train/zero_model.h ZeroModel::Load): every rank reads from the mapped
// checkpoint only what its stage keeps, unit by unit (the rank's shard of each unit at stage 3, the
// whole unit at stages 0-2), converting as it reads and dropping the range's file pages before the
// next unit: its host memory while loading is the states built so far and one unit's range (its
// file pages, the fp32 buffer and, in bf16/fp16, the compute-dtype copy: Breakdown::load_host),
// never the whole model. Page cache is not counted: it is the kernel's and reclaimable.
// Parameter offload's host memory, as fuji-rank loads it (worker/rank/rank_service.cc Load): the
// checkpoint loads into host memory in the compute dtype, each parameter in an allocation of its
// own, dropping the checkpoint's mapped pages tensor by tensor (c * params and the largest
// tensor of the file), then the ZeRO-3 engine copies it unit by unit into its (pinned, on a GPU)
// shards, freeing each parameter once it is in its unit's fp32 buffer: the peak is one copy of the
// weights and one unit in fp32 (c N + 4 max_unit, Breakdown::host_build; 52.2 GiB with the
// process for 13B in fp32, where one arena and then the shards took two copies, 98.9 GiB), and
// from then on the rank holds one copy (Breakdown::host_resident). plan_accuracy_test measures it.
//
// Throughput constants (kThroughput below), each with its source:
//   cpu_adamw_params_per_s       1.55e9 fp32, 1.11e9 writing the bf16/fp16 copy: measured,
//                                docs/performance.md (fuji-adamw-bench, 2 threads)
//   gpu_flops                    295e12 bf16/fp16: MEASURED, fuji's 1.3B ZeRO-2 bf16 fine-tune on an
//                                H200 (6N count, docs/gpu-results.md); 50e12 fp32: ASSUMED (about
//                                75% of 67 TFLOPS without TF32)
//   gpu_memory_bandwidth         3.0e12 B/s: ASSUMED (H100 SXM 3.35 TB/s peak, H200 4.8 TB/s)
//   gpu_link_bandwidth           150e9 B/s per rank of collective bus bandwidth: ASSUMED (NVLink 4
//                                with NCCL; A100 DGX-class hardware gets about half)
//   host_device_bandwidth        25e9 B/s, pinned PCIe: ASSUMED (Gen5 x16 is 64 GB/s peak, shared
//                                by the GPUs of a switch)
//   cpu_flops                    60e9 per process: ASSUMED (2 AVX-512 cores, fp32 BLAS)
//   cpu_link_bandwidth           2e9 B/s: ASSUMED (Gloo over loopback between processes)
//   cpu_memory_bandwidth         20e9 B/s: docs/performance.md measures 29.5 GB/s of read
//                                bandwidth; AdamW's reads and writes at about two thirds of it
//   cuda_context_bytes           0.5 GiB per GPU: ASSUMED (CUDA context and cuBLAS workspace as
//                                NVML sees them, outside the allocator's peak)
//   allocator_slack              10% of the device tensors: ASSUMED (the caching allocator's
//                                fragmentation between reserved and allocated)
//   rank_base_rss_bytes          cpu: 256 MiB, measured: plan_accuracy_test prints each rank's peak
//                                RSS minus everything else predicted; on 3 ranks of a 16M-parameter
//                                model, fp32, Debian's libtorch 1.13, that was 246-267 MiB at stages
//                                0 and 1 and 248-309 MiB at stages 2 and 3 (Gloo's reduce-scatter
//                                temporaries, not modelled); cuda: 2 GiB, ASSUMED
//   rank_base_rss_cpu_infer      160 MiB, measured: an inference rank's peak RSS less the
//                                checkpoint's pages and its host copy was 150-155 MiB (fp32, 16M
//                                and 127M parameters; plan_accuracy_test)
// Step time = compute + communication + host-device copies + CPU optimizer (+ device optimizer),
// with no overlap assumed: an upper bound, used to rank plans.
//   compute = 6 * params * tokens (8 with activation checkpointing) + attention's 12 * L * C * T
//             per token, over gpu_flops (cpu_flops on CPU, the ranks sharing one host's cores)
//   communication = ZeRO's bytes per rank: stages 0 and 1 2x the parameter bytes, stage 2 2x,
//             stage 3 3x, times (N - 1) / N, over the link bandwidth
//   copies = gradients down and parameters up per step with offload (c * opt_len each), plus
//             with offload params every unit's shard twice (forward and backward gathers)
//   cpu optimizer = the parameters the host updates (all ranks of the host) / cpu_adamw rate
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "lib/common/status.h"
#include "lib/model/model_config.h"
#include "lib/zero/layout.h"

namespace fuji::plan {

// The rates behind step times. kThroughput holds the defaults listed above; an agent measures its
// node's CPU rates once (`fuji-rank --calibrate`) and the plans for its jobs use them.
struct Throughput {
  double cpu_adamw_params_per_s_fp32 = 1.55e9;
  double cpu_adamw_params_per_s_half = 1.11e9;
  double gpu_flops_half = 295e12;
  double gpu_flops_fp32 = 50e12;
  double gpu_memory_bandwidth = 3.0e12;
  double gpu_link_bandwidth = 150e9;
  double host_device_bandwidth = 25e9;
  double cpu_flops = 60e9;
  double cpu_link_bandwidth = 2e9;
  double cpu_memory_bandwidth = 20e9;
  int64_t cuda_context_bytes = int64_t{512} << 20;
  double allocator_slack = 0.10;
  int64_t rank_base_rss_cpu = int64_t{256} << 20;
  int64_t rank_base_rss_cpu_infer = int64_t{160} << 20;
  int64_t rank_base_rss_cuda = int64_t{2} << 30;
};
extern const Throughput kThroughput;

// A node's measured rates (the result of fuji-rank's calibration, worker/rank/calibrate.h) over
// `base`: "cpu_flops", "cpu_memory_bandwidth", "cpu_adamw_params_per_s_fp32",
// "cpu_adamw_params_per_s_half", "cpu_link_bandwidth" and "host_device_bandwidth" where present; other fields are
// ignored. INVALID_ARGUMENT naming the field for a rate that is not a number from 1e6 to 1e16,
// and for an object without cpu_flops and cpu_memory_bandwidth (not a calibration).
Result<Throughput> RatesFromJson(const nlohmann::json& measured, const Throughput& base);
// The rates step times depend on, as text: part of the key of a cache of plans.
std::string RatesStamp(const Throughput& rates);

enum class DeviceKind { kCpu, kCuda };

// fuji-rank's paged KV cache (worker/rank/rank_service.cc, worker/engine/paged_kv.h): tokens per
// block, the pool's default budget on a GPU, and the most sequences it runs at once.
inline constexpr int64_t kKvBlockTokens = 16;
inline constexpr int64_t kRankKvPoolBytesGpu = int64_t{4096} << 20;
inline constexpr int64_t kRankMaxBatch = 64;

struct PlanRequest {
  engine::ModelConfig config;
  std::string mode = "finetune";       // finetune | infer
  int gpus = 1;                        // ranks (one per GPU; CPU ranks with device cpu)
  int64_t gpu_memory_bytes = 0;        // per GPU; 0 with device cpu: no device limit
  int64_t host_memory_bytes = 0;       // 0: unknown / unlimited
  std::string precision = "bf16";      // fp32 | bf16 | fp16
  int64_t seq_len = 2048;              // finetune: block length; infer: prompt + new tokens
  int64_t micro_batch = 1;
  bool activation_checkpointing = false;
  DeviceKind device = DeviceKind::kCuda;
  bool torch2 = true;                  // PyTorch 2.x libtorch (fused attention on CUDA)
  int64_t checkpoint_bytes = 0;        // bytes of the checkpoint files (mapped while loading); 0: c * params
  Throughput rates = kThroughput;      // the node's measured rates where known (CalibratedRates)
};

// Model states per rank (zero::StateBytes, as the trainer's MemoryAccount reports them), and the
// rest of a rank's memory.
struct Breakdown : zero::StateBytes {
  int64_t peak_device_states = 0;  // model states on the device at their transient peak
  int64_t activations = 0;         // per rank, at the peak of forward/backward (incl. logits)
  int64_t logits = 0;              // the head's part of activations
  int64_t kv_cache = 0;            // inference
  int64_t workspace = 0;
  int64_t allocator_slack = 0;
  int64_t cuda_context = 0;
  // Per rank host bytes while loading beside what is kept. Finetune: one unit's range of the
  // checkpoint's pages and its fp32 buffer (the rank's shard at stage 3, the whole unit before:
  // ranks read only what they keep). Inference: the checkpoint map and host copy.
  int64_t load_host = 0;
  // Host bytes once the states are built, at the end of the load, the process base excluded: a
  // fine-tune's states and load_host; inference with parameter offload, while its shards are built.
  int64_t host_build = 0;
  int64_t base_rss = 0;            // per rank process base
  int64_t host_peak = 0;           // per rank host peak (cuda: host states, load; cpu: everything)
  int64_t host_resident = 0;       // inference: per rank host bytes held once loaded (base, host weights)
  // Inference: what one request adds to a loaded rank, in the plan's memory (gpu_bytes on a GPU,
  // host_bytes on a CPU): its activations and, on a CPU, its KV blocks (a GPU's are in the pool
  // the rank allocated when it loaded); on a GPU with their allocator slack.
  int64_t request = 0;
};

struct StepTime {
  double compute = 0, communication = 0, copies = 0, cpu_optimizer = 0, device_optimizer = 0;
  double total() const { return compute + communication + copies + cpu_optimizer + device_optimizer; }
};

struct Plan {
  int zero = 0;
  std::string offload = "none";  // none | optimizer | params
  int64_t gpu_bytes = 0;         // per GPU, peak (with device cpu: the device-side part of a rank)
  int64_t host_bytes = 0;        // all ranks together, peak
  Breakdown breakdown;
  bool fits = false;
  std::string why_not;           // when !fits: which limit, needed vs available
  StepTime step;
  double step_seconds = 0;
};

// The choices for the request's devices. CUDA: every (zero 0..3) x (offload none | optimizer |
// params at zero 3) for finetune; offload none | params for infer (a single process streaming
// its weights). CPU devices, whose memory is the host's, have no offload: zero 0..3 with offload
// none for finetune, offload none for infer.
Result<std::vector<Plan>> PlanAll(const PlanRequest& request);
// One configuration, offered or not: also an offload on a CPU device, whose data path runs there
// with host memory standing in for the device's (FUJI_CPU_OFFLOAD=emulate; what the planner's
// accuracy tests measure). INVALID_ARGUMENT for a stage and offload that cannot go together.
Result<Plan> PlanOne(const PlanRequest& request, int zero, const std::string& offload);
// The fastest plan that fits (ties: the fewer bytes per GPU); nullopt when none fits.
std::optional<Plan> Recommend(const std::vector<Plan>& plans);

// {"zero","offload","gpu_bytes","host_bytes","fits","step_seconds","why_not","breakdown":{..},"step":{..}}
nlohmann::json PlanToJson(const Plan& plan);

// A named architecture ("cerebras-gpt-13b", "13b", "111m", "tiny") or a checkpoint directory
// (its config.json; *checkpoint_bytes gets the size of its weight files when not null).
Result<engine::ModelConfig> ResolveModel(const std::string& name_or_dir, int64_t* checkpoint_bytes);

// "40GiB", "40G" (binary: GiB, G, MiB, M, KiB, K, bare bytes) or "40GB", "40MB", "40KB"
// (decimal); fractions allowed ("1.5GiB"). Zero, negative and unknown units are refused.
Result<int64_t> ParseSize(const std::string& text);
std::string FormatGiB(int64_t bytes);  // "40.0 GiB"

// Wall time of E epochs of a corpus at a measured global tokens/s.
struct TrainingEstimate {
  double seconds = 0;
  double tokens = 0;  // corpus_tokens * epochs
};
Result<TrainingEstimate> EstimateTraining(double tokens_per_s, double corpus_tokens, double epochs);
std::string FormatDuration(double seconds);  // "2.0 weeks", "2.5 months", "3.1 h", "42 s"

}  // namespace fuji::plan
