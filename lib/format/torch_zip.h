// PyTorch torch.save zip checkpoints (pytorch_model.bin) read without libtorch.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "lib/common/file_util.h"
#include "lib/common/status.h"
#include "lib/format/tensor_index.h"
#include "lib/format/tensor_view.h"

namespace fuji::format {

// A memory-mapped torch.save zip whose state dict was read by a restricted unpickler (no code
// execution: only the globals a state dict needs), with tensors as zero-copy views into the
// stored storage records. Views may be strided or share storage (tied weights, offset views).
// Non-parameter buffers such as GPT-2's "h.0.attn.bias" mask are returned too. Move-only.
class TorchZipFile {
 public:
  // DATA_LOSS for a corrupt zip, pickle or storage; INVALID_ARGUMENT for well-formed content this
  // reader does not support (compressed entries, a refused global, a value that is not a tensor).
  // Messages name the file.
  static Result<TorchZipFile> Open(const std::string& path);

  TorchZipFile(TorchZipFile&&) = default;
  TorchZipFile& operator=(TorchZipFile&&) = default;
  TorchZipFile(const TorchZipFile&) = delete;
  TorchZipFile& operator=(const TorchZipFile&) = delete;

  const std::vector<TensorView>& tensors() const { return tensors_; }  // in pickle order
  const TensorView* Find(std::string_view name) const { return index_.Find(tensors_, name); }
  const std::string& path() const { return file_.path(); }

 private:
  TorchZipFile() = default;

  MappedFile file_;
  std::vector<TensorView> tensors_;
  TensorIndex index_;
};

}  // namespace fuji::format
