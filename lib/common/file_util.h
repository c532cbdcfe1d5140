// Files: read-only memory maps (RAII), bounded whole-file reads, atomic writes, and the few
// questions about paths that every part of fuji asks.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "lib/common/status.h"

namespace fuji {

// A read-only, private memory map of a whole file. Move-only; unmaps on destruction.
// Not thread-safe to move while other threads read; reading data() concurrently is fine.
class MappedFile {
 public:
  static Result<MappedFile> Open(const std::string& path);

  MappedFile() = default;
  MappedFile(MappedFile&& other) noexcept;
  MappedFile& operator=(MappedFile&& other) noexcept;
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  ~MappedFile();

  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  const std::string& path() const { return path_; }
  std::string_view view() const { return {reinterpret_cast<const char*>(data_), size_}; }
  // Hints the kernel to read [offset, offset+length) ahead (MADV_WILLNEED).
  void WillNeed(size_t offset, size_t length) const;

 private:
  void Reset();
  std::string path_;
  uint8_t* data_ = nullptr;
  size_t size_ = 0;
};

// Reads a whole file, refusing files larger than max_bytes (RESOURCE_EXHAUSTED).
Result<std::string> ReadFile(const std::string& path, size_t max_bytes = size_t{1} << 30);

// Writes to a new file beside path with an unpredictable name (created O_EXCL|O_NOFOLLOW, so a
// planted file or symbolic link is never written through), gives it `mode`, then renames it over
// path, so readers never see a partial file. A symbolic link at path itself is replaced, not
// followed.
Status WriteFileAtomically(const std::string& path, std::string_view contents, unsigned mode = 0644);

// Creates path as a new file for writing with `mode` (O_CREAT|O_EXCL|O_NOFOLLOW|O_CLOEXEC): fails
// with ALREADY_EXISTS when anything (a file, a symbolic link, a FIFO) is there already. The
// descriptor is the caller's to close.
Result<int> CreateExclusiveFile(const std::string& path, unsigned mode = 0600);

// 16 hex digits from the kernel's random source (getrandom): for names no one can predict.
std::string RandomHex64();

// "strerror(errno)" of the current errno.
std::string ErrnoMessage();

// Whether path is a regular file / a directory, following symbolic links; false on any error.
bool IsRegularFile(const std::string& path);
bool IsDirectory(const std::string& path);

// path against the working directory, lexically normal ("a/./b/../c" is "a/c"); "" stays "".
std::string AbsolutePath(const std::string& path);

// mkdir -p, `mode` (under the umask) for what it creates: 0700 unless what is made is meant for
// others (an exported model's directory: 0755). Concurrent creators are fine (every rank of a
// gang makes the same step directory). INVALID_ARGUMENT naming the part that could not be made,
// or when path ends as something other than a directory.
Status MakeDirectories(const std::string& path, unsigned mode = 0700);

}  // namespace fuji
