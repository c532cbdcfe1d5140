// ExportCheckpoint then engine::LoadModel: every parameter of the loaded model equals the master
// weights the ranks wrote (exactly in fp32, rounded once in bf16), tied and untied.
#include <sys/wait.h>

#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "tests/unit/zero_checkpoint_fixture.h"
#include "lib/common/half.h"
#include "worker/engine/checkpoint.h"

namespace fuji::ckpt {
namespace {

using testing::ScratchDir;
using testing::TinyConfig;
using testing::Values;
using testing::WriteSynthetic;

TEST(CkptExportTest, LoadModelSeesTheWrittenMasterWeights) {
  for (bool tied : {true, false}) {
    for (format::DType dtype : {format::DType::kF32, format::DType::kBF16}) {
      const engine::ModelConfig config = TinyConfig(tied);
      const std::string root = ScratchDir(std::string(tied ? "_tied_" : "_untied_") + format::DTypeName(dtype));
      WriteSynthetic(root + "/save", config, 3, 7);
      const Status s = ExportCheckpoint(root + "/save", root + "/out", dtype);
      ASSERT_TRUE(s.ok()) << s.ToString();

      engine::LoadReport report;
      auto model = engine::LoadModel(root + "/out", engine::LoadOptions{}, &report);
      ASSERT_TRUE(model.ok()) << model.status().ToString();
      EXPECT_EQ(report.format, "safetensors");
      EXPECT_TRUE(report.ignored.empty());
      const auto& params = (*model)->parameters();
      const auto layout = engine::ParameterLayout(config);
      ASSERT_EQ(params.size(), layout.size());
      size_t index = 0;
      const auto units = UnitsOf(config);
      for (size_t u = 0; u < units.size(); ++u) {
        for (const auto& p : units[u].params) {
          const at::Tensor got = params[index++].to(at::kFloat).contiguous();
          ASSERT_EQ(got.sizes().vec(), p.shape) << p.name;
          std::vector<float> want = Values(u, p.offset, p.offset + got.numel(), 0);
          if (dtype == format::DType::kBF16) {
            for (float& w : want) w = Bf16ToFloat(FloatToBf16(w));
          }
          const at::Tensor expected = at::from_blob(want.data(), got.sizes(), at::kFloat);
          EXPECT_TRUE(at::equal(got, expected)) << p.name << " (" << format::DTypeName(dtype) << ")";
        }
      }
      EXPECT_EQ((*model)->config().ToJson(), config.ToJson());
    }
  }
}

// `fuji model export` itself: the binary's exit status and output, for a good and a refused export.
int RunFuji(const std::string& args, std::string* output) {
  const std::string cmd = std::string(FUJI_BINARY_DIR) + "/bin/fuji " + args + " 2>&1";
  FILE* pipe = ::popen(cmd.c_str(), "r");
  if (!pipe) return -1;
  char buf[4096];
  output->clear();
  while (size_t n = std::fread(buf, 1, sizeof buf, pipe)) output->append(buf, n);
  const int status = ::pclose(pipe);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

TEST(CkptExportTest, FujiModelExport) {
  const engine::ModelConfig config = TinyConfig();
  const std::string root = ScratchDir();
  WriteSynthetic(root + "/save", config, 2, 3);
  std::string out;
  ASSERT_EQ(RunFuji("model export --from " + root + "/save --out " + root + "/out --dtype fp16", &out), 0) << out;
  EXPECT_NE(out.find("wrote " + root + "/out: " + std::to_string(config.NumParameters()) + " parameters (fp16)"),
            std::string::npos)
      << out;
  engine::LoadOptions options;
  options.dtype = at::kHalf;
  auto model = engine::LoadModel(root + "/out", options);
  ASSERT_TRUE(model.ok()) << model.status().ToString();
  const at::Tensor ln_f = (*model)->parameters()[static_cast<size_t>(engine::param_index::LnfW(config))];
  EXPECT_EQ(ln_f.scalar_type(), at::kHalf);
  std::vector<float> want = Values(3, 0, config.n_embd, 0);
  for (float& w : want) w = F16ToFloat(FloatToF16(w));
  EXPECT_TRUE(at::equal(ln_f.to(at::kFloat), at::from_blob(want.data(), {config.n_embd}, at::kFloat)));

  EXPECT_EQ(RunFuji("model export --from " + root + "/save --out " + root + "/out", &out), 2);
  EXPECT_EQ(out, "fuji: " + root + "/out: exists and is not empty\n");
  EXPECT_NE(RunFuji("model export --from " + root + " --out " + root + "/out2", &out), 0);
  EXPECT_NE(out.find("not a checkpoint"), std::string::npos) << out;
}

}  // namespace
}  // namespace fuji::ckpt
