// Safetensors checkpoints: a validating zero-copy reader and a streaming writer.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "lib/common/file_util.h"
#include "lib/common/status.h"
#include "lib/format/tensor_index.h"
#include "lib/format/tensor_view.h"

namespace fuji::format {

// A memory-mapped .safetensors file whose header has been fully validated: every tensor's bytes
// lie inside the data section, match its dtype and shape, and overlap no other tensor (gaps are
// allowed). Duplicate tensor names are refused. Move-only.
class SafetensorsFile {
 public:
  // DATA_LOSS for a corrupt file, INVALID_ARGUMENT for a well-formed one this reader does not
  // support (e.g. a dtype outside DType); messages name the file and the tensor or field.
  static Result<SafetensorsFile> Open(const std::string& path);

  SafetensorsFile(SafetensorsFile&&) = default;
  SafetensorsFile& operator=(SafetensorsFile&&) = default;
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const std::vector<TensorView>& tensors() const { return tensors_; }  // in data-offset order
  const TensorView* Find(std::string_view name) const { return index_.Find(tensors_, name); }
  // The "__metadata__" string map.
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  const std::string& path() const { return file_.path(); }
  const MappedFile& file() const { return file_; }

 private:
  SafetensorsFile() = default;

  MappedFile file_;
  std::vector<TensorView> tensors_;
  TensorIndex index_;
  std::map<std::string, std::string> metadata_;
};

struct TensorSpec {
  std::string name;
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
};

// Streams a safetensors file tensor by tensor, never holding more than the caller's buffer. The
// header is computed from the specs up front (JSON padded with spaces to a multiple of 8 bytes,
// data offsets in spec order). Write() appends the tensors' bytes strictly in spec order and may
// be called several times per tensor. Finish() checks every byte was written, fsyncs and renames
// the partial file to path. The partial file is "<path>.partial-<16 random hex digits>", created
// O_EXCL|O_NOFOLLOW (nothing planted there is written through); the rename replaces whatever is at
// path (a symbolic link included) without following it. Destroying an unfinished writer removes
// the partial file. Move-only.
class SafetensorsWriter {
 public:
  // INVALID_ARGUMENT for duplicate or reserved names, negative or overflowing shapes. The file
  // gets `mode`: 0600 for what only its writer reads (checkpoints), 0644 for what is made for
  // others (an exported or initialized model).
  static Result<SafetensorsWriter> Create(const std::string& path, std::vector<TensorSpec> specs,
                                          std::map<std::string, std::string> metadata = {},
                                          unsigned mode = 0600);

  SafetensorsWriter(SafetensorsWriter&& other) noexcept;
  SafetensorsWriter& operator=(SafetensorsWriter&& other) noexcept;
  SafetensorsWriter(const SafetensorsWriter&) = delete;
  SafetensorsWriter& operator=(const SafetensorsWriter&) = delete;
  ~SafetensorsWriter();

  // INVALID_ARGUMENT (and nothing written) when the bytes would run past the last tensor.
  Status Write(const void* data, size_t nbytes);
  // INVALID_ARGUMENT naming the first incomplete tensor when bytes are missing.
  Status Finish();
  // Where the bytes go until Finish(); "" once finished or abandoned.
  const std::string& partial_path() const { return partial_path_; }

 private:
  SafetensorsWriter() = default;
  // The spec whose bytes include data offset `offset`; the last one when offset is the end.
  const TensorSpec& SpecAt(uint64_t offset) const;
  Status Fail(Status status);
  void Abandon();

  std::string path_;
  std::string partial_path_;
  int fd_ = -1;
  std::vector<TensorSpec> specs_;
  std::vector<uint64_t> ends_;  // data offset where each spec's bytes end
  uint64_t written_ = 0;        // data bytes written so far
  bool finished_ = false;
  Status error_;  // sticky: after an I/O failure the partial file is unusable
};

}  // namespace fuji::format
