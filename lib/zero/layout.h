// The ZeRO layout (torch-free): how the GPT-2 network is cut into units, how a unit is sharded over
// N ranks, what each rank holds of it at each stage and offload, and in which order a training
// micro-batch gathers, releases and reduces the units. The trainer (worker/train/zero_model.cc)
// allocates and runs from it, the checkpoint format (worker/ckpt) names and partitions it, and the
// planner (lib/plan) sums it; none of them restates it.
//
// Units, the buckets of every collective, in engine::ParameterLayout order:
//   "embedding"  wte, wpe (the tied output embedding is wte: one tensor, one gradient)
//   "h.<l>"      block l's parameters
//   "final"      ln_f, and lm_head when untied
// Each unit is one flat numbering of its parameters, unpadded (numel). Over N ranks:
//   shard  = ceil(numel / N)      padded = shard * N    (the padding, at the end, stays zero)
//   rank r's shard is [r * shard, (r + 1) * shard) of the padded numbering, so every collective
//   moves equal pieces; clamped to numel it is the rank's partition of the checkpoint format,
//   whatever the stage.
//
// What a rank holds of a unit between steps (c: 4 bytes fp32, 2 bf16/fp16):
//   params      stage 0-2: c * padded on the device; stage 3: c * shard, on the host with offload
//               params
//   grads       stage 0/1: c * padded on the device; stage 2/3: fp32 4 * shard, on the host with
//               offload
//   optimizer   over opt_len = padded (stage 0: every rank steps everything) or shard (stages 1-3):
//               the moments 8 * opt_len, plus an fp32 master 4 * opt_len unless fp32 without
//               offload (then the parameters are the master); on the host with offload
//   staging     a GPU with offload: pinned c * max(opt_len) on the host for the updated parameters
//               (counted as optimizer), and at stage 0/1 another for the gradients (grads)
// "Device" and "host" are places in the accounting: on a CPU device they are the same memory,
// kept apart so that offload shows where the bytes would live.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "lib/common/status.h"
#include "lib/model/model_config.h"

namespace fuji::zero {

// Where the model states go beside the device: "optimizer" keeps master weights, moments and the
// reduced gradient shards in host memory; "params" (stage 3) also the parameter shards.
enum class Offload { kNone, kOptimizer, kParams };
Result<Offload> ParseOffload(const std::string& name);  // none | optimizer | params
const char* OffloadName(Offload offload);

// One parameter inside its unit.
struct UnitParam {
  std::string name;             // canonical HF GPT2Model name, "wte.weight"
  std::vector<int64_t> shape;
  int64_t offset = 0;           // first element inside the unit's flat numbering
  int64_t numel = 0;
  int64_t index = 0;            // position in engine::ParameterLayout
  bool decay = false;           // a matrix: AdamW decays it
};

struct Unit {
  std::string name;  // "embedding", "h.0", ..., "final"
  int64_t numel = 0;
  std::vector<UnitParam> params;
};

// The units of a model, as described above.
class Layout {
 public:
  explicit Layout(const engine::ModelConfig& config);

  const std::vector<Unit>& units() const { return units_; }
  int size() const { return static_cast<int>(units_.size()); }
  const Unit& unit(int u) const { return units_[static_cast<size_t>(u)]; }
  // The unit numbers, as engine::Gpt2Model's UnitHooks number them too.
  int embedding() const { return 0; }
  int block(int64_t layer) const { return 1 + static_cast<int>(layer); }
  int final() const { return size() - 1; }
  int64_t n_layer() const { return static_cast<int64_t>(units_.size()) - 2; }
  // Streaming inference at stage 3 (the network's UnitHooks): before unit u runs it is gathered
  // and this unit's gather starts, to overlap u's compute; after the final LayerNorm comes the
  // embedding again, for the logits.
  int prefetch_after(int u) const { return (u + 1) % size(); }

 private:
  std::vector<Unit> units_;
};

// A unit of numel elements over world_size ranks.
struct Sharding {
  int64_t numel = 0, shard = 0, padded = 0;
};
Sharding ShardUnit(int64_t numel, int world_size);

// Rank's shard clamped to [0, numel): [min(rank*shard, numel), min((rank+1)*shard, numel)); the
// partition of the checkpoint format. {0, 0} for a rank or world size out of range.
std::pair<int64_t, int64_t> PartitionRange(int64_t numel, int world_size, int rank);

// The choices that decide what a rank holds.
struct ZeroConfig {
  int stage = 0;                   // 0..3
  Offload offload = Offload::kNone;
  int world_size = 1;
  int rank = 0;
  int64_t compute_bytes = 4;       // c: parameters and their gradients (4 fp32, 2 bf16/fp16)
  bool gpu = false;                // the device is a GPU (pinned staging for a host optimizer)
};

enum class Place { kDevice, kHost };

// A buffer a rank holds: numel elements of element_bytes each, at place.
struct Buffer {
  int64_t numel = 0;
  int64_t element_bytes = 0;
  Place place = Place::kDevice;
  int64_t bytes() const { return numel * element_bytes; }
};

// What one rank holds of one unit between steps (the table above).
struct UnitStates {
  Sharding sharding;
  Buffer params;             // stage 0-2 the padded unit, stage 3 the rank's shard
  Buffer grads;              // stage 0/1 padded, compute dtype; stage 2/3 the shard, fp32
  int64_t opt_begin = 0;     // the optimizer's range [opt_begin, opt_begin + opt_len) of the
  int64_t opt_len = 0;       // padded numbering: all of it at stage 0, the rank's shard after
  bool master_is_param = false;  // fp32 without offload: the parameters are the fp32 master
  Buffer master;             // fp32 [opt_len]; empty when master_is_param
  Buffer moments;            // exp_avg and exp_avg_sq, fp32 [2 * opt_len]
};
UnitStates StatesOf(const Unit& unit, const ZeroConfig& config);

// The largest opt_len of the units: the pinned staging of a host optimizer on a GPU (0 when there
// is none: no GPU or no offload). grads_too: stage 0/1 stage gradients through another as large.
struct Staging {
  int64_t numel = 0;
  bool grads_too = false;
};
Staging StagingOf(const Layout& layout, const ZeroConfig& config);

// Bytes of the model states a rank holds, by kind and place: the sums of the table above (what the
// trainer's MemoryAccount reports, transient peaks excluded).
struct StateBytes {
  int64_t params_device = 0, params_host = 0;
  int64_t grads_device = 0, grads_host = 0;
  int64_t optimizer_device = 0, optimizer_host = 0;
  int64_t device_states() const { return params_device + grads_device + optimizer_device; }
  int64_t host_states() const { return params_host + grads_host + optimizer_host; }
};
StateBytes BytesOf(const Layout& layout, const ZeroConfig& config);

// ---- the schedule of a training micro-batch ------------------------------------------------
//
// Backward runs unit by unit (each block's graph hangs off a detached input), which is what lets
// stage 3 gather a unit just before its turn and release it right after, with the next unit's
// gather started before the current one computes (so it overlaps), stage 2/3 reduce-scatter each
// unit's gradients while the next unit computes, and activation checkpointing recompute one
// block at a time. The head (final LayerNorm, the tied embedding as output layer, the loss) runs
// its forward and backward together, so the embedding is gathered for it too.
//
//   forward   finish E; embed; release E; start B0
//             for each block l: finish Bl; start B(l+1) (F after the last); forward l; release Bl
//             finish F; start E; finish E
//   backward  attach F, E; start B(L-1); head; release F, E; reduce F
//             for l = L-1..0: finish Bl; start B(l-1); attach Bl; backward l; release Bl;
//                             settle the previous unit's reduction; reduce Bl
//             embedding backward; settle B0's (F's without blocks) reduction; reduce E; settle it
// Gathers and releases appear at stage 3 only; "settle" (finish a reduction in backward) at stages
// 2 and 3 only: stages 0 and 1 leave their reductions to the step.
enum class Op {
  kStartGather,   // begin all-gathering the unit's parameters (no-op if gathered)
  kFinishGather,  // wait for it (starting it first if needed)
  kRelease,       // free the gathered parameters
  kAttachGrads,   // point the unit's parameter gradients at its flat gradient buffer
  kStartReduce,   // collect the unit's gradients and start their reduction (the last micro-batch
                  // before a step at stages 0/1; every micro-batch at 2/3)
  kFinishReduce,  // wait for it; stage 2/3 accumulate the shard in fp32 and free the full buffer
  kEmbed,         // compute: token and position embeddings
  kBlockForward,  // compute: block `layer`
  kHead,          // compute: final LayerNorm, logits, loss, and their backward
  kBlockBackward, // compute: block `layer`'s backward (recomputing it with checkpointing)
  kEmbedBackward, // compute: the embeddings' backward
};

// kHead runs fused with its loss over chunks of this many rows (tokens), so that the [B*T, V]
// logits, their log-softmax and its gradient never exist at once: one chunk's do.
inline constexpr int64_t kHeadChunkRows = 256;

struct Action {
  Op op;
  int unit = 0;        // the unit the action touches (for compute, the unit whose weights it uses)
  int64_t layer = -1;  // kBlockForward, kBlockBackward
};

struct Schedule {
  std::vector<Action> forward, backward;
};
Schedule TrainingSchedule(const Layout& layout, int stage);

}  // namespace fuji::zero
