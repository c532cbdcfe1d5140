// The ZeRO engine: units as padded flat buffers, gathers and releases (stage 3), reductions
// overlapped with backward, and the sharded AdamW step. See zero_model.h.
#include "worker/train/zero_model.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <deque>
#include <limits>
#include <tuple>

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include "worker/dist/communicator.h"

namespace fuji::train {
namespace {

using Clock = std::chrono::steady_clock;

int64_t Bytes(const at::Tensor& t) {
  return t.defined() ? t.numel() * static_cast<int64_t>(t.element_size()) : 0;
}

optim::Precision ToPrecision(at::ScalarType t) {
  if (t == at::kBFloat16) return optim::Precision::kBF16;
  if (t == at::kHalf) return optim::Precision::kF16;
  return optim::Precision::kF32;
}

// Frees a buffer's memory while every tensor on its storage (the parameters) keeps its shape;
// Restore gives the same storage fresh memory, which those tensors then see. This is how a
// stage-3 unit's parameters can be dropped after forward while the autograd graph still holds them.
void ReleaseStorage(const at::Tensor& t) {
  const at::Storage& s = t.storage();
  s.set_data_ptr_noswap(at::DataPtr(nullptr, t.device()));
  s.set_nbytes(0);
}

void RestoreStorage(const at::Tensor& t, size_t nbytes) {
  const at::Storage& s = t.storage();
  s.set_data_ptr_noswap(s.allocator()->allocate(nbytes));
  s.set_nbytes(nbytes);
}

struct Segment {
  int64_t offset = 0;  // within the optimizer range
  int64_t length = 0;
  bool decay = false;
};

struct Unit {
  const zero::Unit* layout = nullptr;  // its parameters: layout index, offset, shape
  zero::UnitStates plan;               // what this rank holds of it: sizes, ranges, places
  int64_t numel() const { return layout->numel; }
  int64_t shard() const { return plan.sharding.shard; }
  int64_t padded() const { return plan.sharding.padded; }
  int64_t opt_begin() const { return plan.opt_begin; }  // the padded-flat range this rank's
  int64_t opt_len() const { return plan.opt_len; }      // optimizer updates

  at::Tensor full;    // [padded] compute dtype; its storage is released between uses at stage 3
  size_t full_nbytes = 0;
  bool gathered = false;
  at::Tensor own;     // [opt_len] compute dtype: the parameters this rank's optimizer writes
  at::Tensor pshard;  // stage 3: [shard] persistent parameter shard (host memory with offload params)
  at::Tensor staging; // stage 3 offload params: the shard on the device during a gather
  std::unique_ptr<dist::Work> gather_work;

  at::Tensor gfull;   // [padded] compute dtype gradients
  at::Tensor gred;    // [shard] reduce-scatter output
  at::Tensor gacc;    // stages 2/3: [shard] fp32 accumulated reduced gradients
  std::unique_ptr<dist::Work> reduce_work;

  at::Tensor master, exp_avg, exp_avg_sq;  // [opt_len] fp32
  bool master_is_param = false;
  std::vector<Segment> segments;
};

}  // namespace

Status ZeroOptions::Validate() const {
  if (stage < 0 || stage > 3) return InvalidArgument("zero must be 0, 1, 2 or 3");
  if (offload == Offload::kParams && stage != 3) return InvalidArgument("offload params needs zero 3");
  if (dtype != at::kFloat && dtype != at::kBFloat16 && dtype != at::kHalf) {
    return InvalidArgument("precision must be fp32, bf16 or fp16");
  }
  return Status::Ok();
}

struct ZeroModel::Impl {
  engine::ModelConfig config;
  zero::Layout layout;
  ZeroOptions options;
  dist::Communicator* comm = nullptr;
  int rank = 0, world = 1;
  zero::ZeroConfig zero_config;
  zero::Schedule schedule;  // of a training micro-batch
  std::vector<Unit> units;
  std::vector<at::Tensor> params;  // compute tensors on the units' storages, requires_grad
  std::unique_ptr<engine::Gpt2Model> model;
  optim::CpuAdamW cpu_adamw;
  at::TensorOptions compute, host_compute, host_f32, dev_f32;
  bool host_optimizer = false;  // the optimizer runs on the CPU (offload, or a CPU device)
  double comm_wait_ms = 0, forward_ms = 0, backward_ms = 0, optimizer_ms = 0;
  int64_t device_states = 0, peak_device_states = 0;
  // With a GPU and the optimizer on the host: pinned staging for one unit's gradients (stages 0
  // and 1) and updated parameters.
  at::Tensor grad_staging, param_staging;

  Impl(const engine::ModelConfig& model, int threads) : config(model), layout(model), cpu_adamw(threads) {}

  void Track(int64_t delta) {
    device_states += delta;
    peak_device_states = std::max(peak_device_states, device_states);
  }

  template <typename F>
  void Timed(F&& f) {
    const auto start = Clock::now();
    f();
    comm_wait_ms += std::chrono::duration<double, std::milli>(Clock::now() - start).count();
  }

  // ---- parameters (stage 3 gathers) ----

  void StartGather(int u) {
    Unit& unit = units[static_cast<size_t>(u)];
    if (options.stage < 3 || unit.gathered) return;
    RestoreStorage(unit.full, unit.full_nbytes);
    Track(static_cast<int64_t>(unit.full_nbytes));
    unit.gathered = true;
    at::Tensor source = unit.pshard;
    if (unit.plan.params.place == zero::Place::kHost) {  // offload params: through the device
      unit.staging = at::empty({unit.shard()}, compute);
      unit.staging.copy_(unit.pshard, /*non_blocking=*/true);
      source = unit.staging;
    }
    if (comm == nullptr) {
      unit.full.copy_(source);
      unit.staging = at::Tensor();
      return;
    }
    unit.gather_work = comm->AllGatherAsync(source, unit.full);
  }

  void FinishGather(int u) {
    Unit& unit = units[static_cast<size_t>(u)];
    if (options.stage < 3) return;
    StartGather(u);
    if (unit.gather_work) {
      Timed([&] { unit.gather_work->Wait(); });
      unit.gather_work.reset();
      unit.staging = at::Tensor();
    }
  }

  void Release(int u) {
    Unit& unit = units[static_cast<size_t>(u)];
    if (options.stage < 3 || !unit.gathered) return;
    if (unit.gather_work) {
      Timed([&] { unit.gather_work->Wait(); });
      unit.gather_work.reset();
      unit.staging = at::Tensor();
    }
    ReleaseStorage(unit.full);
    Track(-static_cast<int64_t>(unit.full_nbytes));
    unit.gathered = false;
  }

  // ---- gradients ----

  // Points the unit's parameter gradients at its flat gradient buffer, which autograd then
  // accumulates into in place.
  void AttachGrads(int u) {
    Unit& unit = units[static_cast<size_t>(u)];
    if (!unit.gfull.defined()) {
      unit.gfull = at::zeros({unit.padded()}, compute);
      Track(Bytes(unit.gfull));
    }
    for (const zero::UnitParam& info : unit.layout->params) {
      at::Tensor& p = params[static_cast<size_t>(info.index)];
      p.mutable_grad() = unit.gfull.narrow(0, info.offset, info.numel).view(p.sizes());
    }
  }

  // After backward: any gradient autograd did not accumulate in place goes into the buffer.
  void CollectGrads(int u) {
    Unit& unit = units[static_cast<size_t>(u)];
    for (const zero::UnitParam& info : unit.layout->params) {
      at::Tensor& p = params[static_cast<size_t>(info.index)];
      at::Tensor view = unit.gfull.narrow(0, info.offset, info.numel);
      const at::Tensor& g = p.grad();
      if (g.defined() && g.data_ptr() != view.data_ptr()) view.view(p.sizes()).add_(g);
      p.mutable_grad() = at::Tensor();
    }
  }

  // Starts the unit's reduction: every micro-batch at stages 2 and 3, the last one before a
  // step at stages 0 and 1 (their full gradients accumulate locally until then).
  void StartReduce(int u, bool last_micro) {
    Unit& unit = units[static_cast<size_t>(u)];
    CollectGrads(u);
    if (options.stage <= 1 && !last_micro) return;
    if (options.stage == 0) {
      if (comm != nullptr) unit.reduce_work = comm->AllReduceSumAsync(unit.gfull);
      return;
    }
    if (comm == nullptr) {
      unit.gred = unit.gfull.narrow(0, 0, unit.shard());
      return;
    }
    unit.gred = at::empty({unit.shard()}, compute);
    Track(Bytes(unit.gred));
    unit.reduce_work = comm->ReduceScatterSumAsync(unit.gfull, unit.gred);
  }

  void FinishReduce(int u) {
    Unit& unit = units[static_cast<size_t>(u)];
    if (unit.reduce_work) {
      Timed([&] { unit.reduce_work->Wait(); });
      unit.reduce_work.reset();
    }
    if (options.stage >= 2 && unit.gred.defined()) {
      // Accumulate in fp32 (on the host with offload), then drop the full gradients.
      if (unit.gacc.device() == unit.gred.device()) {
        unit.gacc.add_(unit.gred);
      } else {
        unit.gacc.add_(unit.gred.to(unit.gacc.device()));
      }
      if (comm != nullptr) Track(-Bytes(unit.gred));
      unit.gred = at::Tensor();
      Track(-Bytes(unit.gfull));
      unit.gfull = at::Tensor();
    }
  }

  // ---- forward and backward ----

  at::Tensor Loss(const at::Tensor& hidden, const at::Tensor& targets) {
    at::Tensor logits = model->Logits(model->FinalNorm(hidden));
    return at::cross_entropy_loss(logits.to(at::kFloat), targets.reshape({-1}));
  }

  // The head fused with its loss, forward and backward in chunks of rows: the final LayerNorm,
  // logits through the output embedding, cross-entropy, and their gradients, without ever holding
  // the [B*T, V] logits, their log-softmax and its gradient at once (the three products are the
  // same as autograd's). The output weight's gradient goes into its attached buffer; the hidden
  // state's gradient continues through the LayerNorm's graph. Returns the mean loss.
  double HeadForwardBackward(const at::Tensor& x, const at::Tensor& targets, double loss_scale) {
    at::Tensor h = model->FinalNorm(x);
    const at::Tensor& weight = params[static_cast<size_t>(
        config.tie_word_embeddings ? engine::param_index::kWte : engine::param_index::LmHead(config))];
    at::Tensor dweight = weight.grad();
    at::Tensor dh = at::empty_like(h);
    at::Tensor loss_sum = at::zeros({}, at::TensorOptions().dtype(at::kFloat).device(h.device()));
    {
      at::NoGradGuard no_grad;
      const at::Tensor hd = h.detach(), w = weight.detach(), t = targets.reshape({-1, 1});
      const int64_t rows = hd.size(0);
      const double scale = loss_scale / static_cast<double>(rows);
      for (int64_t r = 0; r < rows; r += zero::kHeadChunkRows) {
        const int64_t n = std::min(zero::kHeadChunkRows, rows - r);
        const at::Tensor hc = hd.narrow(0, r, n), tc = t.narrow(0, r, n);
        at::Tensor logits = at::mm(hc, w.t()).to(at::kFloat);  // [n, V]
        const at::Tensor lse = at::logsumexp(logits, 1, /*keepdim=*/true);
        loss_sum.add_((lse - logits.gather(1, tc)).sum());  // one device sync at the end, not per chunk
        // d(loss)/d(logits) = softmax - one_hot, times the loss scale over the rows.
        logits.sub_(lse).exp_();
        logits.scatter_add_(1, tc, at::full({n, 1}, -1.0, logits.options()));
        logits.mul_(scale);
        const at::Tensor g = logits.to(w.scalar_type());
        dh.narrow(0, r, n).copy_(at::mm(g, w));
        dweight.addmm_(g.t(), hc);
      }
    }
    h.backward(dh);
    return loss_sum.item<double>() / static_cast<double>(h.size(0));
  }

  // One micro-batch: the layout's schedule (zero::TrainingSchedule: gathers, releases and
  // reductions around the units' compute), forward then backward, each block's graph starting at
  // a detached input.
  double ForwardBackward(const at::Tensor& ids_cpu, const at::Tensor& targets_cpu, double loss_scale,
                         bool last_micro) {
    const int64_t B = ids_cpu.size(0), T = ids_cpu.size(1), L = config.n_layer;
    at::Tensor ids = ids_cpu.to(options.device), targets = targets_cpu.to(options.device);
    const bool checkpoint = options.activation_checkpointing;
    at::Tensor x0;
    std::vector<at::Tensor> inputs(static_cast<size_t>(L + 1)), outputs(static_cast<size_t>(L));
    double loss_value = 0;
    auto run = [&](const zero::Action& a) {
      const size_t i = static_cast<size_t>(a.layer);
      switch (a.op) {
        case zero::Op::kStartGather: StartGather(a.unit); break;
        case zero::Op::kFinishGather: FinishGather(a.unit); break;
        case zero::Op::kRelease: Release(a.unit); break;
        case zero::Op::kAttachGrads: AttachGrads(a.unit); break;
        case zero::Op::kStartReduce: StartReduce(a.unit, last_micro); break;
        case zero::Op::kFinishReduce: FinishReduce(a.unit); break;
        case zero::Op::kEmbed:
          x0 = model->Embed(ids, 0);
          inputs[0] = x0.detach().requires_grad_(true);
          break;
        case zero::Op::kBlockForward: {
          at::Tensor out;
          if (checkpoint) {
            at::NoGradGuard no_grad;
            out = model->Block(a.layer, inputs[i], B, T, nullptr);
          } else {
            out = model->Block(a.layer, inputs[i], B, T, nullptr);
            outputs[i] = out;
          }
          inputs[i + 1] = out.detach().requires_grad_(true);
          break;
        }
        case zero::Op::kHead:
          // Final LayerNorm and the tied embedding, whose gradient collects both uses; its
          // forward runs here with its backward, and counts as backward time.
          loss_value = HeadForwardBackward(inputs[static_cast<size_t>(L)], targets, loss_scale);
          break;
        case zero::Op::kBlockBackward: {
          at::Tensor grad_out = inputs[i + 1].grad();
          if (checkpoint) {
            at::Tensor out = model->Block(a.layer, inputs[i], B, T, nullptr);
            out.backward(grad_out);
          } else {
            outputs[i].backward(grad_out);
            outputs[i] = at::Tensor();
          }
          inputs[i + 1] = at::Tensor();
          break;
        }
        case zero::Op::kEmbedBackward:
          x0.backward(inputs[0].grad());
          inputs[0] = at::Tensor();
          break;
      }
    };
    const auto forward_start = Clock::now();
    for (const zero::Action& a : schedule.forward) run(a);
    const auto backward_start = Clock::now();
    forward_ms += std::chrono::duration<double, std::milli>(backward_start - forward_start).count();
    for (const zero::Action& a : schedule.backward) run(a);
    backward_ms += std::chrono::duration<double, std::milli>(Clock::now() - backward_start).count();
    return loss_value;
  }

  double EvalLoss(const at::Tensor& ids_cpu, const at::Tensor& targets_cpu) {
    at::NoGradGuard no_grad;
    const int64_t B = ids_cpu.size(0), T = ids_cpu.size(1), L = config.n_layer;
    at::Tensor ids = ids_cpu.to(options.device), targets = targets_cpu.to(options.device);
    FinishGather(layout.embedding());
    at::Tensor x = model->Embed(ids, 0);
    Release(layout.embedding());
    for (int64_t l = 0; l < L; ++l) {
      FinishGather(layout.block(l));
      if (l + 1 < L) StartGather(layout.block(l + 1));
      x = model->Block(l, x, B, T, nullptr);
      Release(layout.block(l));
    }
    FinishGather(layout.final());
    FinishGather(layout.embedding());
    const double loss = Loss(x, targets).item<double>();
    Release(layout.final());
    Release(layout.embedding());
    return loss;
  }

  // ---- the step ----

  // The gradients the optimizer reads for a unit, over its optimizer range.
  at::Tensor OptimizerGrads(Unit& unit) {
    if (options.stage == 0) return unit.gfull;
    if (options.stage == 1) return unit.gred;
    return unit.gacc;
  }

  double SumOfSquares(const at::Tensor& g) {
    if (g.device().is_cpu()) {
      const at::Tensor c = g.contiguous();
      if (c.scalar_type() == at::kFloat) return cpu_adamw.SumOfSquares(c.data_ptr<float>(), c.numel());
      return cpu_adamw.SumOfSquares(static_cast<const uint16_t*>(c.data_ptr()), c.numel(),
                                    ToPrecision(c.scalar_type()));
    }
    return g.to(at::kDouble).pow(2).sum().item<double>();
  }

  StepStats Step(const optim::AdamWConfig& adamw, int64_t step, double grad_divisor,
                 double loss_scale, double clip) {
    const auto start = Clock::now();
    StepStats stats = StepImpl(adamw, step, grad_divisor, loss_scale, clip);
    optimizer_ms += std::chrono::duration<double, std::milli>(Clock::now() - start).count();
    return stats;
  }

  StepStats StepImpl(const optim::AdamWConfig& adamw, int64_t step, double grad_divisor,
                     double loss_scale, double clip) {
    for (int u = 0; u < static_cast<int>(units.size()); ++u) FinishReduce(u);
    StepStats stats;
    double sumsq = 0;
    for (Unit& unit : units) sumsq += SumOfSquares(OptimizerGrads(unit));
    if (options.stage >= 1 && comm != nullptr) {
      // In double: AdamW's sum of squares is a careful, thread-invariant double; fp32 here would
      // throw its precision away.
      at::Tensor t = at::full({1}, sumsq, at::TensorOptions().dtype(at::kDouble));
      if (options.device.is_cuda()) t = t.to(options.device);
      Timed([&] { comm->AllReduceSum(t); });
      sumsq = t.item<double>();
    }
    const double scale = loss_scale * grad_divisor;
    stats.grad_norm = std::sqrt(sumsq) / scale;
    if (!std::isfinite(stats.grad_norm)) {
      stats.skipped = true;
      ZeroGrads();
      return stats;
    }
    double grad_scale = scale;
    if (clip > 0) {
      const double coef = clip / (stats.grad_norm + 1e-6);
      if (coef < 1) grad_scale /= coef;
    }
    if (host_optimizer) {
      HostStep(adamw, step, static_cast<float>(grad_scale));
    } else {
      for (Unit& unit : units) DeviceStep(unit, adamw, step, grad_scale);
    }
    ZeroGrads();
    PublishParameters();
    return stats;
  }

  // The CPU AdamW, unit by unit. With a GPU, a unit's gradients come to a pinned host buffer
  // first (stages 0 and 1) and its updated parameters go back through another.
  void HostStep(const optim::AdamWConfig& adamw, int64_t step, float grad_scale) {
    for (Unit& unit : units) {
      at::Tensor grads = OptimizerGrads(unit);
      if (!grads.device().is_cpu()) {
        at::Tensor staging = grad_staging.narrow(0, 0, grads.numel());
        staging.copy_(grads);
        grads = staging;
      }
      at::Tensor out;
      if (!unit.master_is_param) {
        out = options.device.is_cuda() ? param_staging.narrow(0, 0, unit.opt_len()) : unit.own;
      }
      const size_t esize = static_cast<size_t>(grads.element_size());
      std::vector<optim::AdamWShard> shards;
      for (const Segment& s : unit.segments) {
        optim::AdamWShard shard;
        shard.master = unit.master.data_ptr<float>() + s.offset;
        shard.exp_avg = unit.exp_avg.data_ptr<float>() + s.offset;
        shard.exp_avg_sq = unit.exp_avg_sq.data_ptr<float>() + s.offset;
        shard.grad = static_cast<const char*>(grads.data_ptr()) + static_cast<size_t>(s.offset) * esize;
        shard.grad_precision = ToPrecision(grads.scalar_type());
        if (out.defined()) {
          shard.param_out = static_cast<char*>(out.data_ptr()) +
                            static_cast<size_t>(s.offset) * static_cast<size_t>(out.element_size());
          shard.param_out_precision = ToPrecision(out.scalar_type());
        }
        shard.n = s.length;
        shard.decay = s.decay;
        shards.push_back(shard);
      }
      const Status status = cpu_adamw.Step(adamw, step, grad_scale, shards);
      TORCH_CHECK(status.ok(), "AdamW: ", status.message());
      if (out.defined() && options.device.is_cuda()) unit.own.copy_(out);
    }
  }

  // torch.optim.AdamW's arithmetic with tensor ops, for optimizer states on a GPU.
  void DeviceStep(Unit& unit, const optim::AdamWConfig& c, int64_t step, double grad_scale) {
    at::Tensor g = OptimizerGrads(unit).to(at::kFloat).mul_(1.0 / grad_scale);
    for (const Segment& s : unit.segments) {
      if (s.decay) unit.master.narrow(0, s.offset, s.length).mul_(1 - c.lr * c.weight_decay);
    }
    const double bc1 = 1 - std::pow(c.beta1, static_cast<double>(step));
    const double bc2 = 1 - std::pow(c.beta2, static_cast<double>(step));
    unit.exp_avg.mul_(c.beta1).add_(g, 1 - c.beta1);
    unit.exp_avg_sq.mul_(c.beta2).addcmul_(g, g, 1 - c.beta2);
    at::Tensor denom = unit.exp_avg_sq.sqrt().div_(std::sqrt(bc2)).add_(c.eps);
    unit.master.addcdiv_(unit.exp_avg, denom, -c.lr / bc1);
    if (!unit.master_is_param) unit.own.copy_(unit.master);
  }

  void ZeroGrads() {
    for (Unit& unit : units) {
      if (options.stage <= 1 && unit.gfull.defined()) unit.gfull.zero_();
      if (options.stage == 1 && unit.gred.defined() && comm != nullptr) {
        Track(-Bytes(unit.gred));
      }
      if (options.stage == 1) unit.gred = at::Tensor();
      if (unit.gacc.defined()) unit.gacc.zero_();
    }
  }

  // Stages 1 and 2: every rank's updated shard goes to every rank.
  void PublishParameters() {
    if (options.stage == 0 || options.stage == 3 || comm == nullptr) return;
    std::vector<std::unique_ptr<dist::Work>> works;
    std::vector<at::Tensor> inputs;
    for (Unit& unit : units) {
      inputs.push_back(unit.own.clone());  // the input may not alias the output
      works.push_back(comm->AllGatherAsync(inputs.back(), unit.full));
    }
    Timed([&] {
      for (auto& w : works) w->Wait();
    });
  }

  // ---- setup ----

  // Allocates what the layout says this rank holds of each unit (zero::StatesOf), filled from
  // the full parameters, and the pinned staging of a host optimizer on a GPU.
  Status Build(const UnitSource& source) {
    const size_t count = engine::ParameterLayout(config).size();
    zero_config.stage = options.stage;
    zero_config.offload = options.offload;
    zero_config.world_size = world;
    zero_config.rank = rank;
    zero_config.compute_bytes = static_cast<int64_t>(at::elementSize(options.dtype));
    zero_config.gpu = options.device.is_cuda();
    schedule = zero::TrainingSchedule(layout, options.stage);
    params.assign(count, at::Tensor());
    for (const zero::Unit& description : layout.units()) {
      units.emplace_back();
      Unit& unit = units.back();
      unit.layout = &description;
      unit.plan = zero::StatesOf(description, zero_config);
      // The unit's values in fp32 on the host, padding zero: all of the padded unit at stages 0-2,
      // the rank's shard at stage 3 (flat index i is the padded index base + i).
      const bool sharded = options.stage == 3;
      const int64_t base = sharded ? unit.opt_begin() : 0;
      const int64_t begin = std::min(base, unit.numel());
      const int64_t end = std::min(base + (sharded ? unit.shard() : unit.padded()), unit.numel());
      at::Tensor flat = at::zeros({sharded ? unit.shard() : unit.padded()}, at::TensorOptions().dtype(at::kFloat));
      if (end > begin) FUJI_RETURN_IF_ERROR(source(description, begin, end, flat.narrow(0, begin - base, end - begin)));
      // Parameters in compute precision.
      unit.full_nbytes = static_cast<size_t>(unit.padded()) * static_cast<size_t>(at::elementSize(options.dtype));
      unit.full = at::empty({unit.padded()}, compute);
      if (options.stage < 3) {
        unit.full.copy_(flat);
        unit.gathered = true;
        Track(Bytes(unit.full));
        unit.own = unit.full.narrow(0, unit.opt_begin(), unit.opt_len());
      } else {
        // The persistent shard: this rank's, which at stage 3 is its optimizer range.
        const bool host = unit.plan.params.place == zero::Place::kHost;
        unit.pshard = at::empty({unit.shard()}, host ? host_compute : compute);
        unit.pshard.copy_(flat);
        if (!host) Track(Bytes(unit.pshard));
        unit.own = unit.pshard;
      }
      for (const zero::UnitParam& info : description.params) {
        at::Tensor p = at::empty({0}, compute);
        p.set_(unit.full.storage(), info.offset, info.shape, c10::contiguous_strides(info.shape));
        p.requires_grad_(!options.inference_only);
        params[static_cast<size_t>(info.index)] = p;
      }
      if (options.stage == 3) {
        ReleaseStorage(unit.full);
        unit.gathered = false;
      }
      if (options.inference_only) continue;
      // Optimizer state over [opt_begin, opt_begin + opt_len).
      const bool optimizer_on_device = unit.plan.moments.place == zero::Place::kDevice;
      const at::TensorOptions opt = optimizer_on_device ? dev_f32 : host_f32;
      unit.master_is_param = unit.plan.master_is_param;
      const at::Tensor opt_values = flat.narrow(0, unit.opt_begin() - base, unit.opt_len());
      unit.master = unit.master_is_param ? unit.own : opt_values.to(opt, false, true);
      unit.exp_avg = at::zeros({unit.opt_len()}, opt);
      unit.exp_avg_sq = at::zeros({unit.opt_len()}, opt);
      if (optimizer_on_device) Track(2 * Bytes(unit.exp_avg) + (unit.master_is_param ? 0 : Bytes(unit.master)));
      // Gradient storage that lives across steps.
      if (options.stage <= 1) {
        unit.gfull = at::zeros({unit.padded()}, compute);
        Track(Bytes(unit.gfull));
      } else {
        const bool host = unit.plan.grads.place == zero::Place::kHost;
        unit.gacc = at::zeros({unit.shard()}, host ? host_f32 : dev_f32);
        if (!host) Track(Bytes(unit.gacc));
      }
      // Decay segments: each parameter's overlap with the optimizer range.
      for (const zero::UnitParam& info : description.params) {
        const int64_t b = std::max(info.offset, unit.opt_begin());
        const int64_t e = std::min(info.offset + info.numel, unit.opt_begin() + unit.opt_len());
        if (b < e) unit.segments.push_back({b - unit.opt_begin(), e - b, info.decay});
      }
    }
    const zero::Staging staging = zero::StagingOf(layout, zero_config);
    if (staging.numel > 0 && !options.inference_only) {
      param_staging = at::empty({staging.numel}, host_compute);
      if (staging.grads_too) grad_staging = at::empty({staging.numel}, host_compute);
    }
    model = std::make_unique<engine::Gpt2Model>(config, params);
    return Status::Ok();
  }

  // The bytes of the tensors this rank holds, each counted at the place the layout gives it.
  MemoryAccount Memory() const {
    MemoryAccount m;
    auto add = [](const zero::Buffer& where, int64_t bytes, int64_t* device, int64_t* host) {
      *(where.place == zero::Place::kDevice ? device : host) += bytes;
    };
    for (const Unit& unit : units) {
      add(unit.plan.params, Bytes(options.stage < 3 ? unit.full : unit.pshard), &m.params_device, &m.params_host);
      add(unit.plan.grads, Bytes(options.stage <= 1 ? unit.gfull : unit.gacc), &m.grads_device, &m.grads_host);
      const int64_t opt = Bytes(unit.exp_avg) + Bytes(unit.exp_avg_sq) +
                          (unit.master_is_param ? 0 : Bytes(unit.master));
      add(unit.plan.moments, opt, &m.optimizer_device, &m.optimizer_host);
    }
    m.grads_host += Bytes(grad_staging);
    m.optimizer_host += Bytes(param_staging);
    m.peak_device_states = peak_device_states;
    return m;
  }
};

ZeroModel::ZeroModel(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
ZeroModel::~ZeroModel() = default;

Result<std::unique_ptr<ZeroModel>> ZeroModel::Create(const engine::ModelConfig& config, const UnitSource& source,
                                                     const ZeroOptions& options, dist::Communicator* comm) {
  FUJI_RETURN_IF_ERROR(options.Validate());
  auto impl = std::make_unique<Impl>(config, options.optimizer_threads);
  impl->options = options;
  impl->comm = comm;
  impl->rank = comm != nullptr ? comm->rank() : 0;
  impl->world = comm != nullptr ? comm->world_size() : 1;
  impl->compute = at::TensorOptions().dtype(options.dtype).device(options.device);
  const bool pin = options.device.is_cuda();
  impl->host_compute = at::TensorOptions().dtype(options.dtype).pinned_memory(pin);
  impl->host_f32 = at::TensorOptions().dtype(at::kFloat);
  impl->dev_f32 = at::TensorOptions().dtype(at::kFloat).device(options.device);
  impl->host_optimizer = options.offload != Offload::kNone || options.device.is_cpu();
  FUJI_RETURN_IF_ERROR(impl->Build(source));
  return std::unique_ptr<ZeroModel>(new ZeroModel(std::move(impl)));
}

Result<std::unique_ptr<ZeroModel>> ZeroModel::Create(const engine::ModelConfig& config,
                                                     std::vector<at::Tensor> params,
                                                     const ZeroOptions& options,
                                                     dist::Communicator* comm) {
  if (params.size() != engine::ParameterLayout(config).size()) {
    return InvalidArgument("parameter count does not match the layout");
  }
  // Each unit's tensors are dropped once the unit has taken its range of them.
  const UnitSource source = [&params](const zero::Unit& unit, int64_t begin, int64_t end, const at::Tensor& out) {
    for (const zero::UnitParam& info : unit.params) {
      at::Tensor& p = params[static_cast<size_t>(info.index)];
      const int64_t b = std::max(begin, info.offset), e = std::min(end, info.offset + info.numel);
      if (b < e) out.narrow(0, b - begin, e - b).copy_(p.reshape({-1}).narrow(0, b - info.offset, e - b));
      p = at::Tensor();
    }
    return Status::Ok();
  };
  return Create(config, source, options, comm);
}

UnitSource ZeroModel::CheckpointSource(engine::CheckpointReader* reader, at::ScalarType dtype) {
  return [reader, dtype](const zero::Unit& unit, int64_t begin, int64_t end, const at::Tensor& out) -> Status {
    for (const zero::UnitParam& info : unit.params) {
      const int64_t b = std::max(begin, info.offset), e = std::min(end, info.offset + info.numel);
      if (b >= e) continue;
      const at::Tensor piece = out.narrow(0, b - begin, e - b);
      if (dtype == at::kFloat) {
        FUJI_RETURN_IF_ERROR(reader->Read(static_cast<size_t>(info.index), b - info.offset, e - info.offset, piece));
      } else {
        // Through the compute dtype, as a model loaded in it would hold the values.
        const at::Tensor rounded = at::empty({e - b}, at::TensorOptions().dtype(dtype));
        FUJI_RETURN_IF_ERROR(reader->Read(static_cast<size_t>(info.index), b - info.offset, e - info.offset, rounded));
        piece.copy_(rounded);
      }
    }
    reader->ReleasePages();
    return Status::Ok();
  };
}

Result<std::unique_ptr<ZeroModel>> ZeroModel::Load(const std::string& dir, const ZeroOptions& options,
                                                   dist::Communicator* comm, engine::LoadReport* report) {
  if (const char* whole = std::getenv("FUJI_LOAD_WHOLE"); whole != nullptr && std::string(whole) == "1") {
    engine::LoadOptions load;
    load.dtype = options.dtype;
    FUJI_ASSIGN_OR_RETURN(std::unique_ptr<engine::Gpt2Model> source, engine::LoadModel(dir, load, report));
    const engine::ModelConfig config = source->config();
    std::vector<at::Tensor> weights = std::move(source->parameters());
    source.reset();
    return Create(config, std::move(weights), options, comm);
  }
  FUJI_ASSIGN_OR_RETURN(engine::CheckpointReader reader, engine::CheckpointReader::Open(dir));
  const engine::ModelConfig config = reader.config();
  FUJI_ASSIGN_OR_RETURN(std::unique_ptr<ZeroModel> model,
                        Create(config, CheckpointSource(&reader, options.dtype), options, comm));
  if (report != nullptr) {
    report->format = reader.format();
    report->bytes = reader.bytes_read();
  }
  return model;
}

double ZeroModel::ForwardBackward(const at::Tensor& ids, const at::Tensor& targets,
                                  double loss_scale, bool last_micro) {
  return impl_->ForwardBackward(ids, targets, loss_scale, last_micro);
}

double ZeroModel::EvalLoss(const at::Tensor& ids, const at::Tensor& targets) {
  return impl_->EvalLoss(ids, targets);
}

StepStats ZeroModel::Step(const optim::AdamWConfig& config, int64_t step, double grad_divisor,
                          double loss_scale, double clip) {
  return impl_->Step(config, step, grad_divisor, loss_scale, clip);
}

const engine::ModelConfig& ZeroModel::config() const { return impl_->config; }
MemoryAccount ZeroModel::memory() const { return impl_->Memory(); }
int ZeroModel::num_units() const { return static_cast<int>(impl_->units.size()); }
PhaseTimes ZeroModel::times() const {
  return {impl_->forward_ms, impl_->backward_ms, impl_->optimizer_ms, impl_->comm_wait_ms};
}

std::pair<int64_t, int64_t> ZeroModel::LoadRange(int u) const {
  const Unit& unit = impl_->units[static_cast<size_t>(u)];
  const int64_t b = std::min(unit.opt_begin(), unit.numel());
  const int64_t e = std::min(unit.opt_begin() + unit.opt_len(), unit.numel());
  return {b, e};
}

std::vector<UnitState> ZeroModel::SaveState() const {
  std::vector<UnitState> out;
  const Impl& m = *impl_;
  for (const Unit& unit : m.units) {
    UnitState s;
    std::tie(s.begin, s.end) = zero::PartitionRange(unit.numel(), m.world, m.rank);
    const int64_t off = s.begin - unit.opt_begin(), n = s.end - s.begin;
    auto copy = [&](const at::Tensor& t, std::vector<float>* v) {
      v->resize(static_cast<size_t>(n));
      if (n == 0) return;
      at::Tensor src = t.narrow(0, off, n).to(at::kCPU, at::kFloat).contiguous();
      std::copy_n(src.data_ptr<float>(), n, v->data());
    };
    copy(unit.master, &s.master);
    copy(unit.exp_avg, &s.exp_avg);
    copy(unit.exp_avg_sq, &s.exp_avg_sq);
    out.push_back(std::move(s));
  }
  return out;
}

void ZeroModel::LoadState(int u, const float* master, const float* exp_avg, const float* exp_avg_sq) {
  Unit& unit = impl_->units[static_cast<size_t>(u)];
  const auto [b, e] = LoadRange(u);
  const int64_t n = e - b, off = b - unit.opt_begin();
  if (n <= 0) return;
  auto put = [&](const float* src, at::Tensor& dst) {
    at::Tensor host = at::from_blob(const_cast<float*>(src), {n}, at::TensorOptions().dtype(at::kFloat));
    dst.narrow(0, off, n).copy_(host);
  };
  put(master, unit.master);
  put(exp_avg, unit.exp_avg);
  put(exp_avg_sq, unit.exp_avg_sq);
  if (!unit.master_is_param) unit.own.narrow(0, off, n).copy_(unit.master.narrow(0, off, n));
}

void ZeroModel::FinishLoad() { impl_->PublishParameters(); }

const engine::Gpt2Model& ZeroModel::InferenceModel() {
  Impl* m = impl_.get();
  if (m->options.stage == 3) {
    engine::Gpt2Model::UnitHooks hooks;
    hooks.before = [m](int u) {
      m->FinishGather(u);
      m->StartGather(m->layout.prefetch_after(u));
    };
    hooks.after = [m](int u) { m->Release(u); };
    m->model->set_unit_hooks(std::move(hooks));
  }
  return *m->model;
}

}  // namespace fuji::train
