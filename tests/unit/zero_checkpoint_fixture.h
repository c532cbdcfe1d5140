// Synthetic ZeRO checkpoints for the worker/ckpt tests: every rank's file written through the real
// writer from known values, so that reading, resuming and exporting can be checked exactly.
#pragma once

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "worker/ckpt/zero_checkpoint.h"
#include "lib/model/model_config.h"

namespace fuji::ckpt::testing {

// 2 layers, width 34 over 17 heads, vocabulary 50, 16 positions.
inline engine::ModelConfig TinyConfig(bool tied = true) {
  engine::ModelConfig c;
  c.n_layer = 2;
  c.n_embd = 34;
  c.n_head = 17;
  c.vocab_size = 50;
  c.n_positions = 16;
  c.n_inner = 0;
  c.tie_word_embeddings = tied;
  EXPECT_TRUE(c.Validate().ok());
  return c;
}

// Element i of unit u for moment m (0 master, 1 exp_avg, 2 exp_avg_sq): exact in float, distinct
// across units, elements and moments.
inline float Value(size_t u, int64_t i, int m) {
  const float base = static_cast<float>(static_cast<int64_t>(u) * 100000 + i);
  return m == 0 ? base / 1024.0f : m == 1 ? -base - 0.5f : base + 0.25f;
}

inline std::vector<float> Values(size_t u, int64_t begin, int64_t end, int m) {
  std::vector<float> v;
  for (int64_t i = begin; i < end; ++i) v.push_back(Value(u, i, m));
  return v;
}

// A fresh directory under the build tree named after the current test.
inline std::string ScratchDir(const std::string& suffix = "") {
  const char* env = std::getenv("FUJI_BINARY_DIR");
  const std::string dir = std::string(env != nullptr ? env : FUJI_BINARY_DIR) + "/test_scratch/ckpt/" +
                          ::testing::UnitTest::GetInstance()->current_test_info()->name() + suffix;
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir;
}

// Writes <save_to>/step-<step> from Value() over `world_size` ranks, its meta.json and latest.
// Returns the step directory.
inline std::string WriteSynthetic(const std::string& save_to, const engine::ModelConfig& config, int world_size,
                                  int64_t step, const std::string& model_dir = "/nonexistent/model") {
  const std::vector<UnitLayout> units = UnitsOf(config);
  const std::string step_dir = save_to + "/" + StepDirName(step);
  for (int r = 0; r < world_size; ++r) {
    std::vector<std::vector<float>> keep;
    std::vector<RankUnitState> states;
    for (size_t u = 0; u < units.size(); ++u) {
      const auto [begin, end] = PartitionRange(units[u].numel, world_size, r);
      for (int m = 0; m < 3; ++m) keep.push_back(Values(u, begin, end, m));
      const size_t k = keep.size();
      states.push_back({begin, end, keep[k - 3].data(), keep[k - 2].data(), keep[k - 1].data()});
    }
    const Status s = WriteRankShard(step_dir, r, world_size, step, units, states);
    EXPECT_TRUE(s.ok()) << s.ToString();
  }
  CheckpointMeta meta;
  meta.step = step;
  meta.world_size = world_size;
  meta.zero = 2;
  meta.precision = "bf16";
  meta.loss_scale = 1.0;
  meta.good_steps = step;
  meta.model_dir = model_dir;
  meta.config = config.ToJson();
  meta.spec = {{"model", model_dir}, {"ranks", world_size}, {"zero", 2}};
  meta.units = units;
  Status s = WriteMeta(step_dir, meta);
  EXPECT_TRUE(s.ok()) << s.ToString();
  s = PublishLatest(save_to, StepDirName(step));
  EXPECT_TRUE(s.ok()) << s.ToString();
  return step_dir;
}

}  // namespace fuji::ckpt::testing
