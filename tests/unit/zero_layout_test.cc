// Tests for the ZeRO layout (lib/zero): units over the canonical parameter layout, shards that
// cover every element exactly once for any world size, padding, what each rank holds per stage
// and offload, and the gather/reduce schedule of a micro-batch.
#include <algorithm>
#include <cstdint>
#include <map>
#include <vector>

#include <gtest/gtest.h>

#include "lib/model/param_layout.h"
#include "lib/zero/layout.h"

namespace fuji::zero {
namespace {

// The tiny architecture (68 wide, 17 heads) with a small vocabulary and context.
engine::ModelConfig Tiny(bool tied, int64_t n_layer = 2) {
  auto c = engine::ArchitectureConfig("tiny");
  EXPECT_TRUE(c.ok());
  c->n_layer = n_layer;
  c->vocab_size = 50;
  c->n_positions = 16;
  c->tie_word_embeddings = tied;
  EXPECT_TRUE(c->Validate().ok());
  return *c;
}

constexpr int kWorlds[] = {1, 2, 3, 4, 5, 7, 8, 64};

TEST(ZeroUnitsTest, UnitsAreRunsOfTheParameterLayout) {
  for (bool tied : {true, false}) {
    const engine::ModelConfig config = Tiny(tied);
    const Layout layout(config);
    ASSERT_EQ(layout.size(), 4);
    EXPECT_EQ(layout.n_layer(), 2);
    EXPECT_EQ(layout.unit(layout.embedding()).name, "embedding");
    EXPECT_EQ(layout.unit(layout.block(0)).name, "h.0");
    EXPECT_EQ(layout.unit(layout.block(1)).name, "h.1");
    EXPECT_EQ(layout.unit(layout.final()).name, "final");
    const int64_t C = config.n_embd, F = config.ffn();
    EXPECT_EQ(layout.unit(0).numel, (50 + 16) * C);
    EXPECT_EQ(layout.unit(1).numel, 4 * C + (3 * C * C + 3 * C) + (C * C + C) + (C * F + F) + (F * C + C));
    EXPECT_EQ(layout.unit(3).numel, 2 * C + (tied ? 0 : 50 * C));
    const auto params = engine::ParameterLayout(config);
    int64_t index = 0;
    for (const Unit& unit : layout.units()) {
      int64_t offset = 0;
      for (const UnitParam& p : unit.params) {
        ASSERT_LT(index, static_cast<int64_t>(params.size()));
        const auto& want = params[static_cast<size_t>(index)];
        EXPECT_EQ(p.index, index);
        EXPECT_EQ(p.name, want.name);
        EXPECT_EQ(p.shape, want.shape);
        EXPECT_EQ(p.decay, want.is_matrix) << p.name;
        EXPECT_EQ(p.offset, offset) << p.name;
        offset += p.numel;
        ++index;
      }
      EXPECT_EQ(unit.numel, offset) << unit.name;
    }
    EXPECT_EQ(index, static_cast<int64_t>(params.size()));
  }
  EXPECT_EQ(Layout(Tiny(true, 5)).size(), 7);
}

// Streaming inference prefetches the unit that runs next: each block, the final LayerNorm, then the
// embedding again (the logits use it).
TEST(ZeroUnitsTest, StreamingPrefetchesTheNextUnitInRunOrder) {
  const Layout layout(Tiny(true, 3));
  EXPECT_EQ(layout.prefetch_after(layout.embedding()), layout.block(0));
  EXPECT_EQ(layout.prefetch_after(layout.block(1)), layout.block(2));
  EXPECT_EQ(layout.prefetch_after(layout.block(2)), layout.final());
  EXPECT_EQ(layout.prefetch_after(layout.final()), layout.embedding());
}

TEST(ZeroShardsTest, ShardsArePaddedToTheWorldSize) {
  for (int64_t n : {1, 2, 7, 64, 1001, 4 * 68 + 3}) {
    for (int world : kWorlds) {
      const Sharding s = ShardUnit(n, world);
      EXPECT_EQ(s.numel, n);
      EXPECT_EQ(s.padded, s.shard * world);
      EXPECT_GE(s.padded, n);
      EXPECT_LT(s.padded - n, world) << n << " over " << world;  // less than one element a rank
      EXPECT_EQ(s.shard, (n + world - 1) / world);
    }
  }
  EXPECT_EQ(ShardUnit(10, 4).padded, 12);
  EXPECT_EQ(ShardUnit(12, 4).padded, 12);
}

// Every element of every unit lies in exactly one rank's partition (and in exactly one rank's
// padded shard), for several world sizes.
TEST(ZeroShardsTest, PartitionsCoverEveryElementExactlyOnce) {
  const Layout layout(Tiny(false));
  for (const Unit& unit : layout.units()) {
    for (int world : kWorlds) {
      std::vector<int> owners(static_cast<size_t>(unit.numel), 0);
      std::vector<int> padded_owners(static_cast<size_t>(ShardUnit(unit.numel, world).padded), 0);
      for (int r = 0; r < world; ++r) {
        const auto [b, e] = PartitionRange(unit.numel, world, r);
        ASSERT_LE(0, b);
        ASSERT_LE(b, e);
        ASSERT_LE(e, unit.numel);
        for (int64_t i = b; i < e; ++i) ++owners[static_cast<size_t>(i)];
        ZeroConfig z;
        z.stage = 1;
        z.world_size = world;
        z.rank = r;
        const UnitStates s = StatesOf(unit, z);
        // The optimizer's range is the rank's shard; clamped to numel, its partition.
        EXPECT_EQ(std::min(s.opt_begin, unit.numel), b);
        EXPECT_EQ(std::min(s.opt_begin + s.opt_len, unit.numel), e);
        for (int64_t i = s.opt_begin; i < s.opt_begin + s.opt_len; ++i) ++padded_owners[static_cast<size_t>(i)];
      }
      EXPECT_TRUE(std::all_of(owners.begin(), owners.end(), [](int o) { return o == 1; }))
          << unit.name << " over " << world;
      EXPECT_TRUE(std::all_of(padded_owners.begin(), padded_owners.end(), [](int o) { return o == 1; }))
          << unit.name << " over " << world;
    }
  }
  EXPECT_EQ(PartitionRange(5, 4, 3), std::make_pair(int64_t{5}, int64_t{5}));
  EXPECT_EQ(PartitionRange(0, 4, 0), std::make_pair(int64_t{0}, int64_t{0}));
  EXPECT_EQ(PartitionRange(5, 0, 0), std::make_pair(int64_t{0}, int64_t{0}));
}

// The bytes of model states per stage and offload, against the table of layout.h written out.
TEST(ZeroStatesTest, BytesPerStageFollowTheTable) {
  const Layout layout(Tiny(true));
  for (int world : {1, 3, 8}) {
    int64_t padded = 0, shard = 0, max_shard = 0, max_padded = 0;
    for (const Unit& unit : layout.units()) {
      const int64_t s = (unit.numel + world - 1) / world;
      shard += s;
      padded += s * world;
      max_shard = std::max(max_shard, s);
      max_padded = std::max(max_padded, s * world);
    }
    for (int64_t c : {int64_t{4}, int64_t{2}}) {
      for (int stage = 0; stage <= 3; ++stage) {
        for (Offload offload : {Offload::kNone, Offload::kOptimizer, Offload::kParams}) {
          if (offload == Offload::kParams && stage != 3) continue;
          for (bool gpu : {false, true}) {
            ZeroConfig z{stage, offload, world, world - 1, c, gpu};
            const StateBytes b = BytesOf(layout, z);
            const bool off = offload != Offload::kNone;
            const int64_t opt_len = stage == 0 ? padded : shard;
            const int64_t params = stage < 3 ? c * padded : c * shard;
            EXPECT_EQ(b.params_device, offload == Offload::kParams ? 0 : params);
            EXPECT_EQ(b.params_host, offload == Offload::kParams ? params : 0);
            const int64_t grads = stage <= 1 ? c * padded : 4 * shard;
            const int64_t staging = gpu && off ? c * (stage == 0 ? max_padded : max_shard) : 0;
            EXPECT_EQ(b.grads_device, stage <= 1 || !off ? grads : 0);
            EXPECT_EQ(b.grads_host, (stage >= 2 && off ? grads : 0) + (stage <= 1 ? staging : 0));
            const int64_t optimizer = 8 * opt_len + (c == 4 && !off ? 0 : 4 * opt_len);
            EXPECT_EQ(b.optimizer_device, off ? 0 : optimizer);
            EXPECT_EQ(b.optimizer_host, off ? optimizer + staging : 0);
          }
        }
      }
    }
  }
}

TEST(ZeroStatesTest, OneRankHoldsTheWholeUnitAtEveryStage) {
  const Layout layout(Tiny(false));
  for (int stage = 0; stage <= 3; ++stage) {
    ZeroConfig z;
    z.stage = stage;
    for (const Unit& unit : layout.units()) {
      const UnitStates s = StatesOf(unit, z);
      EXPECT_EQ(s.opt_begin, 0);
      EXPECT_EQ(s.opt_len, unit.numel);
      EXPECT_EQ(s.params.numel, unit.numel);
      EXPECT_TRUE(s.master_is_param);
      EXPECT_EQ(s.master.numel, 0);
    }
  }
}

// Replays a schedule and checks what the trainer relies on: each compute runs with its units
// gathered (stage 3), every gather is released, every unit's gradients are attached before its
// backward and reduced once, and every reduction started is settled at stages 2 and 3.
void CheckSchedule(const Layout& layout, int stage) {
  const Schedule s = TrainingSchedule(layout, stage);
  std::map<int, bool> gathered, attached;
  std::map<int, int> reduced, settled;
  bool backward = false;
  auto needs = [&](int unit) {
    if (stage == 3) {
      EXPECT_TRUE(gathered[unit]) << "unit " << unit << " at stage " << stage;
    }
  };
  for (const std::vector<Action>* phase : {&s.forward, &s.backward}) {
    for (const Action& a : *phase) {
      switch (a.op) {
        case Op::kStartGather:
        case Op::kFinishGather:
          EXPECT_EQ(stage, 3);
          gathered[a.unit] = true;
          break;
        case Op::kRelease:
          EXPECT_TRUE(gathered[a.unit]);
          gathered[a.unit] = false;
          break;
        case Op::kAttachGrads:
          EXPECT_TRUE(backward);
          attached[a.unit] = true;
          break;
        case Op::kStartReduce:
          EXPECT_TRUE(attached[a.unit]);
          ++reduced[a.unit];
          break;
        case Op::kFinishReduce:
          EXPECT_GE(stage, 2);
          EXPECT_EQ(reduced[a.unit], 1);
          ++settled[a.unit];
          break;
        case Op::kEmbed:
          needs(layout.embedding());
          break;
        case Op::kBlockForward:
          EXPECT_FALSE(backward);
          needs(layout.block(a.layer));
          break;
        case Op::kHead:
          needs(layout.final());
          needs(layout.embedding());  // the tied output embedding
          EXPECT_TRUE(attached[layout.final()] && attached[layout.embedding()]);
          break;
        case Op::kBlockBackward:
          EXPECT_TRUE(backward);
          needs(layout.block(a.layer));
          EXPECT_TRUE(attached[layout.block(a.layer)]);
          break;
        case Op::kEmbedBackward:
          break;
      }
    }
    backward = true;
    if (phase == &s.forward) {
      for (int64_t l = 0; l < layout.n_layer(); ++l) EXPECT_FALSE(gathered[layout.block(l)]);
    }
  }
  for (int u = 0; u < layout.size(); ++u) {
    EXPECT_FALSE(gathered[u]) << "unit " << u << " left gathered at stage " << stage;
    EXPECT_EQ(reduced[u], 1) << "unit " << u;
    EXPECT_EQ(settled[u], stage >= 2 ? 1 : 0) << "unit " << u;
  }
}

TEST(ZeroScheduleTest, EveryStageGathersReleasesAndReducesEachUnit) {
  for (int64_t n_layer : {1, 2, 5}) {
    const Layout layout(Tiny(true, n_layer));
    for (int stage = 0; stage <= 3; ++stage) CheckSchedule(layout, stage);
  }
}

// At stage 3 the next block's gather starts before the current block computes, both ways.
TEST(ZeroScheduleTest, StageThreePrefetchesTheNextBlock) {
  const Layout layout(Tiny(true, 3));
  const Schedule s = TrainingSchedule(layout, 3);
  auto position = [](const std::vector<Action>& actions, Op op, int unit) {
    for (size_t i = 0; i < actions.size(); ++i) {
      if (actions[i].op == op && actions[i].unit == unit) return static_cast<int>(i);
    }
    return -1;
  };
  EXPECT_LT(position(s.forward, Op::kStartGather, layout.block(2)),
            position(s.forward, Op::kBlockForward, layout.block(1)));
  EXPECT_LT(position(s.forward, Op::kStartGather, layout.final()),
            position(s.forward, Op::kBlockForward, layout.block(2)));
  EXPECT_LT(position(s.backward, Op::kStartGather, layout.block(2)), position(s.backward, Op::kHead, layout.final()));
  EXPECT_LT(position(s.backward, Op::kStartGather, layout.block(0)),
            position(s.backward, Op::kBlockBackward, layout.block(1)));
  EXPECT_EQ(position(TrainingSchedule(layout, 2).forward, Op::kStartGather, layout.block(0)), -1);
}

}  // namespace
}  // namespace fuji::zero
