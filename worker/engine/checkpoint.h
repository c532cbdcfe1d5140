// Checkpoint directories in HF layout: loading (safetensors, sharded safetensors, pytorch_model.bin
// and its sharded form) into a Gpt2Model, and writing safetensors directories tensor by tensor.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <ATen/core/Tensor.h>

#include "lib/common/status.h"
#include "worker/engine/gpt2_model.h"
#include "lib/format/tensor_view.h"

namespace fuji::engine {

struct LoadOptions {
  at::ScalarType dtype = at::kFloat;
  at::Device device = at::kCPU;
  // On the host: each parameter in an allocation of its own instead of one arena for all, so that
  // a caller that moves the parameters elsewhere one by one (parameter offload's shards) frees
  // each as it goes and never holds two copies of the weights.
  bool host_allocation_per_param = false;
  // Drop each tensor's pages of the mapped checkpoint from this process once it is copied, so that
  // the resident set holds the file's pages of one tensor at a time, not of the whole file.
  bool release_file_pages = false;
};

struct LoadReport {
  std::string format;        // "safetensors", "safetensors-sharded", "pytorch", "pytorch-sharded"
  int64_t bytes = 0;         // bytes of parameters read from the files
  int64_t files = 0;
  std::vector<std::string> ignored;  // tensors in the files that the model does not use
};

// Loads config.json and the weights of dir. Errors name the file and the tensor.
Result<std::unique_ptr<Gpt2Model>> LoadModel(const std::string& dir, const LoadOptions& options,
                                             LoadReport* report = nullptr);

class CheckpointFiles;

// A checkpoint directory opened for reading parameters piece by piece: its config, its weight
// files mapped (any layout LoadModel reads), and every parameter of ParameterLayout(config) found
// and checked (shape, floating-point dtype). Nothing of the weights is read until asked: a caller
// that needs a slice of a tensor faults in only the pages of that slice (of the whole tensor when
// it is stored strided, as a torch.save of a transposed view is), and ReleasePages drops them from
// the resident set again. Move-only.
class CheckpointReader {
 public:
  static Result<CheckpointReader> Open(const std::string& dir);
  CheckpointReader(CheckpointReader&&) noexcept;
  CheckpointReader& operator=(CheckpointReader&&) noexcept;
  ~CheckpointReader();

  const ModelConfig& config() const { return config_; }
  const std::string& format() const;
  // Copies elements [begin, end) of parameter `index`'s row-major flat numbering into `out` (a
  // contiguous tensor of end - begin elements, any floating-point dtype and device), converting
  // as it copies. INVALID_ARGUMENT for an index or range out of bounds, or a wrong `out`.
  Status Read(size_t index, int64_t begin, int64_t end, const at::Tensor& out);
  // Drops the file pages that the reads since the last call touched (whole pages only).
  void ReleasePages();
  // Bytes of the files read so far (whole tensors count their full range when strided).
  int64_t bytes_read() const { return bytes_read_; }

 private:
  CheckpointReader() = default;
  std::string dir_;
  ModelConfig config_;
  std::unique_ptr<CheckpointFiles> files_;
  std::vector<const format::TensorView*> views_;  // per ParameterLayout index
  std::vector<std::pair<const uint8_t*, size_t>> touched_;
  int64_t bytes_read_ = 0;
};

// Produces parameter `index` of ParameterLayout(config) as a tensor of any dtype and device.
using ParamSource = std::function<Result<at::Tensor>(size_t index)>;

// Writes dir/config.json and dir/model.safetensors holding the parameters in `dtype`, asking
// `source` for one tensor at a time so that only one is held beside the file. Names carry HF's
// "transformer." prefix; the tied output embedding is stored once, as HF does. Tokenizer files
// (vocab.json, merges.txt) are copied from vocab_dir when it is not empty.
Status WriteCheckpoint(const ModelConfig& config, const std::string& dir, format::DType dtype,
                       const ParamSource& source, const std::string& vocab_dir);

// Rewrites any loadable checkpoint as model.safetensors, streaming tensor by tensor.
// dtype: the file's own when unset.
Status ConvertCheckpoint(const std::string& in_dir, const std::string& out_dir,
                         std::optional<format::DType> dtype);

Result<at::ScalarType> ToScalarType(format::DType dtype);
Result<format::DType> ToFormatDType(at::ScalarType type);
// "fp32" | "bf16" | "fp16" (also "float32", "bfloat16", "float16").
Result<at::ScalarType> ParsePrecision(const std::string& name);

}  // namespace fuji::engine
