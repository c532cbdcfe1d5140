// The memory planner: ZeRO's arithmetic as the trainer implements it, activations, and step time.
// See plan.h for every constant and where it comes from.
#include "lib/plan/plan.h"

#include <sys/stat.h>

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <utility>

#include <nlohmann/json.hpp>

#include "lib/zero/layout.h"

namespace fuji::plan {

const Throughput kThroughput{};

Result<Throughput> RatesFromJson(const nlohmann::json& measured, const Throughput& base) {
  if (!measured.is_object() || !measured.contains("cpu_flops") || !measured.contains("cpu_memory_bandwidth")) {
    return InvalidArgument("rates must be a JSON object with at least cpu_flops and cpu_memory_bandwidth");
  }
  Throughput t = base;
  const std::pair<const char*, double*> fields[] = {
      {"cpu_flops", &t.cpu_flops},
      {"cpu_memory_bandwidth", &t.cpu_memory_bandwidth},
      {"cpu_adamw_params_per_s_fp32", &t.cpu_adamw_params_per_s_fp32},
      {"cpu_adamw_params_per_s_half", &t.cpu_adamw_params_per_s_half},
      {"cpu_link_bandwidth", &t.cpu_link_bandwidth},
      {"host_device_bandwidth", &t.host_device_bandwidth}};
  for (const auto& [name, field] : fields) {
    const auto it = measured.find(name);
    if (it == measured.end()) continue;
    // NaN fails both comparisons; infinity the second.
    if (!it->is_number() || !(it->get<double>() >= 1e6 && it->get<double>() <= 1e16)) {
      return InvalidArgument(std::string("rate '") + name + "' must be a number from 1e6 to 1e16 per second");
    }
    *field = it->get<double>();
  }
  return t;
}

std::string RatesStamp(const Throughput& t) {
  char stamp[192];
  std::snprintf(stamp, sizeof stamp, "%.4g/%.4g/%.4g/%.4g/%.4g/%.4g", t.cpu_flops, t.cpu_memory_bandwidth,
                t.cpu_adamw_params_per_s_fp32, t.cpu_adamw_params_per_s_half, t.cpu_link_bandwidth,
                t.host_device_bandwidth);
  return stamp;
}

namespace {

using zero::Offload;

int64_t Elem(const std::string& precision) { return precision == "fp32" ? 4 : 2; }

// The ZeRO choices of a plan, for the layout's arithmetic (rank 0 stands for every rank: the
// shards are equal).
zero::ZeroConfig ZeroConfigOf(const PlanRequest& r, int stage, Offload offload) {
  zero::ZeroConfig z;
  z.stage = stage;
  z.offload = offload;
  z.world_size = r.gpus;
  z.compute_bytes = Elem(r.precision);
  z.gpu = r.device == DeviceKind::kCuda;
  return z;
}

// Walks the trainer's schedule of one training micro-batch (the last before a step) and tracks the
// device's model states as ZeroModel::Impl does: a gather adds the padded unit in the compute
// dtype, a release frees it; attaching gradients allocates the padded gradient buffer unless it
// lives across steps (stages 0/1); a reduction at stages 1-3 allocates the shard it reduces into
// (with N > 1; one rank reduces in place), and settling it at stages 2/3 frees that and the padded
// gradients. Returns the peak; *at_head gets the states when the head runs (where activations
// peak).
int64_t SimulateDeviceStates(const zero::Layout& layout, const zero::ZeroConfig& z, int64_t base,
                             int64_t* at_head) {
  const size_t n = static_cast<size_t>(layout.size());
  const int64_t c = z.compute_bytes;
  const bool comm = z.world_size > 1;
  std::vector<zero::Sharding> sizes;
  for (const zero::Unit& unit : layout.units()) sizes.push_back(zero::ShardUnit(unit.numel, z.world_size));
  int64_t cur = base, peak = base;
  std::vector<char> gathered(n, 0), gfull(n, z.stage <= 1 ? 1 : 0), gred(n, 0), gred_tracked(n, 0);
  auto track = [&](int64_t d) {
    cur += d;
    peak = std::max(peak, cur);
  };
  const zero::Schedule schedule = zero::TrainingSchedule(layout, z.stage);
  for (const std::vector<zero::Action>* phase : {&schedule.forward, &schedule.backward}) {
    for (const zero::Action& a : *phase) {
      const size_t u = static_cast<size_t>(a.unit);
      switch (a.op) {
        case zero::Op::kStartGather:
        case zero::Op::kFinishGather:
          if (!gathered[u]) track(c * sizes[u].padded);
          gathered[u] = 1;
          break;
        case zero::Op::kRelease:
          if (gathered[u]) track(-c * sizes[u].padded);
          gathered[u] = 0;
          break;
        case zero::Op::kAttachGrads:
          if (!gfull[u]) track(c * sizes[u].padded);
          gfull[u] = 1;
          break;
        case zero::Op::kStartReduce:
          if (z.stage == 0) break;
          gred[u] = 1;
          if (comm) {
            gred_tracked[u] = 1;
            track(c * sizes[u].shard);
          }
          break;
        case zero::Op::kFinishReduce:
          if (z.stage < 2 || !gred[u]) break;
          if (gred_tracked[u]) track(-c * sizes[u].shard);
          gred[u] = gred_tracked[u] = 0;
          track(-c * sizes[u].padded);
          gfull[u] = 0;
          break;
        case zero::Op::kHead:
          *at_head = cur;
          break;
        default:
          break;
      }
    }
  }
  return peak;
}

struct Activations {
  int64_t per_layer = 0;  // saved by one block for backward
  int64_t stack = 0;      // everything the forward keeps until backward, logits excluded
  int64_t head = 0;       // ln_f output and the logits
  int64_t logits = 0;
};

bool FusedAttention(const PlanRequest& r) { return r.device == DeviceKind::kCuda && r.torch2; }

Activations TrainActivations(const PlanRequest& r) {
  const engine::ModelConfig& m = r.config;
  const int64_t c = Elem(r.precision), C = m.n_embd, F = m.ffn(), H = m.n_head, T = r.seq_len;
  const int64_t tok = r.micro_batch * T;
  Activations a;
  a.per_layer = tok * ((8 * C + 2 * F) * c + 16);
  if (FusedAttention(r)) {
    a.per_layer += tok * (C * c + 4 * H);
  } else {
    a.per_layer += tok * H * T * (4 + (c != 4 ? c : 0)) + T * T;
  }
  const int64_t kept = r.activation_checkpointing ? tok * C * c : a.per_layer;
  // Each block's saved tensors (its input among them), the final hidden state and the embedding
  // output the trainer keeps for the embedding's backward.
  a.stack = m.n_layer * kept + 2 * tok * C * c;
  // The trainer fuses the head with its loss over chunks of zero::kHeadChunkRows rows:
  // one chunk's fp32 logits, their compute-dtype gradient and the hidden state's gradient.
  const int64_t chunk = std::min<int64_t>(tok, zero::kHeadChunkRows);
  a.logits = chunk * m.vocab_size * (4 + c) + tok * C * c;
  a.head = tok * C * c + a.logits;
  return a;
}

double GpuFlops(const PlanRequest& r) {
  return r.precision == "fp32" ? r.rates.gpu_flops_fp32 : r.rates.gpu_flops_half;
}

double AdamWRate(const PlanRequest& r) {
  return r.precision == "fp32" ? r.rates.cpu_adamw_params_per_s_fp32 : r.rates.cpu_adamw_params_per_s_half;
}

std::string NeedVsHave(const char* what, int64_t need, int64_t have, const char* per) {
  return std::string(what) + ": needs " + FormatGiB(need) + per + ", " + FormatGiB(have) + " available";
}

void Decide(const PlanRequest& r, Plan* p) {
  p->fits = true;
  if (r.device == DeviceKind::kCuda && p->gpu_bytes > r.gpu_memory_bytes) {
    p->fits = false;
    p->why_not = NeedVsHave("GPU memory", p->gpu_bytes, r.gpu_memory_bytes, " per GPU");
  }
  if (r.host_memory_bytes > 0 && p->host_bytes > r.host_memory_bytes) {
    const std::string host = NeedVsHave("host memory", p->host_bytes, r.host_memory_bytes, "");
    p->why_not = p->fits ? host : p->why_not + "; " + host;
    p->fits = false;
  }
  p->step_seconds = p->step.total();
}

Plan FinetunePlan(const PlanRequest& r, const zero::Layout& layout, int stage, Offload offload) {
  const zero::ZeroConfig z = ZeroConfigOf(r, stage, offload);
  const bool cuda = z.gpu;
  const int64_t c = z.compute_bytes;
  Plan p;
  p.zero = stage;
  p.offload = zero::OffloadName(offload);
  Breakdown& b = p.breakdown;
  static_cast<zero::StateBytes&>(b) = zero::BytesOf(layout, z);
  int64_t at_head = 0;
  b.peak_device_states = SimulateDeviceStates(layout, z, b.device_states(), &at_head);

  int64_t n = 0, max_padded = 0, sum_opt = 0, sum_shard = 0, max_shard = 0, max_opt = 0;
  for (const zero::Unit& unit : layout.units()) {
    const zero::UnitStates u = zero::StatesOf(unit, z);
    n += unit.numel;
    max_padded = std::max(max_padded, u.sharding.padded);
    max_shard = std::max(max_shard, u.sharding.shard);
    max_opt = std::max(max_opt, u.opt_len);
    sum_opt += u.opt_len;
    sum_shard += u.sharding.shard;
  }
  const Activations a = TrainActivations(r);
  b.logits = a.logits;
  // Backward of a block allocates gradients about the size of what it saved; with checkpointing
  // the block's activations are recomputed, so one full layer exists again.
  b.workspace = a.per_layer + (r.activation_checkpointing ? a.per_layer : 0);
  if (cuda && offload == Offload::kParams) b.workspace += c * max_shard;      // gather staging
  if (cuda && offload == Offload::kNone) b.workspace = std::max(b.workspace, 8 * max_opt);  // device AdamW temporaries
  b.activations = a.stack + a.head;
  const int64_t head_peak = at_head + a.stack + a.head;
  const int64_t backward_peak = b.peak_device_states + a.stack + b.workspace;
  const int64_t device_peak = std::max(head_peak, backward_peak);

  // Loading (ZeroModel::Load), unit by unit in layout order: the unit's range (the rank's shard at
  // stage 3, the whole unit before) is read from the mapped checkpoint into an fp32 buffer
  // (through a compute-dtype copy when c != 4) and the range's file pages are dropped; then the
  // unit's states are made from the buffer. The peak is the largest, over the units, of the states
  // built before the unit, the buffer, and the larger of (file pages + copy) and the unit's states
  // (at the place that counts: the host on a GPU, everything on a CPU). load_host: the largest
  // unit's pages and buffers.
  const int64_t ckpt = r.checkpoint_bytes > 0 ? r.checkpoint_bytes : c * n;
  const double file_per_element = static_cast<double>(ckpt) / static_cast<double>(std::max<int64_t>(n, 1));
  int64_t built = 0, build_peak = 0;
  b.load_host = 0;
  for (const zero::Unit& unit : layout.units()) {
    const zero::UnitStates u = zero::StatesOf(unit, z);
    const int64_t range = stage == 3 ? u.sharding.shard : u.sharding.padded;
    const int64_t file = static_cast<int64_t>(file_per_element * static_cast<double>(range));
    const int64_t copy = c != 4 ? c * range : 0;
    int64_t unit_states = 0;
    for (const zero::Buffer* buffer : {&u.params, &u.grads, &u.master, &u.moments}) {
      if (!cuda || buffer->place == zero::Place::kHost) unit_states += buffer->bytes();
    }
    b.load_host = std::max(b.load_host, file + 4 * range + copy);
    build_peak = std::max(build_peak, built + 4 * range + std::max(file + copy, unit_states));
    built += unit_states;
  }
  if (cuda) {
    b.allocator_slack = static_cast<int64_t>(r.rates.allocator_slack * static_cast<double>(device_peak));
    b.cuda_context = r.rates.cuda_context_bytes;
    p.gpu_bytes = device_peak + b.allocator_slack + b.cuda_context;
    b.base_rss = r.rates.rank_base_rss_cuda;
    b.host_build = std::max(build_peak, b.host_states());
    b.host_peak = b.base_rss + b.host_build;
  } else {
    // On the CPU "device" and host are the same memory: a rank's resident set holds it all.
    p.gpu_bytes = device_peak;
    b.base_rss = r.rates.rank_base_rss_cpu;
    const int64_t states = b.device_states() + b.host_states();
    b.host_build = std::max(build_peak, states);
    const int64_t train = b.host_states() + device_peak;
    const int64_t publish = states + ((stage == 1 || stage == 2) && z.world_size > 1 ? c * sum_opt : 0);
    b.host_peak = b.base_rss + std::max({b.host_build, train, publish});
  }
  p.host_bytes = r.gpus * b.host_peak;

  // Step time.
  const engine::ModelConfig& m = r.config;
  const double tokens = static_cast<double>(r.micro_batch * r.seq_len);
  const double flops_per_token = (r.activation_checkpointing ? 8.0 : 6.0) * static_cast<double>(n) +
                                 (r.activation_checkpointing ? 16.0 : 12.0) *
                                     static_cast<double>(m.n_layer * m.n_embd * r.seq_len);
  const double N = static_cast<double>(r.gpus);
  if (cuda) {
    p.step.compute = tokens * flops_per_token / GpuFlops(r);
  } else {
    p.step.compute = N * tokens * flops_per_token / r.rates.cpu_flops;  // ranks share the cores
  }
  if (r.gpus > 1) {
    const double factor = stage == 3 ? 3.0 : 2.0;
    const double bytes = factor * static_cast<double>(c * n) * (N - 1) / N;
    p.step.communication = bytes / (cuda ? r.rates.gpu_link_bandwidth : r.rates.cpu_link_bandwidth);
  }
  if (offload != Offload::kNone) {
    double bytes = 2.0 * static_cast<double>(c * sum_opt);  // gradients down, parameters up
    if (offload == Offload::kParams) bytes += 2.0 * static_cast<double>(c * sum_shard);
    // The GPUs share the host's links; on a CPU (an emulated offload, PlanOne only) a copy reads
    // and writes host memory.
    p.step.copies = N * bytes / (cuda ? r.rates.host_device_bandwidth : r.rates.cpu_memory_bandwidth / 2);
  }
  if (!cuda || offload != Offload::kNone) {
    p.step.cpu_optimizer = N * static_cast<double>(sum_opt) / AdamWRate(r);
  } else {
    // AdamW in tensor ops: about 40 bytes read and written per parameter (fp32 master, moments,
    // gradient, parameter and the temporaries).
    p.step.device_optimizer = 40.0 * static_cast<double>(sum_opt) / r.rates.gpu_memory_bandwidth;
  }
  Decide(r, &p);
  return p;
}

Plan InferPlan(const PlanRequest& r, const zero::Layout& layout, Offload offload) {
  const engine::ModelConfig& m = r.config;
  const int64_t c = Elem(r.precision);
  const bool cuda = r.device == DeviceKind::kCuda;
  Plan p;
  p.zero = offload == Offload::kParams ? 3 : 0;
  p.offload = zero::OffloadName(offload);
  Breakdown& b = p.breakdown;
  int64_t n = 0, max_unit = 0, streamed_peak = 0;
  for (int u = 0; u < layout.size(); ++u) {
    const int64_t numel = layout.unit(u).numel;
    n += numel;
    max_unit = std::max(max_unit, numel);
    // Before unit u runs, u is gathered and the next one's gather starts through a staging copy.
    const int64_t next = layout.unit(layout.prefetch_after(u)).numel;
    streamed_peak = std::max(streamed_peak, c * (numel + 2 * next));
  }
  const int64_t C = m.n_embd, F = m.ffn(), H = m.n_head, T = r.seq_len, B = r.micro_batch;
  const int64_t tok = B * T;
  if (offload == Offload::kParams) {
    b.params_host = c * n;
    b.peak_device_states = streamed_peak;
  } else {
    b.params_device = c * n;
    b.peak_device_states = c * n;
  }
  b.kv_cache = m.n_layer * 2 * B * T * C * c;
  if (cuda) {
    // The rank's pool, allocated whole at load: its budget in blocks, at most kRankMaxBatch
    // sequences of the model's positions, at least one.
    const int64_t per_block = m.n_layer * 2 * kKvBlockTokens * C * c;
    const int64_t per_sequence = (m.n_positions + kKvBlockTokens - 1) / kKvBlockTokens;
    const int64_t blocks =
        std::max(per_sequence, std::min(kRankKvPoolBytesGpu / per_block, kRankMaxBatch * per_sequence));
    b.kv_cache = std::max(b.kv_cache, blocks * per_block);
  }
  // The prefill's largest layer: residual, LayerNorm output, qkv, attention, c_fc and GELU outputs.
  int64_t layer = tok * (6 * C + 2 * F) * c;
  if (FusedAttention(r)) {
    layer += tok * C * c;
  } else {
    layer += tok * H * T * (8 + c) + T * T;  // fp32 scores, softmax, its compute-dtype copy
  }
  b.logits = B * m.vocab_size * (4 + c);
  b.activations = layer + b.logits;
  b.workspace = 0;
  const int64_t device_peak = b.peak_device_states + b.kv_cache + b.activations;
  const int64_t ckpt = r.checkpoint_bytes > 0 ? r.checkpoint_bytes : c * n;
  // The checkpoint's largest tensor (the token embedding, or a block's MLP weight), in the file's
  // bytes per parameter: what of the map a load that drops pages as it goes holds at once.
  const int64_t largest_file_tensor =
      std::max(m.vocab_size * m.n_embd, m.ffn() * m.n_embd) * std::max<int64_t>(ckpt / std::max<int64_t>(n, 1), 1);
  if (cuda) {
    b.allocator_slack = static_cast<int64_t>(r.rates.allocator_slack * static_cast<double>(device_peak));
    b.cuda_context = r.rates.cuda_context_bytes;
    p.gpu_bytes = device_peak + b.allocator_slack + b.cuda_context;
    b.base_rss = r.rates.rank_base_rss_cuda;
    // Without offload the weights go from the map straight to the device; with offload they load
    // into host memory, then the streaming engine copies them unit by unit into its shards.
    // With offload they load into host memory, dropping the checkpoint's pages tensor by tensor.
    b.load_host = offload == Offload::kParams ? c * n + largest_file_tensor : ckpt;
    // With offload each parameter is freed once it is in its unit's fp32 buffer (plan.h): one copy
    // of the weights and the unit being built in fp32.
    const int64_t build = offload == Offload::kParams ? c * n + 4 * max_unit : 0;
    b.host_build = build;
    b.host_peak = b.base_rss + std::max(b.load_host, build);
    b.host_resident = b.base_rss + b.params_host;
    b.request = b.activations + static_cast<int64_t>(r.rates.allocator_slack * static_cast<double>(b.activations));
  } else {
    p.gpu_bytes = device_peak;
    b.base_rss = r.rates.rank_base_rss_cpu_infer;
    b.load_host = offload == Offload::kParams ? c * n + largest_file_tensor : ckpt + c * n;
    // An emulated offload builds its shards as on a GPU; running, its "device" is host memory: the
    // host shards, the device's peak, and the unit the stream copies from its shard (c max_unit).
    const int64_t build = offload == Offload::kParams ? c * n + 4 * max_unit : 0;
    const int64_t emulated = offload == Offload::kParams ? c * max_unit : 0;
    b.host_build = build;
    b.host_peak = b.base_rss + std::max({b.load_host, build, b.params_host + device_peak + emulated});
    b.host_resident = b.base_rss + c * n;
    b.request = b.kv_cache + b.activations;
  }
  p.host_bytes = b.host_peak;
  // One decode step at batch B: the weights are read once (streamed over PCIe with offload).
  const double weight_bytes = static_cast<double>(c * n);
  const double flops = 2.0 * static_cast<double>(n * B);
  if (cuda) {
    p.step.compute = std::max(flops / GpuFlops(r), weight_bytes / r.rates.gpu_memory_bandwidth);
    if (offload == Offload::kParams) p.step.copies = weight_bytes / r.rates.host_device_bandwidth;
  } else {
    p.step.compute = std::max(flops / r.rates.cpu_flops, weight_bytes / r.rates.cpu_memory_bandwidth);
    // An emulated offload (PlanOne only) copies every unit into its gather buffer each step.
    if (offload == Offload::kParams) p.step.copies = 2 * weight_bytes / r.rates.cpu_memory_bandwidth;
  }
  Decide(r, &p);
  return p;
}

Status Validate(const PlanRequest& r) {
  if (r.mode != "finetune" && r.mode != "infer") return InvalidArgument("mode must be finetune or infer, not '" + r.mode + "'");
  if (r.precision != "fp32" && r.precision != "bf16" && r.precision != "fp16") {
    return InvalidArgument("precision must be fp32, bf16 or fp16, not '" + r.precision + "'");
  }
  if (r.gpus < 1 || r.gpus > 4096) return InvalidArgument("gpus must be between 1 and 4096");
  if (r.device == DeviceKind::kCuda && r.gpu_memory_bytes <= 0) return InvalidArgument("gpu memory must be positive");
  if (r.gpu_memory_bytes < 0) return InvalidArgument("gpu memory must not be negative");
  if (r.host_memory_bytes < 0) return InvalidArgument("host memory must not be negative");
  if (r.micro_batch < 1) return InvalidArgument("micro_batch must be at least 1");
  if (r.seq_len < 1) return InvalidArgument("seq_len must be at least 1");
  if (r.seq_len > r.config.n_positions) {
    return InvalidArgument("seq_len " + std::to_string(r.seq_len) + " above the model's n_positions " +
                           std::to_string(r.config.n_positions));
  }
  return Status::Ok();
}

}  // namespace

Result<std::vector<Plan>> PlanAll(const PlanRequest& request) {
  FUJI_RETURN_IF_ERROR(Validate(request));
  engine::ModelConfig config = request.config;
  FUJI_RETURN_IF_ERROR(config.Validate());
  PlanRequest r = request;
  r.config = config;
  const zero::Layout layout(config);
  // A CPU device's memory is the host's: offload would only copy, so it is no choice there.
  const bool offload = r.device == DeviceKind::kCuda;
  std::vector<Plan> plans;
  if (r.mode == "infer") {
    plans.push_back(InferPlan(r, layout, Offload::kNone));
    if (offload) plans.push_back(InferPlan(r, layout, Offload::kParams));
    return plans;
  }
  for (int stage = 0; stage <= 3; ++stage) {
    plans.push_back(FinetunePlan(r, layout, stage, Offload::kNone));
    if (offload) plans.push_back(FinetunePlan(r, layout, stage, Offload::kOptimizer));
    if (offload && stage == 3) plans.push_back(FinetunePlan(r, layout, stage, Offload::kParams));
  }
  return plans;
}

Result<Plan> PlanOne(const PlanRequest& request, int zero, const std::string& offload) {
  FUJI_RETURN_IF_ERROR(Validate(request));
  PlanRequest r = request;
  FUJI_RETURN_IF_ERROR(r.config.Validate());
  Offload o = Offload::kNone;
  if (offload == "optimizer" && r.mode == "finetune") {
    o = Offload::kOptimizer;
  } else if (offload == "params") {
    o = Offload::kParams;
  } else if (offload != "none") {
    return InvalidArgument("offload must be none, optimizer (fine-tunes) or params, not '" + offload + "'");
  }
  const zero::Layout layout(r.config);
  if (r.mode == "infer") return InferPlan(r, layout, o);
  if (zero < 0 || zero > 3) return InvalidArgument("zero must be 0, 1, 2 or 3");
  if (o == Offload::kParams && zero != 3) return InvalidArgument("offload params needs zero 3");
  return FinetunePlan(r, layout, zero, o);
}

std::optional<Plan> Recommend(const std::vector<Plan>& plans) {
  const Plan* best = nullptr;
  for (const Plan& p : plans) {
    if (!p.fits) continue;
    if (best == nullptr || p.step_seconds < best->step_seconds ||
        (p.step_seconds == best->step_seconds && p.gpu_bytes < best->gpu_bytes)) {
      best = &p;
    }
  }
  if (best == nullptr) return std::nullopt;
  return *best;
}

nlohmann::json PlanToJson(const Plan& p) {
  const Breakdown& b = p.breakdown;
  return {{"zero", p.zero},
          {"offload", p.offload},
          {"gpu_bytes", p.gpu_bytes},
          {"host_bytes", p.host_bytes},
          {"fits", p.fits},
          {"step_seconds", p.step_seconds},
          {"why_not", p.why_not},
          {"breakdown",
           {{"params_device_bytes", b.params_device},
            {"params_host_bytes", b.params_host},
            {"grads_device_bytes", b.grads_device},
            {"grads_host_bytes", b.grads_host},
            {"optimizer_device_bytes", b.optimizer_device},
            {"optimizer_host_bytes", b.optimizer_host},
            {"peak_device_states_bytes", b.peak_device_states},
            {"activations_bytes", b.activations},
            {"logits_bytes", b.logits},
            {"kv_cache_bytes", b.kv_cache},
            {"workspace_bytes", b.workspace},
            {"allocator_slack_bytes", b.allocator_slack},
            {"cuda_context_bytes", b.cuda_context},
            {"load_host_bytes", b.load_host},
            {"base_rss_bytes", b.base_rss},
            {"host_peak_per_rank_bytes", b.host_peak},
            {"host_resident_per_rank_bytes", b.host_resident},
            {"request_bytes", b.request}}},
          {"step",
           {{"compute_s", p.step.compute},
            {"communication_s", p.step.communication},
            {"copies_s", p.step.copies},
            {"cpu_optimizer_s", p.step.cpu_optimizer},
            {"device_optimizer_s", p.step.device_optimizer}}}};
}

Result<engine::ModelConfig> ResolveModel(const std::string& name, int64_t* checkpoint_bytes) {
  if (checkpoint_bytes != nullptr) *checkpoint_bytes = 0;
  std::error_code ec;
  if (name.find('/') != std::string::npos || std::filesystem::is_directory(name, ec)) {
    if (!std::filesystem::is_directory(name, ec)) return NotFound(name + ": no such model directory");
    FUJI_ASSIGN_OR_RETURN(engine::ModelConfig config, engine::LoadModelConfig(name));
    if (checkpoint_bytes != nullptr) {
      for (const auto& entry : std::filesystem::directory_iterator(name, ec)) {
        const std::string file = entry.path().filename().string();
        const bool weights = (file.rfind("model", 0) == 0 && file.size() > 12 &&
                              file.compare(file.size() - 12, 12, ".safetensors") == 0) ||
                             (file.rfind("pytorch_model", 0) == 0 && file.size() > 4 &&
                              file.compare(file.size() - 4, 4, ".bin") == 0);
        if (weights && entry.is_regular_file(ec)) *checkpoint_bytes += static_cast<int64_t>(entry.file_size(ec));
      }
    }
    return config;
  }
  auto config = engine::ArchitectureConfig(name);
  if (!config.ok()) return InvalidArgument(config.status().message() + ", and no directory of that name");
  return config;
}

Result<int64_t> ParseSize(const std::string& text) {
  const std::string bad = "size '" + text + "' not understood: give a positive number with a unit (40GiB, 40G, 512MiB: binary; 40GB, 512MB: decimal)";
  size_t i = 0;
  while (i < text.size() && (std::isdigit(static_cast<unsigned char>(text[i])) || text[i] == '.')) ++i;
  if (i == 0) {
    if (!text.empty() && text[0] == '-') return InvalidArgument("size '" + text + "' is negative");
    return InvalidArgument(bad);
  }
  const std::string number = text.substr(0, i);
  if (std::count(number.begin(), number.end(), '.') > 1) return InvalidArgument(bad);
  std::string unit = text.substr(i);
  for (char& ch : unit) ch = static_cast<char>(std::toupper(static_cast<unsigned char>(ch)));
  double scale = 0;
  if (unit.empty() || unit == "B") scale = 1;
  else if (unit == "K" || unit == "KIB") scale = 1024.0;
  else if (unit == "M" || unit == "MIB") scale = 1024.0 * 1024;
  else if (unit == "G" || unit == "GIB") scale = 1024.0 * 1024 * 1024;
  else if (unit == "T" || unit == "TIB") scale = 1024.0 * 1024 * 1024 * 1024;
  else if (unit == "KB") scale = 1e3;
  else if (unit == "MB") scale = 1e6;
  else if (unit == "GB") scale = 1e9;
  else if (unit == "TB") scale = 1e12;
  else return InvalidArgument(bad);
  const double value = std::strtod(number.c_str(), nullptr) * scale;
  if (!(value >= 1)) return InvalidArgument("size '" + text + "' must be positive");
  if (value > 9.0e18) return InvalidArgument("size '" + text + "' too large");
  return static_cast<int64_t>(std::llround(value));
}

std::string FormatGiB(int64_t bytes) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.1f GiB", static_cast<double>(bytes) / (1024.0 * 1024 * 1024));
  return buf;
}

Result<TrainingEstimate> EstimateTraining(double tokens_per_s, double corpus_tokens, double epochs) {
  if (!(tokens_per_s > 0) || !std::isfinite(tokens_per_s)) return InvalidArgument("tokens per second must be positive");
  if (!(corpus_tokens > 0) || !std::isfinite(corpus_tokens)) return InvalidArgument("corpus tokens must be positive");
  if (!(epochs > 0) || !std::isfinite(epochs)) return InvalidArgument("epochs must be positive");
  TrainingEstimate e;
  e.tokens = corpus_tokens * epochs;
  e.seconds = e.tokens / tokens_per_s;
  return e;
}

std::string FormatDuration(double seconds) {
  char buf[64];
  const double minute = 60, hour = 3600, day = 86400, week = 7 * day, month = 30.44 * day;
  if (seconds < minute) std::snprintf(buf, sizeof buf, "%.0f s", seconds);
  else if (seconds < hour) std::snprintf(buf, sizeof buf, "%.1f min", seconds / minute);
  else if (seconds < 2 * day) std::snprintf(buf, sizeof buf, "%.1f h", seconds / hour);
  else if (seconds < 2 * week) std::snprintf(buf, sizeof buf, "%.1f days", seconds / day);
  else if (seconds < 2 * month) std::snprintf(buf, sizeof buf, "%.1f weeks", seconds / week);
  else std::snprintf(buf, sizeof buf, "%.1f months", seconds / month);
  return buf;
}

}  // namespace fuji::plan
