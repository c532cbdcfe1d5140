// Files: memory maps, bounded reads, atomic writes.
#include "lib/common/file_util.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>

namespace fuji {

std::string ErrnoMessage() { return std::strerror(errno); }

namespace {

// Closes a file descriptor on scope exit.
struct FdCloser {
  int fd;
  ~FdCloser() {
    if (fd >= 0) ::close(fd);
  }
};

Status OpenError(const std::string& path) {
  if (errno == ENOENT) return NotFound(path + ": no such file");
  return InvalidArgument(path + ": " + ErrnoMessage());
}

}  // namespace

Result<MappedFile> MappedFile::Open(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return OpenError(path);
  FdCloser closer{fd};
  struct stat st {};
  if (::fstat(fd, &st) != 0) return InvalidArgument(path + ": " + ErrnoMessage());
  if (!S_ISREG(st.st_mode)) return InvalidArgument(path + ": not a regular file");
  MappedFile file;
  file.path_ = path;
  file.size_ = static_cast<size_t>(st.st_size);
  if (file.size_ == 0) return file;
  void* p = ::mmap(nullptr, file.size_, PROT_READ, MAP_PRIVATE, fd, 0);
  if (p == MAP_FAILED) return ResourceExhausted(path + ": mmap failed: " + ErrnoMessage());
  file.data_ = static_cast<uint8_t*>(p);
  return file;
}

MappedFile::MappedFile(MappedFile&& other) noexcept
    : path_(std::move(other.path_)), data_(other.data_), size_(other.size_) {
  other.data_ = nullptr;
  other.size_ = 0;
}

MappedFile& MappedFile::operator=(MappedFile&& other) noexcept {
  if (this != &other) {
    Reset();
    path_ = std::move(other.path_);
    data_ = other.data_;
    size_ = other.size_;
    other.data_ = nullptr;
    other.size_ = 0;
  }
  return *this;
}

MappedFile::~MappedFile() { Reset(); }

void MappedFile::Reset() {
  if (data_ != nullptr) ::munmap(data_, size_);
  data_ = nullptr;
  size_ = 0;
}

void MappedFile::WillNeed(size_t offset, size_t length) const {
  if (data_ == nullptr || offset >= size_) return;
  const size_t page = static_cast<size_t>(::sysconf(_SC_PAGESIZE));
  const size_t begin = offset / page * page;
  const size_t end = std::min(size_, offset + length);
  ::madvise(data_ + begin, end - begin, MADV_WILLNEED);
}

Result<std::string> ReadFile(const std::string& path, size_t max_bytes) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return OpenError(path);
  FdCloser closer{fd};
  struct stat st {};
  if (::fstat(fd, &st) != 0) return InvalidArgument(path + ": " + ErrnoMessage());
  if (S_ISDIR(st.st_mode)) return InvalidArgument(path + ": is a directory");
  if (S_ISREG(st.st_mode) && static_cast<size_t>(st.st_size) > max_bytes) {
    return ResourceExhausted(path + ": file of " + std::to_string(st.st_size) +
                             " bytes is over the limit of " + std::to_string(max_bytes));
  }
  std::string out;
  char buf[1 << 16];
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0) {
      if (errno == EINTR) continue;
      return DataLoss(path + ": read failed: " + ErrnoMessage());
    }
    if (n == 0) break;
    if (out.size() + static_cast<size_t>(n) > max_bytes) {
      return ResourceExhausted(path + ": over the limit of " + std::to_string(max_bytes) + " bytes");
    }
    out.append(buf, static_cast<size_t>(n));
  }
  return out;
}

std::string RandomHex64() {
  uint64_t bits = 0;
  size_t got = 0;
  while (got < sizeof bits) {
    const ssize_t n = ::getrandom(reinterpret_cast<char*>(&bits) + got, sizeof bits - got, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) std::abort();  // the kernel's random source never fails once initialized
    got += static_cast<size_t>(n);
  }
  char text[17];
  std::snprintf(text, sizeof text, "%016llx", static_cast<unsigned long long>(bits));
  return text;
}

Result<int> CreateExclusiveFile(const std::string& path, unsigned mode) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode);
  if (fd < 0) {
    if (errno == EEXIST) return AlreadyExists(path + " already exists");
    return InvalidArgument(path + ": " + ErrnoMessage());
  }
  // The umask may have narrowed the mode; never widened it. Make it exactly `mode`.
  if (::fchmod(fd, mode) != 0) {
    Status s = InvalidArgument(path + ": " + ErrnoMessage());
    ::close(fd);
    ::unlink(path.c_str());
    return s;
  }
  return fd;
}

Status WriteFileAtomically(const std::string& path, std::string_view contents, unsigned mode) {
  const std::string tmp = path + ".tmp-" + RandomHex64();
  FUJI_ASSIGN_OR_RETURN(int fd, CreateExclusiveFile(tmp, mode));
  size_t done = 0;
  while (done < contents.size()) {
    ssize_t n = ::write(fd, contents.data() + done, contents.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      Status s = ResourceExhausted(tmp + ": write failed: " + ErrnoMessage());
      ::close(fd);
      ::unlink(tmp.c_str());
      return s;
    }
    done += static_cast<size_t>(n);
  }
  if (::close(fd) != 0 || ::rename(tmp.c_str(), path.c_str()) != 0) {
    Status s = ResourceExhausted(path + ": " + ErrnoMessage());
    ::unlink(tmp.c_str());
    return s;
  }
  return Status::Ok();
}

bool IsRegularFile(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

bool IsDirectory(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

std::string AbsolutePath(const std::string& path) {
  if (path.empty()) return path;
  std::error_code error;
  const std::filesystem::path absolute = std::filesystem::absolute(path, error);
  return error ? path : absolute.lexically_normal().string();
}

Status MakeDirectories(const std::string& path, unsigned mode) {
  if (path.empty()) return InvalidArgument("empty directory name");
  for (size_t pos = 1; pos <= path.size(); ++pos) {
    if (pos != path.size() && path[pos] != '/') continue;
    const std::string prefix = path.substr(0, pos);
    if (::mkdir(prefix.c_str(), mode) != 0 && errno != EEXIST) {
      return InvalidArgument(prefix + ": cannot create directory: " + ErrnoMessage());
    }
  }
  if (!IsDirectory(path)) return InvalidArgument(path + ": not a directory");
  return Status::Ok();
}

}  // namespace fuji
