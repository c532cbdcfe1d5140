// fuji's ZeRO: data-parallel training of the GPT-2 network with the model states sharded over
// the ranks of a process group, stage by stage:
//
//   stage 0  every rank holds everything; gradients are all-reduced (plain data parallelism)
//   stage 1  the optimizer states (fp32 master weights, moments) are sharded: rank r updates
//            its 1/N of each unit, then the updated parameters are all-gathered
//   stage 2  also the gradients: each unit's gradients are reduce-scattered into their owners'
//            fp32 shards as soon as the unit's backward is done, then freed
//   stage 3  also the parameters: a unit's parameters are all-gathered just before its turn in
//            forward and again in backward (the next unit's gather overlaps the current one's
//            compute) and released right after
//
// The model is cut into units, the buckets of every collective: "embedding" (wte, wpe), each
// block "h.<l>", and "final" (ln_f, and lm_head when untied). Each unit is one flat buffer padded
// to a multiple of N, so shards are equal and the padding stays zero. The tied input/output
// embedding is one tensor under every stage: its gradient collects both uses before it is reduced.
// The units, their shards, what each stage keeps where, and the order of a micro-batch's gathers,
// releases and reductions are the ZeRO layout's (lib/zero/layout.h, torch-free, which the
// checkpoint format and the planner read too): this engine allocates what zero::StatesOf says
// and runs zero::TrainingSchedule.
//
// Backward runs unit by unit (each block's graph hangs off a detached input), which is what lets
// stage 3 gather before and release after each block, stage 2 reduce each unit while the next
// one computes, and activation checkpointing recompute one block at a time.
//
// Offload: "optimizer" keeps master weights, moments and the reduced gradient shards in host
// memory (pinned when the device is a GPU) and steps them with the multithreaded CPU AdamW;
// "params" (stage 3) also keeps the parameter shards in host memory, streamed to the device
// unit by unit for the gathers.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>

#include "lib/common/status.h"
#include "worker/engine/checkpoint.h"
#include "worker/engine/gpt2_model.h"
#include "worker/optim/adamw.h"
#include "lib/zero/layout.h"

namespace fuji::dist {
class Communicator;
}

namespace fuji::train {

using zero::Offload;
using zero::OffloadName;
using zero::ParseOffload;  // none | optimizer | params

struct ZeroOptions {
  int stage = 0;                           // 0..3
  Offload offload = Offload::kNone;        // kParams needs stage 3
  at::ScalarType dtype = at::kFloat;       // compute precision of parameters and gradients
  at::Device device = at::kCPU;
  bool activation_checkpointing = false;
  int optimizer_threads = 0;               // CPU AdamW threads; 0: hardware concurrency
  bool inference_only = false;             // no gradients, no optimizer state (streaming inference)
  Status Validate() const;
};

// Bytes of the model states this rank holds, by kind and place: the tensors it allocated, which
// zero::BytesOf predicts. On a CPU device, "device" and "host" are the same memory, kept apart in
// the accounting so that offload shows where the bytes would live.
struct MemoryAccount : zero::StateBytes {
  int64_t peak_device_states = 0;  // peak of device model-state bytes, transient gathers included
};

struct StepStats {
  double grad_norm = 0;  // of the true (unscaled, averaged) gradient, before clipping
  bool skipped = false;  // fp16 overflow: no update, loss scale halved by the caller
};

// One unit's optimizer state over this rank's checkpoint range [begin, end) of the unit's
// unpadded flat numbering (the partition of the checkpoint format, whatever the stage).
struct UnitState {
  int64_t begin = 0, end = 0;
  std::vector<float> master, exp_avg, exp_avg_sq;
};

struct PhaseTimes {
  // forward: the embeddings and the blocks; the head, fused with its loss, runs forward and
  // backward together and counts in backward.
  double forward_ms = 0, backward_ms = 0, optimizer_ms = 0;
  double comm_wait_ms = 0;  // blocked on collectives (inside the other three)
};

// Fills `out` ([end - begin] fp32, on the host) with elements [begin, end) of `unit`'s unpadded
// flat numbering, each value as it is in the compute dtype (rounded through it when that is half).
// The engine asks for each unit once, in order: the whole unit at stages 0-2, the rank's shard of
// it at stage 3.
using UnitSource = std::function<Status(const zero::Unit& unit, int64_t begin, int64_t end, const at::Tensor& out)>;

class ZeroModel {
 public:
  // params: the full model in ParameterLayout order, any dtype, on the CPU; each rank keeps only
  // what its stage says (the tensors are dropped unit by unit as they are taken). comm may be
  // null for a single process, which then runs no collectives.
  static Result<std::unique_ptr<ZeroModel>> Create(const engine::ModelConfig& config,
                                                   std::vector<at::Tensor> params,
                                                   const ZeroOptions& options,
                                                   dist::Communicator* comm);
  // Builds the rank's states from a source of unit ranges: at stage 3 only the rank's shard of
  // each unit is ever asked for, so a rank never holds more of the model than its share and one
  // unit's range in fp32.
  static Result<std::unique_ptr<ZeroModel>> Create(const engine::ModelConfig& config, const UnitSource& source,
                                                   const ZeroOptions& options, dist::Communicator* comm);
  // Loads a checkpoint directory (any layout engine::LoadModel reads) straight into the rank's
  // states: each unit's range (stage 3: the rank's shard; else the whole unit) is read from the
  // mapped files, converted to the compute dtype as it is read, and its file pages dropped before
  // the next unit, so that the peak host memory while loading is the states and one unit's range.
  // FUJI_LOAD_WHOLE=1 loads the whole model on the host first and then keeps the rank's share (the
  // former path: every rank holds the whole model once, plus its file pages, for comparison).
  static Result<std::unique_ptr<ZeroModel>> Load(const std::string& dir, const ZeroOptions& options,
                                                 dist::Communicator* comm, engine::LoadReport* report = nullptr);
  // The source Load reads from: `reader`'s parameters, converted through `dtype`, its pages
  // dropped after each unit. The reader must outlive the source.
  static UnitSource CheckpointSource(engine::CheckpointReader* reader, at::ScalarType dtype);
  ~ZeroModel();

  // Forward and backward of one micro-batch (ids, targets: [B, T] int64 on the CPU); the
  // gradients accumulate until Step. last_micro marks the last micro-batch before Step (stages 0
  // and 1 reduce only then). Returns the micro-batch's mean loss.
  double ForwardBackward(const at::Tensor& ids, const at::Tensor& targets, double loss_scale,
                         bool last_micro);
  // Mean loss of a batch without gradients.
  double EvalLoss(const at::Tensor& ids, const at::Tensor& targets);
  // Clips and applies AdamW (config.lr is this step's rate) to the accumulated gradients, whose
  // true value is their sum / grad_divisor (loss scale excluded). clip <= 0: no clipping.
  StepStats Step(const optim::AdamWConfig& config, int64_t step, double grad_divisor,
                 double loss_scale, double clip);

  const engine::ModelConfig& config() const;
  MemoryAccount memory() const;
  int num_units() const;
  // Optimizer state for the checkpoint: this rank's partition range of every unit, on the host.
  std::vector<UnitState> SaveState() const;
  // The range of `unit` this rank must be given on resume (all of it at stage 0).
  std::pair<int64_t, int64_t> LoadRange(int unit) const;
  // Sets the optimizer state of LoadRange(unit) and the parameters derived from the master
  // weights. Call for every unit, then FinishLoad().
  void LoadState(int unit, const float* master, const float* exp_avg, const float* exp_avg_sq);
  void FinishLoad();
  // The network for inference (no gradients). At stage 3 it streams: each unit's parameters are
  // gathered (from host memory with offload params) just before their use and released after,
  // the next unit's gather overlapping the current one's compute, so a model larger than the
  // device's memory still runs.
  const engine::Gpt2Model& InferenceModel();

  // Milliseconds spent since construction.
  PhaseTimes times() const;

 private:
  struct Impl;
  explicit ZeroModel(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace fuji::train
