// PathPolicy: resolving a job's paths and placing them against the agent's roots.
#include "lib/common/path_policy.h"

#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <memory>

#include "lib/common/file_util.h"

namespace fuji {
namespace {

// A path resolved as far as it exists.
struct Resolution {
  std::string real;     // realpath of the deepest existing ancestor, then the names below it
  bool exists = false;  // the whole path resolved
  // The names below the resolved ancestor are plain names that do not exist (not "..", "." or
  // empty, nor a symbolic link that leads nowhere or in a loop).
  bool plain = true;
  bool parent_is_directory = true;  // what those names hang from is a directory
};

std::string RealPath(const std::string& path) {
  std::unique_ptr<char, decltype(&std::free)> real(::realpath(path.c_str(), nullptr), &std::free);
  return real ? std::string(real.get()) : std::string();
}

// The real path of an existing `path` in three system calls (open with O_PATH, which neither reads
// nor blocks on a FIFO; the kernel's name of the descriptor; close) where realpath(3) makes one
// per component; "" when the path does not resolve or /proc cannot say.
std::string RealPathOfExisting(const std::string& path) {
  const int fd = ::open(path.c_str(), O_PATH | O_CLOEXEC);
  if (fd < 0) return "";
  char link[32];
  std::snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
  char buf[PATH_MAX];
  const ssize_t n = ::readlink(link, buf, sizeof buf);
  ::close(fd);
  if (n <= 0 || n >= static_cast<ssize_t>(sizeof buf) || buf[0] != '/') return "";
  return std::string(buf, static_cast<size_t>(n));
}

Resolution Resolve(const std::string& path) {
  std::string head = path;
  if (head.empty() || head[0] != '/') {
    char cwd[PATH_MAX];
    head = std::string(::getcwd(cwd, sizeof cwd) != nullptr ? cwd : "/") + "/" + head;
  }
  while (head.size() > 1 && head.back() == '/') head.pop_back();
  Resolution r;
  // The common case, a path that exists; the kernel's name for a file unlinked since the open ends
  // in " (deleted)", which is not the path: that case takes the slow way below.
  if (std::string real = RealPathOfExisting(head);
      !real.empty() && real.find(" (deleted)") == std::string::npos) {
    r.real = std::move(real);
    r.exists = true;
    return r;
  }
  std::vector<std::string> below;  // unresolved names, the innermost first
  for (;;) {
    r.real = RealPath(head);
    if (!r.real.empty()) break;
    struct stat st {};
    if (::lstat(head.c_str(), &st) == 0) r.plain = false;  // there, but it does not resolve
    const size_t slash = head.rfind('/');
    below.push_back(head.substr(slash + 1));
    head = slash == 0 ? "/" : head.substr(0, slash);
  }
  r.exists = below.empty();
  if (!r.exists) r.parent_is_directory = IsDirectory(r.real);
  for (auto name = below.rbegin(); name != below.rend(); ++name) {
    if (name->empty() || *name == "." || *name == "..") r.plain = false;
    r.real += (r.real == "/" ? "" : "/") + *name;
  }
  return r;
}

bool Below(const std::string& path, const std::string& dir) {
  if (dir == "/") return true;
  return path.size() >= dir.size() && path.compare(0, dir.size(), dir) == 0 &&
         (path.size() == dir.size() || path[dir.size()] == '/');
}

std::string JoinRoots(const std::vector<PathPolicy::Root>& a, const std::vector<PathPolicy::Root>& b = {}) {
  std::string out;
  for (const auto* roots : {&a, &b}) {
    for (const PathPolicy::Root& root : *roots) out += (out.empty() ? "" : ", ") + root.path;
  }
  return out;
}

// The kind of a special file, for messages; "" for a directory or a regular file.
std::string SpecialKind(mode_t mode) {
  if (S_ISFIFO(mode)) return "a FIFO";
  if (S_ISSOCK(mode)) return "a socket";
  if (S_ISCHR(mode)) return "a character device";
  if (S_ISBLK(mode)) return "a block device";
  if (S_ISDIR(mode) || S_ISREG(mode)) return "";
  return "not a file or directory";
}

Result<std::vector<PathPolicy::Root>> ResolveRoots(const std::vector<std::string>& dirs, const char* flag) {
  std::vector<PathPolicy::Root> roots;
  for (const std::string& dir : dirs) {
    const std::string what = std::string(flag) + " " + dir;
    const std::string real = RealPath(AbsolutePath(dir));
    if (real.empty()) return InvalidArgument(what + ": " + ErrnoMessage());
    struct stat st {};
    if (::stat(real.c_str(), &st) != 0) return InvalidArgument(what + ": " + ErrnoMessage());
    if (!S_ISDIR(st.st_mode)) return InvalidArgument(what + ": not a directory");
    if (IsUnderKernelFileSystem(real)) return InvalidArgument(what + ": /proc, /sys and /dev cannot be roots");
    roots.push_back({real, st.st_dev, st.st_ino});
  }
  return roots;
}

}  // namespace

bool IsUnderKernelFileSystem(const std::string& real_path) {
  for (const char* dir : {"/proc", "/sys", "/dev"}) {
    if (Below(real_path, dir)) return true;
  }
  return false;
}

Result<PathPolicy> PathPolicy::Create(const std::vector<std::string>& read_roots,
                                      const std::vector<std::string>& write_roots, const std::string& program) {
  PathPolicy policy;
  policy.program_ = program;
  FUJI_ASSIGN_OR_RETURN(policy.read_, ResolveRoots(read_roots, "--allow-read"));
  FUJI_ASSIGN_OR_RETURN(policy.write_, ResolveRoots(write_roots, "--allow-write"));
  return policy;
}

const PathPolicy::Root* PathPolicy::RootOf(const std::vector<Root>& roots, const std::string& real_path) {
  for (const Root& root : roots) {
    if (!Below(real_path, root.path)) continue;
    struct stat st {};
    if (::stat(root.path.c_str(), &st) == 0 && st.st_dev == root.dev && st.st_ino == root.ino) return &root;
  }
  return nullptr;
}

Status PathPolicy::Outside(const std::string& path, std::string_view what, bool write) const {
  const std::string named = std::string(what) + " " + path;
  const bool agent = program_ == "fuji-agent";
  const std::string holder = agent ? "this agent" : program_;
  if (empty()) {
    return InvalidArgument(named + ": " + holder + " lets jobs " + (agent ? "read and write" : "name") +
                           " nowhere (start " + program_ + " with --allow-read DIR for models and data" +
                           (agent ? " and --allow-write DIR for checkpoints and token caches)" : ")"));
  }
  const std::string roots = write ? JoinRoots(write_) : JoinRoots(read_, write_);
  const char* flag = write ? "--allow-write" : "--allow-read";
  return InvalidArgument(named + " is outside " + holder + "'s " + (write ? "write" : "read") + " roots (" +
                         (roots.empty() ? "none: start " + program_ + " with " + flag + " DIR" : roots) + ")");
}

Result<std::string> PathPolicy::CheckRead(const std::string& path, std::string_view what) const {
  const Resolution r = Resolve(path);
  if (!r.plain || (RootOf(read_, r.real) == nullptr && RootOf(write_, r.real) == nullptr)) {
    return Outside(path, what, false);
  }
  const std::string named = std::string(what) + " " + path;
  if (IsUnderKernelFileSystem(r.real)) return InvalidArgument(named + " is under /proc, /sys or /dev");
  if (!r.exists) return NotFound(named + " not found");
  struct stat st {};
  if (::stat(r.real.c_str(), &st) != 0) return NotFound(named + ": " + ErrnoMessage());
  if (const std::string kind = SpecialKind(st.st_mode); !kind.empty()) {
    return InvalidArgument(named + " is " + kind + ", not a file or directory");
  }
  return r.real;
}

Result<std::string> PathPolicy::CheckWrite(const std::string& path, std::string_view what) const {
  const Resolution r = Resolve(path);
  if (!r.plain || RootOf(write_, r.real) == nullptr) return Outside(path, what, true);
  const std::string named = std::string(what) + " " + path;
  if (IsUnderKernelFileSystem(r.real)) return InvalidArgument(named + " is under /proc, /sys or /dev");
  if (!r.parent_is_directory) return InvalidArgument(named + " lies below something that is not a directory");
  if (r.exists) {
    struct stat st {};
    if (::stat(r.real.c_str(), &st) != 0) return InvalidArgument(named + ": " + ErrnoMessage());
    if (const std::string kind = SpecialKind(st.st_mode); !kind.empty()) {
      return InvalidArgument(named + " is " + kind + ", not a file or directory");
    }
  }
  return r.real;
}

std::string PathPolicy::WriteRootOf(const std::string& real_path) const {
  const Root* root = RootOf(write_, real_path);
  return root != nullptr ? root->path : std::string();
}

std::string PathPolicy::Describe() const {
  if (empty()) return "no roots";
  std::string out;
  if (!read_.empty()) out += "read " + JoinRoots(read_);
  if (!write_.empty()) out += std::string(out.empty() ? "" : "; ") + "write " + JoinRoots(write_);
  return out;
}

}  // namespace fuji
