// SafetensorsWriter: streams tensors into a partial file beside path and renames it into place when
// complete.
#include "lib/format/safetensors.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <optional>
#include <set>
#include <utility>

#include <nlohmann/json.hpp>

#include "lib/format/shape_util.h"

namespace fuji::format {
namespace {

Status WriteAll(int fd, const std::string& path, const void* data, size_t nbytes) {
  const auto* p = static_cast<const uint8_t*>(data);
  while (nbytes > 0) {
    ssize_t n = ::write(fd, p, nbytes);
    if (n < 0) {
      if (errno == EINTR) continue;
      return ResourceExhausted(path + ": write failed: " + ErrnoMessage());
    }
    p += n;
    nbytes -= static_cast<size_t>(n);
  }
  return Status::Ok();
}

// fsync of the directory holding path, so that a rename into it survives a crash.
Status SyncParentDirectory(const std::string& path) {
  const size_t slash = path.rfind('/');
  std::string dir = ".";
  if (slash != std::string::npos) dir = slash == 0 ? "/" : path.substr(0, slash);
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return ResourceExhausted(dir + ": " + ErrnoMessage());
  int rc = ::fsync(fd);
  ::close(fd);
  if (rc != 0) return ResourceExhausted(dir + ": fsync failed: " + ErrnoMessage());
  return Status::Ok();
}

// The 8-byte little-endian header length followed by the header JSON, padded with spaces so the
// data section starts 8-byte aligned, as the reference implementation writes it.
Result<std::string> EncodeHeader(const std::string& path, const std::vector<TensorSpec>& specs,
                                 const std::vector<uint64_t>& ends,
                                 const std::map<std::string, std::string>& metadata) {
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  for (size_t i = 0; i < specs.size(); ++i) {
    header[specs[i].name] = {{"dtype", DTypeName(specs[i].dtype)},
                             {"shape", specs[i].shape},
                             {"data_offsets", {i == 0 ? 0 : ends[i - 1], ends[i]}}};
  }
  std::string json;
  try {
    json = header.dump();
  } catch (const nlohmann::json::exception& e) {
    return InvalidArgument(path + ": tensor names and metadata must be UTF-8: " + e.what());
  }
  json.resize((json.size() + 7) / 8 * 8, ' ');
  const uint64_t length = json.size();
  std::string out(8, '\0');
  std::memcpy(out.data(), &length, 8);
  return out + json;
}

}  // namespace

Result<SafetensorsWriter> SafetensorsWriter::Create(const std::string& path,
                                                    std::vector<TensorSpec> specs,
                                                    std::map<std::string, std::string> metadata,
                                                    unsigned mode) {
  SafetensorsWriter w;
  w.path_ = path;
  std::set<std::string_view> names;
  uint64_t offset = 0;
  for (const TensorSpec& spec : specs) {
    const std::string where = path + ": tensor '" + spec.name + "': ";
    if (spec.name == "__metadata__") return InvalidArgument(where + "the name is reserved");
    if (!names.insert(spec.name).second) return InvalidArgument(where + "named twice");
    std::optional<uint64_t> nbytes = ContiguousBytes(spec.shape, DTypeSize(spec.dtype));
    if (!nbytes) {
      return InvalidArgument(where + "shape " + nlohmann::json(spec.shape).dump() +
                             " has a negative dimension or overflows");
    }
    if (__builtin_add_overflow(offset, *nbytes, &offset)) {
      return InvalidArgument(path + ": tensors overflow 64-bit offsets");
    }
    w.ends_.push_back(offset);
  }
  FUJI_ASSIGN_OR_RETURN(std::string header, EncodeHeader(path, specs, w.ends_, metadata));
  w.specs_ = std::move(specs);

  const std::string partial = path + ".partial-" + RandomHex64();
  FUJI_ASSIGN_OR_RETURN(w.fd_, CreateExclusiveFile(partial, mode));
  w.partial_path_ = partial;
  FUJI_RETURN_IF_ERROR(w.Fail(WriteAll(w.fd_, w.partial_path_, header.data(), header.size())));
  return w;
}

SafetensorsWriter::SafetensorsWriter(SafetensorsWriter&& other) noexcept {
  *this = std::move(other);
}

SafetensorsWriter& SafetensorsWriter::operator=(SafetensorsWriter&& other) noexcept {
  if (this != &other) {
    Abandon();
    path_ = std::move(other.path_);
    partial_path_ = std::exchange(other.partial_path_, std::string());
    fd_ = std::exchange(other.fd_, -1);
    specs_ = std::move(other.specs_);
    ends_ = std::move(other.ends_);
    written_ = other.written_;
    finished_ = other.finished_;
    error_ = std::move(other.error_);
  }
  return *this;
}

SafetensorsWriter::~SafetensorsWriter() {
  Abandon();
}

void SafetensorsWriter::Abandon() {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
  if (!finished_ && !partial_path_.empty()) ::unlink(partial_path_.c_str());
  partial_path_.clear();
}

Status SafetensorsWriter::Fail(Status status) {
  if (!status.ok()) {
    error_ = status;
    Abandon();
  }
  return status;
}

const TensorSpec& SafetensorsWriter::SpecAt(uint64_t offset) const {
  size_t i = 0;
  while (i + 1 < ends_.size() && ends_[i] <= offset) ++i;
  return specs_[i];
}

Status SafetensorsWriter::Write(const void* data, size_t nbytes) {
  if (!error_.ok()) {
    return FailedPrecondition(path_ + ": writer failed earlier: " + error_.message());
  }
  if (finished_) return FailedPrecondition(path_ + ": Write() after Finish()");
  const uint64_t total = ends_.empty() ? 0 : ends_.back();
  if (nbytes > total - written_) {
    const std::string last =
        specs_.empty() ? "no tensors" : "the last tensor '" + specs_.back().name + "'";
    return InvalidArgument(path_ + ": " + std::to_string(nbytes) +
                           " bytes written at data offset " + std::to_string(written_) +
                           " run past the end of " + last + " at " + std::to_string(total));
  }
  FUJI_RETURN_IF_ERROR(Fail(WriteAll(fd_, partial_path_, data, nbytes)));
  written_ += nbytes;
  return Status::Ok();
}

Status SafetensorsWriter::Finish() {
  if (!error_.ok()) {
    return FailedPrecondition(path_ + ": writer failed earlier: " + error_.message());
  }
  if (finished_) return FailedPrecondition(path_ + ": Finish() called twice");
  const uint64_t total = ends_.empty() ? 0 : ends_.back();
  if (written_ < total) {
    return InvalidArgument(path_ + ": Finish() after " + std::to_string(written_) + " of " +
                           std::to_string(total) + " data bytes: tensor '" + SpecAt(written_).name +
                           "' is incomplete");
  }
  if (::fsync(fd_) != 0) {
    return Fail(ResourceExhausted(partial_path_ + ": fsync failed: " + ErrnoMessage()));
  }
  const int fd = std::exchange(fd_, -1);
  if (::close(fd) != 0) {
    return Fail(ResourceExhausted(partial_path_ + ": close failed: " + ErrnoMessage()));
  }
  if (::rename(partial_path_.c_str(), path_.c_str()) != 0) {
    return Fail(ResourceExhausted(path_ + ": rename from " + partial_path_ + " failed: " + ErrnoMessage()));
  }
  finished_ = true;
  partial_path_.clear();
  return Fail(SyncParentDirectory(path_));
}

}  // namespace fuji::format
