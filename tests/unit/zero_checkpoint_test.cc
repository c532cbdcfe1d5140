// Tests for the ZeRO checkpoint format (worker/ckpt): layout, partition, sharded round trips over
// 1, 2 and 3 ranks, assembly for a resume on another world size, every corruption refused with a
// message naming the file, and export to an HF-layout directory.
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "tests/unit/zero_checkpoint_fixture.h"
#include "lib/common/file_util.h"
#include "lib/common/half.h"
#include "lib/model/param_layout.h"
#include "lib/format/safetensors.h"

namespace fuji::ckpt {
namespace {

using testing::ScratchDir;
using testing::TinyConfig;
using testing::Value;
using testing::Values;
using testing::WriteSynthetic;

std::pair<int64_t, int64_t> Range(int64_t b, int64_t e) { return {b, e}; }

// Expects an error of `code` whose message mentions `needle`.
void ExpectError(const Status& s, StatusCode code, const std::string& needle) {
  EXPECT_EQ(s.code(), code) << s.ToString();
  EXPECT_NE(s.message().find(needle), std::string::npos) << s.ToString() << " should mention '" << needle << "'";
  EXPECT_EQ(s.message().find('\n'), std::string::npos) << s.ToString();
}

nlohmann::json ReadJson(const std::string& path) {
  auto text = ReadFile(path);
  EXPECT_TRUE(text.ok()) << text.status().ToString();
  return nlohmann::json::parse(text.ok() ? *text : "null");
}

void WriteJson(const std::string& path, const nlohmann::json& j) {
  ASSERT_TRUE(WriteFileAtomically(path, j.dump()).ok());
}

TEST(ZeroLayoutTest, UnitsFollowTheParameterLayout) {
  for (bool tied : {true, false}) {
    const engine::ModelConfig config = TinyConfig(tied);
    const auto units = UnitsOf(config);
    ASSERT_EQ(units.size(), 4u);
    EXPECT_EQ(units[0].name, "embedding");
    EXPECT_EQ(units[1].name, "h.0");
    EXPECT_EQ(units[2].name, "h.1");
    EXPECT_EQ(units[3].name, "final");
    EXPECT_EQ(units[0].numel, (50 + 16) * 34);
    EXPECT_EQ(units[1].params.size(), 12u);
    EXPECT_EQ(units[3].params.size(), tied ? 2u : 3u);
    // Concatenated, the units are ParameterLayout: same names and shapes, offsets contiguous.
    const auto layout = engine::ParameterLayout(config);
    size_t index = 0;
    int64_t total = 0;
    for (const auto& unit : units) {
      int64_t offset = 0;
      for (const auto& p : unit.params) {
        ASSERT_LT(index, layout.size());
        EXPECT_EQ(p.name, layout[index].name);
        EXPECT_EQ(p.shape, layout[index].shape);
        EXPECT_EQ(p.offset, offset);
        int64_t n = 1;
        for (int64_t d : p.shape) n *= d;
        offset += n;
        ++index;
      }
      EXPECT_EQ(unit.numel, offset) << unit.name;
      total += unit.numel;
    }
    EXPECT_EQ(index, layout.size());
    EXPECT_EQ(total, config.NumParameters());
  }
}

TEST(ZeroLayoutTest, PartitionIsCeilShardsClampedToNumel) {
  EXPECT_EQ(PartitionRange(10, 3, 0), Range(0, 4));
  EXPECT_EQ(PartitionRange(10, 3, 1), Range(4, 8));
  EXPECT_EQ(PartitionRange(10, 3, 2), Range(8, 10));
  // Fewer elements than ranks: the last ranks own nothing.
  EXPECT_EQ(PartitionRange(2, 3, 1), Range(1, 2));
  EXPECT_EQ(PartitionRange(2, 3, 2), Range(2, 2));
  EXPECT_EQ(PartitionRange(5, 4, 3), Range(5, 5));  // shard 2: [6,8) clamped
  for (int64_t n : {1, 7, 64, 1001}) {
    for (int world : {1, 2, 3, 5, 8}) {
      int64_t next = 0;
      for (int r = 0; r < world; ++r) {
        const auto [b, e] = PartitionRange(n, world, r);
        EXPECT_EQ(b, next) << n << " over " << world;
        EXPECT_LE(b, e);
        next = e;
      }
      EXPECT_EQ(next, n);
    }
  }
}

TEST(ZeroLayoutTest, Names) {
  EXPECT_EQ(StepDirName(10), "step-00000010");
  EXPECT_EQ(RankFileName(0, 2), "rank-00000-of-00002.safetensors");
}

// Reads [begin, end) of unit u through the reader and compares all three moments.
void ExpectRange(CheckpointReader& reader, size_t u, int64_t begin, int64_t end) {
  std::vector<float> got[3];
  for (auto& g : got) g.assign(static_cast<size_t>(end - begin), -1.0f);
  const Status s = reader.Read(u, begin, end, got[0].data(), got[1].data(), got[2].data());
  ASSERT_TRUE(s.ok()) << s.ToString();
  for (int m = 0; m < 3; ++m) {
    EXPECT_EQ(got[m], Values(u, begin, end, m)) << "unit " << u << " [" << begin << ", " << end << ") moment " << m;
  }
}

TEST(ZeroCheckpointTest, RoundTripsOverOneTwoAndThreeRanks) {
  const engine::ModelConfig config = TinyConfig();
  for (int world : {1, 2, 3}) {
    const std::string save_to = ScratchDir("_" + std::to_string(world));
    const std::string step_dir = WriteSynthetic(save_to, config, world, 10);
    auto text = ReadFile(save_to + "/latest");
    ASSERT_TRUE(text.ok());
    EXPECT_EQ(*text, "step-00000010\n");
    // Through latest and through the step directory alike.
    for (const std::string& path : {save_to, step_dir}) {
      auto meta = ReadMeta(path);
      ASSERT_TRUE(meta.ok()) << meta.status().ToString();
      EXPECT_EQ(meta->step_dir, step_dir);
      EXPECT_EQ(meta->step, 10);
      EXPECT_EQ(meta->world_size, world);
      EXPECT_EQ(meta->zero, 2);
      EXPECT_EQ(meta->precision, "bf16");
      EXPECT_EQ(meta->good_steps, 10);
      EXPECT_EQ(meta->spec["ranks"], world);
      EXPECT_EQ(meta->model_config.n_head, 17);
    }
    auto reader = CheckpointReader::Open(save_to);
    ASSERT_TRUE(reader.ok()) << reader.status().ToString();
    ASSERT_TRUE(reader->VerifyAll().ok());
    const auto& units = reader->meta().units;
    for (size_t u = 0; u < units.size(); ++u) {
      const int64_t n = units[u].numel;
      ExpectRange(*reader, u, 0, n);
      // Ranges starting, ending and crossing at every shard boundary.
      for (int r = 0; r <= world; ++r) {
        const int64_t edge = r < world ? PartitionRange(n, world, r).first : n;
        for (int64_t lo : {edge - 3, edge - 1, edge, edge + 1}) {
          for (int64_t len : {int64_t{1}, int64_t{2}, int64_t{5}, n / 2 + 1}) {
            const int64_t b = std::clamp<int64_t>(lo, 0, n), e = std::min(n, b + len);
            ExpectRange(*reader, u, b, e);
          }
        }
      }
      ExpectRange(*reader, u, n, n);
    }
    // Only master, through the one-shot form.
    std::vector<float> master(static_cast<size_t>(units[1].numel));
    ASSERT_TRUE(ReadRankRange(step_dir, reader->meta(), 1, 0, units[1].numel, master.data(), nullptr, nullptr).ok());
    EXPECT_EQ(master, Values(1, 0, units[1].numel, 0));
  }
}

TEST(ZeroCheckpointTest, ResumeOnAnotherWorldSizeAssemblesTheSameSlices) {
  const engine::ModelConfig config = TinyConfig(false);
  const std::string save3 = ScratchDir("_3"), save2 = ScratchDir("_2");
  WriteSynthetic(save3, config, 3, 4);
  WriteSynthetic(save2, config, 2, 4);
  auto from3 = CheckpointReader::Open(save3);
  auto from2 = CheckpointReader::Open(save2);
  ASSERT_TRUE(from3.ok() && from2.ok());
  const auto units = UnitsOf(config);
  // Each rank of a new world size reads exactly its own slice, from both checkpoints.
  for (int world : {1, 2, 4, 5}) {
    for (int r = 0; r < world; ++r) {
      for (size_t u = 0; u < units.size(); ++u) {
        const auto [b, e] = PartitionRange(units[u].numel, world, r);
        std::vector<float> a(static_cast<size_t>(e - b)), c(a.size()), d(a.size());
        ASSERT_TRUE(from3->Read(u, b, e, a.data(), c.data(), d.data()).ok());
        EXPECT_EQ(a, Values(u, b, e, 0));
        EXPECT_EQ(c, Values(u, b, e, 1));
        EXPECT_EQ(d, Values(u, b, e, 2));
        std::vector<float> a2(a.size()), c2(a.size()), d2(a.size());
        ASSERT_TRUE(from2->Read(u, b, e, a2.data(), c2.data(), d2.data()).ok());
        EXPECT_EQ(a, a2);
        EXPECT_EQ(c, c2);
        EXPECT_EQ(d, d2);
      }
    }
  }
}

TEST(ZeroCheckpointTest, RefusesBadRanges) {
  const std::string save_to = ScratchDir();
  WriteSynthetic(save_to, TinyConfig(), 2, 1);
  auto reader = CheckpointReader::Open(save_to);
  ASSERT_TRUE(reader.ok());
  float x[4];
  ExpectError(reader->Read(4, 0, 1, x, x, x), StatusCode::kInvalidArgument, "unit 4 is out of range");
  ExpectError(reader->Read(3, 2, 1, x, x, x), StatusCode::kInvalidArgument, "outside unit 'final'");
  ExpectError(reader->Read(3, 66, 70, x, x, x), StatusCode::kInvalidArgument, "outside unit 'final'");
}

TEST(ZeroCheckpointTest, WriterRefusesSlicesOtherThanThePartition) {
  const engine::ModelConfig config = TinyConfig();
  const auto units = UnitsOf(config);
  const std::string dir = ScratchDir();
  std::vector<float> buf(100000);
  std::vector<RankUnitState> states;
  for (const auto& unit : units) {
    const auto [b, e] = PartitionRange(unit.numel, 2, 0);
    states.push_back({b, e, buf.data(), buf.data(), buf.data()});
  }
  states[2].end -= 1;
  ExpectError(WriteRankShard(dir, 0, 2, 1, units, states), StatusCode::kInvalidArgument, "unit 'h.1'");
  states[2].end += 1;
  states[1].exp_avg = nullptr;
  ExpectError(WriteRankShard(dir, 0, 2, 1, units, states), StatusCode::kInvalidArgument, "null buffer");
  states[1].exp_avg = buf.data();
  ExpectError(WriteRankShard(dir, 2, 2, 1, units, states), StatusCode::kInvalidArgument, "out of range");
  states.pop_back();
  ExpectError(WriteRankShard(dir, 0, 2, 1, units, states), StatusCode::kInvalidArgument, "3 unit states for 4");
  EXPECT_FALSE(std::filesystem::exists(dir + "/" + RankFileName(0, 2)));
}

TEST(ZeroCheckpointTest, WriteMetaRefusesWhatReadMetaWould) {
  const std::string dir = ScratchDir();
  CheckpointMeta meta;
  meta.config = TinyConfig().ToJson();
  meta.zero = 4;
  ExpectError(WriteMeta(dir, meta), StatusCode::kInvalidArgument, "'zero'");
  meta.zero = 3;
  meta.world_size = 0;
  ExpectError(WriteMeta(dir, meta), StatusCode::kInvalidArgument, "world_size");
  meta.world_size = 2;
  meta.units = UnitsOf(TinyConfig(false));
  ExpectError(WriteMeta(dir, meta), StatusCode::kInvalidArgument, "unit 3 ('final')");
  meta.units.clear();  // filled from the config
  ASSERT_TRUE(WriteMeta(dir, meta).ok());
  EXPECT_FALSE(std::filesystem::exists(dir + "/../latest"));
  ExpectError(PublishLatest(dir, "step-00000007"), StatusCode::kFailedPrecondition, "no meta.json");
  ExpectError(PublishLatest(dir, "../x"), StatusCode::kInvalidArgument, "not a step directory name");
}

// ---- corruption --------------------------------------------------------------------------------

class ZeroCorruptionTest : public ::testing::Test {
 protected:
  void SetUp() override {
    save_to_ = ScratchDir();
    step_dir_ = WriteSynthetic(save_to_, TinyConfig(), 3, 20);
  }
  std::string RankPath(int r, int world = 3) const { return step_dir_ + "/" + RankFileName(r, world); }
  // Reads everything through a fresh reader; the first error.
  Status ReadAll() const {
    auto reader = CheckpointReader::Open(save_to_);
    if (!reader.ok()) return reader.status();
    for (size_t u = 0; u < reader->meta().units.size(); ++u) {
      std::vector<float> v(static_cast<size_t>(reader->meta().units[u].numel));
      Status s = reader->Read(u, 0, static_cast<int64_t>(v.size()), v.data(), v.data(), v.data());
      if (!s.ok()) return s;
    }
    return Status::Ok();
  }
  // Puts rank 1's file of another checkpoint (config, world size, step) in the place of ours.
  void ReplaceRank1(const engine::ModelConfig& config, int world, int64_t step) {
    const std::string other_step = WriteSynthetic(ScratchDir("_other"), config, world, step);
    std::filesystem::copy_file(other_step + "/" + RankFileName(1, world), RankPath(1),
                               std::filesystem::copy_options::overwrite_existing);
  }
  void EditMeta(const std::function<void(nlohmann::json&)>& edit) {
    nlohmann::json j = ReadJson(step_dir_ + "/meta.json");
    edit(j);
    WriteJson(step_dir_ + "/meta.json", j);
  }

  std::string save_to_, step_dir_;
};

TEST_F(ZeroCorruptionTest, IntactCheckpointReads) { ASSERT_TRUE(ReadAll().ok()); }

// Fencing: a save directory is written by one attempt at a time. A newer placement of the job
// takes it over; the older one's check fails ("fenced") and it cannot claim it back; `latest`
// names the attempt and still resolves.
TEST_F(ZeroCorruptionTest, ASaveDirectoryIsWrittenByOneAttemptAtATime) {
  const AttemptToken old_attempt{7, 0, 1}, new_attempt{7, 1, 2}, other_job{8, 0, 1};
  EXPECT_EQ(new_attempt.ToString(), "job 7 attempt 1 epoch 2");
  ASSERT_TRUE(AttemptToken::Parse(new_attempt.ToString()).ok());
  EXPECT_EQ(AttemptToken::Parse(new_attempt.ToString())->lease_epoch, 2);
  for (const char* bad : {"", "job 7", "job 7 attempt 1 epoch", "job -7 attempt 1 epoch 2", "job 7 attempt 1 epoch 2 x"}) {
    EXPECT_FALSE(AttemptToken::Parse(bad).ok()) << bad;
  }
  ASSERT_TRUE(ClaimSaveDir(save_to_, old_attempt).ok());
  EXPECT_TRUE(CheckSaveDirClaim(save_to_, old_attempt).ok());
  ASSERT_TRUE(ClaimSaveDir(save_to_, new_attempt).ok());
  Status stale = CheckSaveDirClaim(save_to_, old_attempt);
  EXPECT_EQ(stale.code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(stale.message().find("fenced: " + save_to_ + " is written by job 7 attempt 1 epoch 2 now"), std::string::npos)
      << stale.message();
  EXPECT_EQ(ClaimSaveDir(save_to_, old_attempt).code(), StatusCode::kFailedPrecondition);
  EXPECT_TRUE(CheckSaveDirClaim(save_to_, new_attempt).ok());
  // Another job may take the directory over (a later job resuming this one's work).
  ASSERT_TRUE(ClaimSaveDir(save_to_, other_job).ok());
  EXPECT_FALSE(CheckSaveDirClaim(save_to_, new_attempt).ok());

  const std::string step_name = std::filesystem::path(step_dir_).filename().string();
  ASSERT_TRUE(PublishLatest(save_to_, step_name, other_job.ToString()).ok());
  EXPECT_EQ(ReadFile(save_to_ + "/latest").value(), step_name + "\nattempt job 8 attempt 0 epoch 1\n");
  EXPECT_EQ(*ResolveStepDir(save_to_), step_dir_);
}

TEST_F(ZeroCorruptionTest, TruncatedShard) {
  std::filesystem::resize_file(RankPath(1), std::filesystem::file_size(RankPath(1)) - 100);
  ExpectError(ReadAll(), StatusCode::kDataLoss, RankPath(1));
  // The ranges that rank 0 holds alone still read.
  auto reader = CheckpointReader::Open(step_dir_);
  ASSERT_TRUE(reader.ok());
  float x[3];
  EXPECT_TRUE(reader->Read(0, 0, 3, x, x, x).ok());
  std::filesystem::resize_file(RankPath(1), 5);
  ExpectError(ReadAll(), StatusCode::kDataLoss, "too short");
}

TEST_F(ZeroCorruptionTest, GarbageShardHeader) {
  {
    std::fstream f(RankPath(2), std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(10);
    f.write("\x01\x02\x03\x04", 4);
  }
  ExpectError(ReadAll(), StatusCode::kDataLoss, RankPath(2));
}

TEST_F(ZeroCorruptionTest, MissingRankFile) {
  std::filesystem::remove(RankPath(2));
  ExpectError(ReadAll(), StatusCode::kDataLoss, RankPath(2) + ": missing");
  auto reader = CheckpointReader::Open(save_to_);
  ASSERT_TRUE(reader.ok());
  ExpectError(reader->VerifyAll(), StatusCode::kDataLoss, "incomplete");
}

TEST_F(ZeroCorruptionTest, ShardOfAnotherWorldSize) {
  // A 2-rank shard renamed into the place of a 3-rank one.
  ReplaceRank1(TinyConfig(), 2, 20);
  ExpectError(ReadAll(), StatusCode::kDataLoss, "metadata 'world_size' is 2, expected 3");
}

TEST_F(ZeroCorruptionTest, MetaWithAnotherWorldSize) {
  EditMeta([](nlohmann::json& j) { j["world_size"] = 2; });
  ExpectError(ReadAll(), StatusCode::kDataLoss, RankFileName(0, 2) + ": missing");
  EditMeta([](nlohmann::json& j) { j["world_size"] = 4097; });
  ExpectError(ReadAll(), StatusCode::kDataLoss, "'world_size' = 4097 is outside 1..4096");
  EditMeta([](nlohmann::json& j) { j["world_size"] = "3"; });
  ExpectError(ReadAll(), StatusCode::kDataLoss, "'world_size' is not an integer");
}

TEST_F(ZeroCorruptionTest, ShardOfAnotherRankOrStep) {
  std::filesystem::copy_file(RankPath(0), RankPath(1), std::filesystem::copy_options::overwrite_existing);
  ExpectError(ReadAll(), StatusCode::kDataLoss, "metadata 'rank' is 0, expected 1");
  ReplaceRank1(TinyConfig(), 3, 19);
  ExpectError(ReadAll(), StatusCode::kDataLoss, "metadata 'step' is 19, expected 20");
}

TEST_F(ZeroCorruptionTest, ShardWithWrongRangeOrDtype) {
  // A shard written for a model whose units differ: its begin/end disagree with the meta.
  engine::ModelConfig wider = TinyConfig();
  wider.vocab_size = 51;
  ReplaceRank1(wider, 3, 20);
  ExpectError(ReadAll(), StatusCode::kDataLoss, "metadata 'u0.begin'");
  // A shard with the right metadata but a BF16 tensor.
  const auto units = UnitsOf(TinyConfig());
  std::vector<format::TensorSpec> specs;
  std::map<std::string, std::string> md = {{"rank", "1"}, {"world_size", "3"}, {"step", "20"}};
  size_t bytes = 0;
  for (size_t u = 0; u < units.size(); ++u) {
    const auto [b, e] = PartitionRange(units[u].numel, 3, 1);
    md["u" + std::to_string(u) + ".begin"] = std::to_string(b);
    md["u" + std::to_string(u) + ".end"] = std::to_string(e);
    for (const char* m : {".master", ".exp_avg", ".exp_avg_sq"}) {
      const bool bf16 = u == 2 && std::string(m) == ".exp_avg";
      specs.push_back({"u" + std::to_string(u) + m, bf16 ? format::DType::kBF16 : format::DType::kF32, {e - b}});
      bytes += static_cast<size_t>(e - b) * (bf16 ? 2 : 4);
    }
  }
  auto writer = format::SafetensorsWriter::Create(RankPath(1), specs, md);
  ASSERT_TRUE(writer.ok());
  std::vector<uint8_t> zeros(bytes);
  ASSERT_TRUE(writer->Write(zeros.data(), zeros.size()).ok());
  ASSERT_TRUE(writer->Finish().ok());
  ExpectError(ReadAll(), StatusCode::kDataLoss, "tensor 'u2.exp_avg' is BF16, expected F32");
}

TEST_F(ZeroCorruptionTest, MetaUnitMismatch) {
  EditMeta([](nlohmann::json& j) { j["units"][1]["params"][2]["shape"] = {34, 101}; });
  ExpectError(ReadMeta(save_to_).status(), StatusCode::kDataLoss,
              "unit 1 ('h.0'): parameter 'h.0.attn.c_attn.weight' has shape [34, 101]");
  EditMeta([](nlohmann::json& j) {
    j["units"][1]["params"][2]["shape"] = {34, 102};
    j["units"][2]["numel"] = 7;
  });
  ExpectError(ReadMeta(save_to_).status(), StatusCode::kDataLoss, "unit 2 ('h.1') has numel 7");
  EditMeta([](nlohmann::json& j) {
    j["units"][2]["numel"] = UnitsOf(TinyConfig())[2].numel;
    j["units"][2]["params"][3]["offset"] = 0;
  });
  ExpectError(ReadMeta(save_to_).status(), StatusCode::kDataLoss, "at offset 0, expected");
  EditMeta([](nlohmann::json& j) {
    j["units"][2]["params"][3]["offset"] = UnitsOf(TinyConfig())[2].params[3].offset;
    j["units"].erase(3);
  });
  ExpectError(ReadMeta(save_to_).status(), StatusCode::kDataLoss, "3 units, but the model config has 4");
  EditMeta([](nlohmann::json& j) { j["units"] = UnitsOf(TinyConfig()).size(); });
  ExpectError(ReadMeta(save_to_).status(), StatusCode::kDataLoss, "'units' is not an array");
  EditMeta([](nlohmann::json& j) {
    j.erase("units");
    j["config"]["n_layer"] = 3;
  });
  ExpectError(ReadMeta(save_to_).status(), StatusCode::kDataLoss, "'units' is missing");
}

TEST_F(ZeroCorruptionTest, MetaFieldsAndFormat) {
  const std::string meta_path = step_dir_ + "/meta.json";
  const nlohmann::json good = ReadJson(meta_path);
  auto expect = [&](const std::function<void(nlohmann::json&)>& edit, StatusCode code, const std::string& needle) {
    nlohmann::json j = good;
    edit(j);
    WriteJson(meta_path, j);
    ExpectError(ReadMeta(save_to_).status(), code, needle);
    EXPECT_NE(ReadMeta(save_to_).status().message().find(meta_path), std::string::npos);
  };
  expect([](auto& j) { j["format"] = "deepspeed"; }, StatusCode::kDataLoss, "format 'deepspeed'");
  expect([](auto& j) { j["version"] = 2; }, StatusCode::kInvalidArgument, "version 2 is not supported");
  expect([](auto& j) { j["zero"] = 4; }, StatusCode::kDataLoss, "'zero' = 4");
  expect([](auto& j) { j["precision"] = "fp8"; }, StatusCode::kDataLoss, "'fp8'");
  expect([](auto& j) { j["step"] = 21; }, StatusCode::kDataLoss, "step 21 in a directory named for step 20");
  expect([](auto& j) { j.erase("spec"); }, StatusCode::kDataLoss, "'spec' is missing");
  expect([](auto& j) { j["config"]["n_head"] = 5; }, StatusCode::kDataLoss, "not divisible by n_head");
  expect([](auto& j) { j["loss_scale"] = 0; }, StatusCode::kDataLoss, "'loss_scale'");
  expect([](auto& j) { j = nlohmann::json::array(); }, StatusCode::kDataLoss, "not a JSON object");
  ASSERT_TRUE(WriteFileAtomically(meta_path, "{\"format\": ").ok());
  ExpectError(ReadMeta(save_to_).status(), StatusCode::kDataLoss, "malformed JSON");
}

TEST_F(ZeroCorruptionTest, LatestPointingNowhere) {
  ASSERT_TRUE(WriteFileAtomically(save_to_ + "/latest", "step-00000099\n").ok());
  ExpectError(ReadMeta(save_to_).status(), StatusCode::kDataLoss, save_to_ + "/latest: names 'step-00000099'");
  ASSERT_TRUE(WriteFileAtomically(save_to_ + "/latest", "../../etc\n").ok());
  ExpectError(ReadMeta(save_to_).status(), StatusCode::kDataLoss, "does not name a step directory");
  ASSERT_TRUE(WriteFileAtomically(save_to_ + "/latest", "").ok());
  ExpectError(ReadMeta(save_to_).status(), StatusCode::kDataLoss, "does not name a step directory");
  std::filesystem::remove(save_to_ + "/latest");
  ExpectError(ReadMeta(save_to_).status(), StatusCode::kNotFound, "neither meta.json");
  ExpectError(ReadMeta(save_to_ + "/nope").status(), StatusCode::kNotFound, "no such checkpoint directory");
  // The step directory itself still reads.
  EXPECT_TRUE(ReadMeta(step_dir_).ok());
}

// ---- export ------------------------------------------------------------------------------------

// Checks out_dir/model.safetensors against the master values, converted by `round`.
void ExpectExported(const std::string& out_dir, const engine::ModelConfig& config, format::DType dtype) {
  auto file = format::SafetensorsFile::Open(out_dir + "/model.safetensors");
  ASSERT_TRUE(file.ok()) << file.status().ToString();
  const auto units = UnitsOf(config);
  size_t count = 0;
  for (size_t u = 0; u < units.size(); ++u) {
    for (const auto& p : units[u].params) {
      const std::string name = p.name == "lm_head.weight" ? p.name : "transformer." + p.name;
      const format::TensorView* v = file->Find(name);
      ASSERT_NE(v, nullptr) << name;
      EXPECT_EQ(v->dtype, dtype) << name;
      EXPECT_EQ(v->shape, p.shape) << name;
      const std::vector<float> want = Values(u, p.offset, p.offset + v->numel(), 0);
      for (size_t i = 0; i < want.size(); ++i) {
        if (dtype == format::DType::kF32) {
          float got;
          std::memcpy(&got, v->data + 4 * i, 4);
          ASSERT_EQ(got, want[i]) << name << "[" << i << "]";
        } else {
          uint16_t got;
          std::memcpy(&got, v->data + 2 * i, 2);
          const uint16_t expect =
              dtype == format::DType::kBF16 ? FloatToBf16(want[i]) : FloatToF16(want[i]);
          ASSERT_EQ(got, expect) << name << "[" << i << "]";
        }
      }
      ++count;
    }
  }
  EXPECT_EQ(file->tensors().size(), count);
  EXPECT_EQ(count, engine::ParameterLayout(config).size());
  auto parsed = engine::LoadModelConfig(out_dir);
  ASSERT_TRUE(parsed.ok()) << parsed.status().ToString();
  EXPECT_EQ(parsed->ToJson(), config.ToJson());
}

TEST(ZeroExportTest, WritesTheMasterWeightsInHfLayout) {
  for (bool tied : {true, false}) {
    const engine::ModelConfig config = TinyConfig(tied);
    const std::string root = ScratchDir(tied ? "_tied" : "_untied");
    const std::string model_dir = root + "/model";
    std::filesystem::create_directories(model_dir);
    ASSERT_TRUE(WriteFileAtomically(model_dir + "/encoder.json", "{\"a\": 0}").ok());
    ASSERT_TRUE(WriteFileAtomically(model_dir + "/merges.txt", "#version: 0.2\n").ok());
    WriteSynthetic(root + "/save", config, 3, 5, model_dir);
    for (format::DType dtype : {format::DType::kF32, format::DType::kBF16, format::DType::kF16}) {
      const std::string out = root + "/out-" + format::DTypeName(dtype);
      ExportReport report;
      const Status s = ExportCheckpoint(root + "/save", out, dtype, &report);
      ASSERT_TRUE(s.ok()) << s.ToString();
      EXPECT_EQ(report.step, 5);
      EXPECT_EQ(report.parameters, config.NumParameters());
      EXPECT_EQ(report.copied, (std::vector<std::string>{"vocab.json", "merges.txt"}));
      ExpectExported(out, config, dtype);
      auto vocab = ReadFile(out + "/vocab.json");
      ASSERT_TRUE(vocab.ok());
      EXPECT_EQ(*vocab, "{\"a\": 0}");
    }
  }
}

TEST(ZeroExportTest, RefusesANonEmptyOutputAndBrokenCheckpoints) {
  const std::string root = ScratchDir();
  const std::string step_dir = WriteSynthetic(root + "/save", TinyConfig(), 2, 3);
  std::filesystem::create_directories(root + "/full");
  ASSERT_TRUE(WriteFileAtomically(root + "/full/x", "x").ok());
  ExpectError(ExportCheckpoint(root + "/save", root + "/full", format::DType::kF32), StatusCode::kInvalidArgument,
              root + "/full: exists and is not empty");
  ExpectError(ExportCheckpoint(root + "/save", root + "/full/x", format::DType::kF32), StatusCode::kInvalidArgument,
              "not a directory");
  ExpectError(ExportCheckpoint(root + "/save", root + "/i8", format::DType::kI8), StatusCode::kInvalidArgument,
              "cannot export as I8");
  // An empty existing directory is fine; no model directory means no tokenizer files.
  std::filesystem::create_directories(root + "/empty");
  ExportReport report;
  ASSERT_TRUE(ExportCheckpoint(step_dir, root + "/empty", format::DType::kF32, &report).ok());
  EXPECT_TRUE(report.copied.empty());
  std::filesystem::remove(step_dir + "/" + RankFileName(1, 2));
  ExpectError(ExportCheckpoint(root + "/save", root + "/missing", format::DType::kF32), StatusCode::kDataLoss,
              "missing");
  EXPECT_FALSE(std::filesystem::exists(root + "/missing/model.safetensors"));
}

}  // namespace
}  // namespace fuji::ckpt
