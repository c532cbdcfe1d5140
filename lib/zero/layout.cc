// The ZeRO layout: units, shards, what a rank holds, and a micro-batch's schedule. See layout.h.
#include "lib/zero/layout.h"

#include <algorithm>

#include "lib/model/param_layout.h"

namespace fuji::zero {

Result<Offload> ParseOffload(const std::string& name) {
  if (name == "none") return Offload::kNone;
  if (name == "optimizer") return Offload::kOptimizer;
  if (name == "params") return Offload::kParams;
  return InvalidArgument("offload must be none, optimizer or params, not '" + name + "'");
}

const char* OffloadName(Offload offload) {
  switch (offload) {
    case Offload::kNone: return "none";
    case Offload::kOptimizer: return "optimizer";
    case Offload::kParams: return "params";
  }
  return "none";
}

namespace {

// The unit a parameter of the canonical layout belongs to, by its name: the embeddings, "h.<l>"
// for block l's "h.<l>.*", and the final LayerNorm and untied head after the blocks.
std::string UnitNameOf(const std::string& param) {
  if (param.rfind("wte.", 0) == 0 || param.rfind("wpe.", 0) == 0) return "embedding";
  if (param.rfind("h.", 0) == 0) return param.substr(0, param.find('.', 2));
  return "final";
}

}  // namespace

Layout::Layout(const engine::ModelConfig& config) {
  const std::vector<engine::ParamInfo> params = engine::ParameterLayout(config);
  for (size_t i = 0; i < params.size(); ++i) {
    const std::string name = UnitNameOf(params[i].name);
    // ParameterLayout keeps each unit's parameters together: a new name starts the next unit.
    if (units_.empty() || units_.back().name != name) units_.push_back(Unit{name, 0, {}});
    Unit& unit = units_.back();
    int64_t n = 1;
    for (int64_t d : params[i].shape) n *= d;
    unit.params.push_back({params[i].name, params[i].shape, unit.numel, n, static_cast<int64_t>(i),
                           params[i].is_matrix});
    unit.numel += n;
  }
}

Sharding ShardUnit(int64_t numel, int world_size) {
  Sharding s;
  s.numel = numel;
  s.shard = (numel + world_size - 1) / world_size;
  s.padded = s.shard * world_size;
  return s;
}

std::pair<int64_t, int64_t> PartitionRange(int64_t numel, int world_size, int rank) {
  if (world_size < 1 || rank < 0 || numel <= 0) return {0, 0};
  const int64_t shard = ShardUnit(numel, world_size).shard;
  return {std::min(rank * shard, numel), std::min((rank + 1) * shard, numel)};
}

UnitStates StatesOf(const Unit& unit, const ZeroConfig& z) {
  UnitStates s;
  s.sharding = ShardUnit(unit.numel, z.world_size);
  const int64_t shard = s.sharding.shard, padded = s.sharding.padded;
  const Place optimizer_place = z.offload == Offload::kNone ? Place::kDevice : Place::kHost;
  if (z.stage < 3) {
    s.params = {padded, z.compute_bytes, Place::kDevice};
  } else {
    s.params = {shard, z.compute_bytes, z.offload == Offload::kParams ? Place::kHost : Place::kDevice};
  }
  if (z.stage <= 1) {
    s.grads = {padded, z.compute_bytes, Place::kDevice};
  } else {
    s.grads = {shard, 4, optimizer_place};
  }
  s.opt_begin = z.stage == 0 ? 0 : z.rank * shard;
  s.opt_len = z.stage == 0 ? padded : shard;
  s.master_is_param = z.compute_bytes == 4 && z.offload == Offload::kNone;
  s.master = {s.master_is_param ? 0 : s.opt_len, 4, optimizer_place};
  s.moments = {2 * s.opt_len, 4, optimizer_place};
  return s;
}

Staging StagingOf(const Layout& layout, const ZeroConfig& z) {
  Staging staging;
  if (!z.gpu || z.offload == Offload::kNone) return staging;
  for (const Unit& unit : layout.units()) staging.numel = std::max(staging.numel, StatesOf(unit, z).opt_len);
  staging.grads_too = z.stage <= 1;
  return staging;
}

StateBytes BytesOf(const Layout& layout, const ZeroConfig& z) {
  StateBytes b;
  auto add = [](const Buffer& buffer, int64_t* device, int64_t* host) {
    *(buffer.place == Place::kDevice ? device : host) += buffer.bytes();
  };
  for (const Unit& unit : layout.units()) {
    const UnitStates s = StatesOf(unit, z);
    add(s.params, &b.params_device, &b.params_host);
    add(s.grads, &b.grads_device, &b.grads_host);
    add(s.master, &b.optimizer_device, &b.optimizer_host);
    add(s.moments, &b.optimizer_device, &b.optimizer_host);
  }
  const Staging staging = StagingOf(layout, z);
  b.optimizer_host += z.compute_bytes * staging.numel;
  if (staging.grads_too) b.grads_host += z.compute_bytes * staging.numel;
  return b;
}

Schedule TrainingSchedule(const Layout& layout, int stage) {
  Schedule s;
  const int E = layout.embedding(), F = layout.final();
  const int64_t L = layout.n_layer();
  const bool gathers = stage == 3, settles = stage >= 2;
  auto B = [&](int64_t l) { return layout.block(l); };
  auto emit = [](std::vector<Action>* to, bool when, Op op, int unit, int64_t layer = -1) {
    if (when) to->push_back({op, unit, layer});
  };
  std::vector<Action>* f = &s.forward;
  emit(f, gathers, Op::kFinishGather, E);
  emit(f, true, Op::kEmbed, E);
  emit(f, gathers, Op::kRelease, E);
  emit(f, gathers && L > 0, Op::kStartGather, B(0));
  for (int64_t l = 0; l < L; ++l) {
    emit(f, gathers, Op::kFinishGather, B(l));
    emit(f, gathers, Op::kStartGather, l + 1 < L ? B(l + 1) : F);
    emit(f, true, Op::kBlockForward, B(l), l);
    emit(f, gathers, Op::kRelease, B(l));
  }
  emit(f, gathers, Op::kFinishGather, F);
  emit(f, gathers, Op::kStartGather, E);
  emit(f, gathers, Op::kFinishGather, E);

  std::vector<Action>* b = &s.backward;
  emit(b, true, Op::kAttachGrads, F);
  emit(b, true, Op::kAttachGrads, E);
  emit(b, gathers && L > 0, Op::kStartGather, B(L - 1));
  emit(b, true, Op::kHead, F);
  emit(b, gathers, Op::kRelease, F);
  emit(b, gathers, Op::kRelease, E);  // the lookup's backward needs only the ids
  emit(b, true, Op::kStartReduce, F);
  for (int64_t l = L - 1; l >= 0; --l) {
    emit(b, gathers, Op::kFinishGather, B(l));
    emit(b, gathers && l > 0, Op::kStartGather, B(l - 1));
    emit(b, true, Op::kAttachGrads, B(l));
    emit(b, true, Op::kBlockBackward, B(l), l);
    emit(b, gathers, Op::kRelease, B(l));
    // The previous unit's reduction has had this block's compute to run; settle it.
    emit(b, settles, Op::kFinishReduce, l + 1 < L ? B(l + 1) : F);
    emit(b, true, Op::kStartReduce, B(l));
  }
  emit(b, true, Op::kEmbedBackward, E);
  emit(b, settles, Op::kFinishReduce, L > 0 ? B(0) : F);
  emit(b, true, Op::kStartReduce, E);
  emit(b, settles, Op::kFinishReduce, E);
  return s;
}

}  // namespace fuji::zero
