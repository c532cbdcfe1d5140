// Checkpoint loading and writing. Weight files are memory-mapped and each tensor is converted
// straight from the map into its destination (dtype, device): the bytes are read once.
#include "worker/engine/checkpoint.h"

#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <map>
#include <optional>
#include <set>
#include <unordered_map>

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>

#include "lib/common/file_util.h"
#include "lib/common/json_bounds.h"
#include "worker/engine/host_arena.h"
#include "lib/format/safetensors.h"
#include "lib/format/torch_zip.h"
#include "lib/text/vocab_files.h"

namespace fuji::engine {
namespace {

std::string ShapeString(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

// Names as the model knows them: HF's GPT2LMHeadModel prefixes the body with "transformer.".
std::string CanonicalName(const std::string& name) {
  static const std::string kPrefix = "transformer.";
  return name.compare(0, kPrefix.size(), kPrefix) == 0 ? name.substr(kPrefix.size()) : name;
}

// Causal-mask buffers that old GPT-2 checkpoints store per layer; not parameters.
bool IsMaskBuffer(const std::string& name) {
  auto ends_with = [&](const std::string& suffix) {
    return name.size() >= suffix.size() && name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0;
  };
  return ends_with(".attn.bias") || ends_with(".attn.masked_bias");
}

}  // namespace

// The weight files of a checkpoint directory, mapped, with an index from canonical name to view.
class CheckpointFiles {
 public:
  static Result<CheckpointFiles> Open(const std::string& dir) {
    if (!IsDirectory(dir)) return NotFound(dir + ": no such checkpoint directory");
    CheckpointFiles files;
    if (IsRegularFile(dir + "/model.safetensors")) {
      files.format_ = "safetensors";
      FUJI_RETURN_IF_ERROR(files.AddSafetensors(dir + "/model.safetensors"));
    } else if (IsRegularFile(dir + "/model.safetensors.index.json")) {
      files.format_ = "safetensors-sharded";
      FUJI_RETURN_IF_ERROR(files.AddShards(dir, "model.safetensors.index.json", true));
    } else if (IsRegularFile(dir + "/pytorch_model.bin")) {
      files.format_ = "pytorch";
      FUJI_RETURN_IF_ERROR(files.AddTorchZip(dir + "/pytorch_model.bin"));
    } else if (IsRegularFile(dir + "/pytorch_model.bin.index.json")) {
      files.format_ = "pytorch-sharded";
      FUJI_RETURN_IF_ERROR(files.AddShards(dir, "pytorch_model.bin.index.json", false));
    } else {
      return NotFound(dir + ": no model.safetensors, model.safetensors.index.json, pytorch_model.bin "
                      "or pytorch_model.bin.index.json");
    }
    return files;
  }

  const format::TensorView* Find(const std::string& canonical) const {
    auto it = by_name_.find(canonical);
    return it == by_name_.end() ? nullptr : it->second;
  }
  const std::string& format() const { return format_; }
  int64_t file_count() const { return static_cast<int64_t>(safetensors_.size() + torch_zips_.size()); }
  std::vector<std::string> Names() const {
    std::vector<std::string> names;
    for (const auto& [name, view] : by_name_) names.push_back(name);
    return names;
  }

 private:
  Status Index(const std::vector<format::TensorView>& views, const std::string& path) {
    for (const auto& v : views) {
      const std::string name = CanonicalName(v.name);
      if (!by_name_.emplace(name, &v).second) {
        return DataLoss(path + ": tensor '" + v.name + "' appears in more than one place");
      }
    }
    return Status::Ok();
  }

  Status AddSafetensors(const std::string& path) {
    FUJI_ASSIGN_OR_RETURN(auto file, format::SafetensorsFile::Open(path));
    safetensors_.push_back(std::make_unique<format::SafetensorsFile>(std::move(file)));
    return Index(safetensors_.back()->tensors(), path);
  }

  Status AddTorchZip(const std::string& path) {
    FUJI_ASSIGN_OR_RETURN(auto file, format::TorchZipFile::Open(path));
    torch_zips_.push_back(std::make_unique<format::TorchZipFile>(std::move(file)));
    return Index(torch_zips_.back()->tensors(), path);
  }

  // HF's sharded layout: an index whose "weight_map" names, for each tensor, its file.
  Status AddShards(const std::string& dir, const std::string& index_name, bool safetensors) {
    const std::string index_path = dir + "/" + index_name;
    FUJI_ASSIGN_OR_RETURN(std::string text, ReadFile(index_path, 64u << 20));
    nlohmann::json index = ParseJsonBounded(text);
    if (index.is_discarded() || !index.is_object()) return DataLoss(index_path + ": malformed JSON");
    auto map = index.find("weight_map");
    if (map == index.end() || !map->is_object() || map->empty()) {
      return DataLoss(index_path + ": missing or empty 'weight_map'");
    }
    std::set<std::string> shards;
    for (const auto& [tensor, file] : map->items()) {
      if (!file.is_string()) return DataLoss(index_path + ": weight_map['" + tensor + "'] is not a file name");
      const std::string name = file.get<std::string>();
      if (name.empty() || name.find('/') != std::string::npos || name == "." || name == "..") {
        return InvalidArgument(index_path + ": shard '" + name + "' is not a file in the checkpoint directory");
      }
      shards.insert(name);
    }
    for (const auto& shard : shards) {
      const std::string path = dir + "/" + shard;
      FUJI_RETURN_IF_ERROR(safetensors ? AddSafetensors(path) : AddTorchZip(path));
    }
    for (const auto& [tensor, file] : map->items()) {
      if (Find(CanonicalName(tensor)) == nullptr) {
        return DataLoss(index_path + ": tensor '" + tensor + "' is not in " + file.get<std::string>());
      }
    }
    return Status::Ok();
  }

  std::string format_;
  std::vector<std::unique_ptr<format::SafetensorsFile>> safetensors_;
  std::vector<std::unique_ptr<format::TorchZipFile>> torch_zips_;
  std::unordered_map<std::string, const format::TensorView*> by_name_;
};

namespace {

bool IsFloatingPoint(format::DType d) {
  return d == format::DType::kF64 || d == format::DType::kF32 || d == format::DType::kF16 ||
         d == format::DType::kBF16;
}

// Drops the whole pages of [data, data + nbytes) of a read-only file mapping from this process's
// resident set: a later read faults them in again from the file. Partial pages at the edges stay
// (they may hold a neighbouring tensor).
void ReleaseMappedPages(const uint8_t* data, size_t nbytes) {
  const uintptr_t page = static_cast<uintptr_t>(::sysconf(_SC_PAGESIZE));
  const uintptr_t begin = (reinterpret_cast<uintptr_t>(data) + page - 1) / page * page;
  const uintptr_t end = (reinterpret_cast<uintptr_t>(data) + nbytes) / page * page;
  if (end > begin) (void)::madvise(reinterpret_cast<void*>(begin), end - begin, MADV_DONTNEED);
}

// A non-owning tensor over a view's bytes in the map.
Result<at::Tensor> ViewTensor(const format::TensorView& view) {
  FUJI_ASSIGN_OR_RETURN(at::ScalarType type, ToScalarType(view.dtype));
  return at::from_blob(const_cast<uint8_t*>(view.data), view.shape, view.strides,
                       at::TensorOptions().dtype(type));
}

Result<const format::TensorView*> FindParam(const CheckpointFiles& files, const ParamInfo& info,
                                            const std::string& dir) {
  const format::TensorView* view = files.Find(info.name);
  if (view == nullptr) return NotFound(dir + ": missing tensor '" + info.name + "'");
  if (view->shape != info.shape) {
    return InvalidArgument(dir + ": tensor '" + view->name + "' has shape " + ShapeString(view->shape) +
                           ", expected " + ShapeString(info.shape));
  }
  return view;
}

}  // namespace

Result<at::ScalarType> ToScalarType(format::DType dtype) {
  switch (dtype) {
    case format::DType::kF64: return at::kDouble;
    case format::DType::kF32: return at::kFloat;
    case format::DType::kF16: return at::kHalf;
    case format::DType::kBF16: return at::kBFloat16;
    case format::DType::kI64: return at::kLong;
    case format::DType::kI32: return at::kInt;
    case format::DType::kI16: return at::kShort;
    case format::DType::kI8: return at::kChar;
    case format::DType::kU8: return at::kByte;
    case format::DType::kBool: return at::kBool;
  }
  return InvalidArgument("unsupported dtype");
}

Result<format::DType> ToFormatDType(at::ScalarType type) {
  switch (type) {
    case at::kDouble: return format::DType::kF64;
    case at::kFloat: return format::DType::kF32;
    case at::kHalf: return format::DType::kF16;
    case at::kBFloat16: return format::DType::kBF16;
    case at::kLong: return format::DType::kI64;
    case at::kInt: return format::DType::kI32;
    case at::kShort: return format::DType::kI16;
    case at::kChar: return format::DType::kI8;
    case at::kByte: return format::DType::kU8;
    case at::kBool: return format::DType::kBool;
    default: return InvalidArgument(std::string("unsupported tensor type ") + c10::toString(type));
  }
}

Result<at::ScalarType> ParsePrecision(const std::string& name) {
  if (name == "fp32" || name == "float32") return at::kFloat;
  if (name == "bf16" || name == "bfloat16") return at::kBFloat16;
  if (name == "fp16" || name == "float16") return at::kHalf;
  return InvalidArgument("unknown precision '" + name + "' (fp32, bf16 or fp16)");
}

Result<std::unique_ptr<Gpt2Model>> LoadModel(const std::string& dir, const LoadOptions& options,
                                             LoadReport* report) {
  if (!IsDirectory(dir)) return NotFound(dir + ": no such checkpoint directory");
  FUJI_ASSIGN_OR_RETURN(ModelConfig config, LoadModelConfig(dir));
  FUJI_ASSIGN_OR_RETURN(CheckpointFiles files, CheckpointFiles::Open(dir));
  const std::vector<ParamInfo> layout = ParameterLayout(config);
  std::vector<const format::TensorView*> views;
  for (const ParamInfo& info : layout) {
    FUJI_ASSIGN_OR_RETURN(const format::TensorView* view, FindParam(files, info, dir));
    if (!IsFloatingPoint(view->dtype)) {
      return InvalidArgument(dir + ": tensor '" + view->name + "' has dtype " +
                             format::DTypeName(view->dtype) + ", expected a floating-point type");
    }
    views.push_back(view);
  }
  // On the host every parameter lives in one huge-page arena (unless the caller frees them one by
  // one); on a device, in its allocator.
  std::shared_ptr<HostArena> arena;
  if (options.device.is_cpu() && !options.host_allocation_per_param) {
    std::vector<size_t> sizes;
    for (const ParamInfo& info : layout) {
      sizes.push_back(static_cast<size_t>(c10::multiply_integers(info.shape)) * at::elementSize(options.dtype));
    }
    FUJI_ASSIGN_OR_RETURN(arena, HostArena::Create(sizes));
  }
  std::vector<at::Tensor> params;
  params.reserve(layout.size());
  int64_t bytes = 0;
  const auto target = at::TensorOptions().dtype(options.dtype).device(options.device);
  for (size_t i = 0; i < views.size(); ++i) {
    const format::TensorView* view = views[i];
    FUJI_ASSIGN_OR_RETURN(at::Tensor source, ViewTensor(*view));
    // One pass from the map: dtype conversion and the copy to the device happen together.
    at::Tensor param = arena ? HostArena::Tensor(arena, i, view->shape, options.dtype) : at::empty(view->shape, target);
    param.copy_(source);
    if (options.release_file_pages) ReleaseMappedPages(view->data, view->nbytes);
    params.push_back(std::move(param));
    bytes += static_cast<int64_t>(view->nbytes);
  }
  if (report != nullptr) {
    report->format = files.format();
    report->bytes = bytes;
    report->files = files.file_count();
    std::set<std::string> used;
    for (const auto& info : layout) used.insert(info.name);
    for (const auto& name : files.Names()) {
      const bool tied_head = name == "lm_head.weight" && config.tie_word_embeddings;
      if (!used.count(name) && !IsMaskBuffer(name) && !tied_head) report->ignored.push_back(name);
    }
  }
  return std::make_unique<Gpt2Model>(std::move(config), std::move(params));
}

CheckpointReader::CheckpointReader(CheckpointReader&&) noexcept = default;
CheckpointReader& CheckpointReader::operator=(CheckpointReader&&) noexcept = default;
CheckpointReader::~CheckpointReader() = default;

Result<CheckpointReader> CheckpointReader::Open(const std::string& dir) {
  if (!IsDirectory(dir)) return NotFound(dir + ": no such checkpoint directory");
  CheckpointReader reader;
  reader.dir_ = dir;
  FUJI_ASSIGN_OR_RETURN(reader.config_, LoadModelConfig(dir));
  FUJI_ASSIGN_OR_RETURN(CheckpointFiles files, CheckpointFiles::Open(dir));
  reader.files_ = std::make_unique<CheckpointFiles>(std::move(files));
  for (const ParamInfo& info : ParameterLayout(reader.config_)) {
    FUJI_ASSIGN_OR_RETURN(const format::TensorView* view, FindParam(*reader.files_, info, dir));
    if (!IsFloatingPoint(view->dtype)) {
      return InvalidArgument(dir + ": tensor '" + view->name + "' has dtype " + format::DTypeName(view->dtype) +
                             ", expected a floating-point type");
    }
    reader.views_.push_back(view);
  }
  return reader;
}

const std::string& CheckpointReader::format() const { return files_->format(); }

Status CheckpointReader::Read(size_t index, int64_t begin, int64_t end, const at::Tensor& out) {
  if (index >= views_.size()) {
    return InvalidArgument("parameter " + std::to_string(index) + " of " + std::to_string(views_.size()));
  }
  const format::TensorView& view = *views_[index];
  const int64_t numel = view.numel();
  if (begin < 0 || begin > end || end > numel) {
    return InvalidArgument(dir_ + ": range [" + std::to_string(begin) + ", " + std::to_string(end) + ") of tensor '" +
                           view.name + "' with " + std::to_string(numel) + " elements");
  }
  if (!out.defined() || !out.is_contiguous() || out.numel() != end - begin || !at::isFloatingType(out.scalar_type())) {
    return InvalidArgument(dir_ + ": tensor '" + view.name + "': the destination is not a contiguous "
                           "floating-point tensor of " + std::to_string(end - begin) + " elements");
  }
  if (begin == end) return Status::Ok();
  FUJI_ASSIGN_OR_RETURN(at::Tensor source, ViewTensor(view));
  const at::Tensor dst = out.view({-1});
  const size_t element = format::DTypeSize(view.dtype);
  if (view.contiguous()) {
    // The slice's own bytes, and only those, are read from the map.
    dst.copy_(source.reshape({-1}).narrow(0, begin, end - begin));
    const size_t offset = static_cast<size_t>(begin) * element, nbytes = static_cast<size_t>(end - begin) * element;
    touched_.emplace_back(view.data + offset, nbytes);
    bytes_read_ += static_cast<int64_t>(nbytes);
    return Status::Ok();
  }
  // A strided view (a torch.save of a transposed or shared storage): row by row along the first
  // dimension, a partial row through a copy of that row alone.
  if (source.dim() <= 1) {
    dst.copy_(source.reshape({-1}).narrow(0, begin, end - begin));
  } else {
    const int64_t row = numel / source.size(0);
    const std::vector<int64_t> row_shape(view.shape.begin() + 1, view.shape.end());
    for (int64_t r = begin / row; r * row < end; ++r) {
      const int64_t b = std::max(begin, r * row) - r * row, e = std::min(end, (r + 1) * row) - r * row;
      at::Tensor piece = dst.narrow(0, r * row + b - begin, e - b);
      if (b == 0 && e == row) {
        piece.view(row_shape).copy_(source.select(0, r));
      } else {
        piece.copy_(source.select(0, r).reshape({-1}).narrow(0, b, e - b));
      }
    }
  }
  touched_.emplace_back(view.data, view.nbytes);
  bytes_read_ += static_cast<int64_t>(view.nbytes);
  return Status::Ok();
}

void CheckpointReader::ReleasePages() {
  for (const auto& [data, nbytes] : touched_) ReleaseMappedPages(data, nbytes);
  touched_.clear();
}

Status WriteCheckpoint(const ModelConfig& config, const std::string& dir, format::DType dtype,
                       const ParamSource& source, const std::string& vocab_dir) {
  if (::mkdir(dir.c_str(), 0755) != 0 && errno != EEXIST) {
    return InvalidArgument(dir + ": cannot create directory: " + ErrnoMessage());
  }
  if (!IsDirectory(dir)) return InvalidArgument(dir + ": not a directory");
  FUJI_ASSIGN_OR_RETURN(at::ScalarType type, ToScalarType(dtype));
  const std::vector<ParamInfo> layout = ParameterLayout(config);
  std::vector<format::TensorSpec> specs;
  for (const auto& info : layout) {
    const bool body = info.name != "lm_head.weight";
    specs.push_back({body ? "transformer." + info.name : info.name, dtype, info.shape});
  }
  FUJI_ASSIGN_OR_RETURN(auto writer, format::SafetensorsWriter::Create(dir + "/model.safetensors", specs,
                                                                       {{"format", "pt"}}, 0644));
  for (size_t i = 0; i < layout.size(); ++i) {
    FUJI_ASSIGN_OR_RETURN(at::Tensor t, source(i));
    if (t.sizes().vec() != layout[i].shape) {
      return Internal("tensor '" + layout[i].name + "' has shape " + ShapeString(t.sizes().vec()) +
                      ", expected " + ShapeString(layout[i].shape));
    }
    t = t.to(at::kCPU, type).contiguous();
    FUJI_RETURN_IF_ERROR(writer.Write(t.data_ptr(), t.numel() * t.element_size()));
  }
  FUJI_RETURN_IF_ERROR(writer.Finish());
  FUJI_RETURN_IF_ERROR(WriteFileAtomically(dir + "/config.json", config.ToJson().dump(2) + "\n"));
  if (!vocab_dir.empty()) {
    FUJI_ASSIGN_OR_RETURN(const text::TokenizerFiles files, text::FindTokenizerFiles(vocab_dir));
    for (const auto& [from, name] : {std::pair{files.vocab, text::kVocabFile}, std::pair{files.merges, text::kMergesFile}}) {
      FUJI_ASSIGN_OR_RETURN(std::string text, ReadFile(from, 64u << 20));
      FUJI_RETURN_IF_ERROR(WriteFileAtomically(dir + "/" + name, text));
    }
  }
  return Status::Ok();
}

Status ConvertCheckpoint(const std::string& in_dir, const std::string& out_dir,
                         std::optional<format::DType> dtype) {
  FUJI_ASSIGN_OR_RETURN(ModelConfig config, LoadModelConfig(in_dir));
  FUJI_ASSIGN_OR_RETURN(CheckpointFiles files, CheckpointFiles::Open(in_dir));
  const std::vector<ParamInfo> layout = ParameterLayout(config);
  std::vector<const format::TensorView*> views;
  for (const ParamInfo& info : layout) {
    FUJI_ASSIGN_OR_RETURN(const format::TensorView* view, FindParam(files, info, in_dir));
    views.push_back(view);
  }
  const format::DType out_dtype = dtype.value_or(views.front()->dtype);
  const bool has_vocab = text::FindTokenizerFiles(in_dir).ok();
  return WriteCheckpoint(
      config, out_dir, out_dtype, [&](size_t i) { return ViewTensor(*views[i]); },
      has_vocab ? in_dir : "");
}

}  // namespace fuji::engine
