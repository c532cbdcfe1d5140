// Loading a checkpoint straight into a rank's ZeRO states (train::ZeroModel::Load): at stage 3
// with 2 and 3 ranks (Gloo over a file rendezvous, one thread per rank) every rank's parameters
// are bit for bit the ones a whole-model load gives, for a single safetensors file, a sharded one
// and a pytorch_model.bin whose tensors are strided views at storage offsets, in fp32 and bf16.
// And engine::CheckpointReader's slices and its errors.
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "lib/common/file_util.h"
#include "lib/format/safetensors.h"
#include "lib/zero/layout.h"
#include "worker/dist/communicator.h"
#include "worker/engine/checkpoint.h"
#include "worker/engine/random_init.h"
#include "worker/train/zero_model.h"

namespace fuji::train {
namespace {

// Rewrites SRC/model.safetensors as DST/pytorch_model.bin with torch.save: every matrix stored
// transposed (a column-major view of its storage), every vector at an offset of a larger storage.
constexpr char kStridedBin[] = R"(
import os, sys
from collections import OrderedDict
import torch
sys.path.insert(0, sys.argv[3])
from gpt2_reference import read_safetensors
state = OrderedDict()
for name, t in read_safetensors(os.path.join(sys.argv[1], "model.safetensors")).items():
    if t.dim() == 2:
        state[name] = t.t().contiguous().t()
    else:
        state[name] = torch.cat([torch.zeros(3, dtype=t.dtype), t.reshape(-1)])[3:].view(t.shape)
torch.save(state, os.path.join(sys.argv[2], "pytorch_model.bin"))
)";

class ZeroLoadTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    at::set_num_threads(1);
    dir_ = std::string(FUJI_BINARY_DIR) + "/zero_load_test_" + std::to_string(::getpid());
    ASSERT_EQ(std::system(("rm -rf " + dir_ + " && mkdir -p " + dir_).c_str()), 0);
    config_ = *engine::ArchitectureConfig("tiny");
    config_.vocab_size = 515;  // units whose sizes 2 and 3 ranks do not divide
    config_.n_positions = 37;
    ASSERT_TRUE(config_.Validate().ok());
    const std::string single = dir_ + "/single";
    ASSERT_TRUE(engine::WriteRandomCheckpoint(config_, single, 11, format::DType::kF32, "").ok());

    // Sharded safetensors: the tensors split over two files and an index.
    const std::string sharded = dir_ + "/sharded";
    ASSERT_EQ(std::system(("mkdir -p " + sharded + " && cp " + single + "/config.json " + sharded).c_str()), 0);
    auto file = format::SafetensorsFile::Open(single + "/model.safetensors");
    ASSERT_TRUE(file.ok());
    const auto& tensors = file->tensors();
    nlohmann::json weight_map;
    for (size_t shard = 0; shard < 2; ++shard) {
      const std::string name = "model-0000" + std::to_string(shard + 1) + "-of-00002.safetensors";
      const size_t begin = shard == 0 ? 0 : tensors.size() / 2, end = shard == 0 ? tensors.size() / 2 : tensors.size();
      std::vector<format::TensorSpec> specs;
      for (size_t i = begin; i < end; ++i) {
        specs.push_back({tensors[i].name, tensors[i].dtype, tensors[i].shape});
        weight_map[tensors[i].name] = name;
      }
      auto writer = format::SafetensorsWriter::Create(sharded + "/" + name, specs);
      ASSERT_TRUE(writer.ok());
      for (size_t i = begin; i < end; ++i) ASSERT_TRUE(writer->Write(tensors[i].data, tensors[i].nbytes).ok());
      ASSERT_TRUE(writer->Finish().ok());
    }
    ASSERT_TRUE(WriteFileAtomically(sharded + "/model.safetensors.index.json",
                                    nlohmann::json({{"weight_map", weight_map}}).dump())
                    .ok());

    // pytorch_model.bin with strided views (Debian's python3-torch).
    const std::string bin = dir_ + "/bin";
    ASSERT_EQ(std::system(("mkdir -p " + bin + " && cp " + single + "/config.json " + bin).c_str()), 0);
    std::ofstream(dir_ + "/strided_bin.py") << kStridedBin;
    const std::string scripts = std::string(FUJI_SOURCE_DIR) + "/tests/reference";
    ASSERT_EQ(std::system(("/usr/bin/python3 " + dir_ + "/strided_bin.py " + single + " " + bin + " " + scripts).c_str()),
              0);
  }
  static void TearDownTestSuite() { std::system(("rm -rf " + dir_).c_str()); }

  // Each rank's optimizer-state partition of every unit after loading `model` at `stage` with
  // `world` ranks, one thread per rank; FUJI_LOAD_WHOLE selects the path when `whole`.
  static std::vector<std::vector<UnitState>> LoadRanks(const std::string& model, int world, int stage,
                                                       at::ScalarType dtype, const std::string& tag) {
    std::vector<std::vector<UnitState>> states(static_cast<size_t>(world));
    std::vector<std::string> errors(static_cast<size_t>(world));
    const std::string rendezvous = "file:" + dir_ + "/store-" + tag;
    std::vector<std::thread> threads;
    for (int rank = 0; rank < world; ++rank) {
      threads.emplace_back([&, rank] {
        dist::CommOptions o;
        o.rank = rank;
        o.world_size = world;
        o.rendezvous = rendezvous;
        o.timeout = std::chrono::milliseconds(30000);
        auto comm = dist::Communicator::Create(o);
        if (!comm.ok()) {
          errors[static_cast<size_t>(rank)] = comm.status().ToString();
          return;
        }
        ZeroOptions options;
        options.stage = stage;
        options.dtype = dtype;
        options.optimizer_threads = 1;
        auto loaded = ZeroModel::Load(model, options, comm->get());
        if (!loaded.ok()) {
          errors[static_cast<size_t>(rank)] = loaded.status().ToString();
          return;
        }
        states[static_cast<size_t>(rank)] = (*loaded)->SaveState();
        (*comm)->Barrier();
      });
    }
    for (auto& t : threads) t.join();
    for (int rank = 0; rank < world; ++rank) EXPECT_EQ(errors[static_cast<size_t>(rank)], "") << "rank " << rank;
    return states;
  }

  // The unpadded flat values of every unit as the whole-model load (engine::LoadModel) gives them
  // in `dtype`, in fp32.
  static std::vector<at::Tensor> WholeUnits(const std::string& model, at::ScalarType dtype) {
    auto whole = engine::LoadModel(model, {dtype, at::kCPU});
    EXPECT_TRUE(whole.ok()) << whole.status().ToString();
    std::vector<at::Tensor> units;
    if (!whole.ok()) return units;
    const zero::Layout layout((*whole)->config());
    for (const zero::Unit& unit : layout.units()) {
      std::vector<at::Tensor> parts;
      for (const zero::UnitParam& p : unit.params) {
        parts.push_back((*whole)->parameters()[static_cast<size_t>(p.index)].reshape({-1}).to(at::kFloat));
      }
      units.push_back(at::cat(parts));
    }
    return units;
  }

  static std::string dir_;
  static engine::ModelConfig config_;
};

std::string ZeroLoadTest::dir_;
engine::ModelConfig ZeroLoadTest::config_;

bool SameBits(const std::vector<float>& values, const at::Tensor& expected) {
  const at::Tensor e = expected.contiguous();
  return static_cast<int64_t>(values.size()) == e.numel() &&
         std::memcmp(values.data(), e.data_ptr<float>(), values.size() * sizeof(float)) == 0;
}

TEST_F(ZeroLoadTest, StageThreeShardsAreTheWholeLoadsBitForBit) {
  int runs = 0;
  for (const char* format : {"single", "sharded", "bin"}) {
    const std::string model = dir_ + "/" + format;
    for (at::ScalarType dtype : {at::kFloat, at::kBFloat16}) {
      const std::vector<at::Tensor> whole = WholeUnits(model, dtype);
      ASSERT_FALSE(whole.empty());
      for (int world : {2, 3}) {
        const std::string what = std::string(format) + " " + c10::toString(dtype) + " on " + std::to_string(world);
        const auto ranks = LoadRanks(model, world, 3, dtype, std::to_string(runs++));
        for (int rank = 0; rank < world; ++rank) {
          const auto& units = ranks[static_cast<size_t>(rank)];
          ASSERT_EQ(units.size(), whole.size()) << what;
          for (size_t u = 0; u < units.size(); ++u) {
            const UnitState& s = units[u];
            EXPECT_EQ(std::make_pair(s.begin, s.end), zero::PartitionRange(whole[u].numel(), world, rank)) << what;
            EXPECT_TRUE(SameBits(s.master, whole[u].narrow(0, s.begin, s.end - s.begin)))
                << what << ": rank " << rank << ", unit " << u;
          }
        }
      }
    }
  }
}

// Stages 0-2 read whole units; their partitions are the whole load's too (one case each).
TEST_F(ZeroLoadTest, StagesZeroToTwoAreTheWholeLoads) {
  const std::vector<at::Tensor> whole = WholeUnits(dir_ + "/bin", at::kBFloat16);
  for (int stage = 0; stage <= 2; ++stage) {
    const auto ranks = LoadRanks(dir_ + "/bin", 2, stage, at::kBFloat16, "stage" + std::to_string(stage));
    for (int rank = 0; rank < 2; ++rank) {
      const auto& units = ranks[static_cast<size_t>(rank)];
      ASSERT_EQ(units.size(), whole.size());
      for (size_t u = 0; u < units.size(); ++u) {
        const UnitState& s = units[u];
        EXPECT_TRUE(SameBits(s.master, whole[u].narrow(0, s.begin, s.end - s.begin)))
            << "stage " << stage << ", rank " << rank << ", unit " << u;
      }
    }
  }
}

TEST_F(ZeroLoadTest, ReaderSlicesAndErrors) {
  auto reader = engine::CheckpointReader::Open(dir_ + "/bin");
  ASSERT_TRUE(reader.ok()) << reader.status().ToString();
  EXPECT_EQ(reader->format(), "pytorch");
  auto whole = engine::LoadModel(dir_ + "/single", {});
  ASSERT_TRUE(whole.ok());
  // wte, strided in the file: a slice across rows, starting and ending inside rows.
  const at::Tensor wte = (*whole)->parameters()[0].reshape({-1});
  const int64_t begin = config_.n_embd / 2 + 5, end = 7 * config_.n_embd + 3;
  at::Tensor out = at::empty({end - begin}, at::kDouble);
  ASSERT_TRUE(reader->Read(0, begin, end, out).ok());
  EXPECT_TRUE(at::equal(out.to(at::kFloat), wte.narrow(0, begin, end - begin)));
  reader->ReleasePages();
  EXPECT_GT(reader->bytes_read(), 0);

  EXPECT_EQ(reader->Read(0, 5, 4, at::empty({0})).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(reader->Read(0, 0, wte.numel() + 1, at::empty({wte.numel() + 1})).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(reader->Read(0, 0, 4, at::empty({5})).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(reader->Read(0, 0, 4, at::empty({4}, at::kLong)).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(reader->Read(100000, 0, 4, at::empty({4})).code(), StatusCode::kInvalidArgument);
  const Status bad = reader->Read(0, -1, 4, at::empty({5}));
  EXPECT_EQ(bad.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(bad.message().find("wte.weight"), std::string::npos) << bad.message();
  EXPECT_EQ(engine::CheckpointReader::Open(dir_ + "/missing").status().code(), StatusCode::kNotFound);
}

}  // namespace
}  // namespace fuji::train
