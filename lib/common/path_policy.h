// Which paths a job may name: an agent's read and write roots, and the check of every path a job
// spec holds against them before anything reads or creates it.
//
// A path is inside a root when its real path (symbolic links and ".." resolved by realpath(3)) is
// the root or lies below it, and the root found on the way is still the directory the policy
// resolved at its start (the same st_dev and st_ino: a root renamed away and replaced is not the
// root). A path that does not exist yet resolves through its deepest existing ancestor; what
// remains must be plain names (no "..", "." or empty part). Special files (FIFOs, sockets,
// character and block devices) and anything under /proc, /sys or /dev are refused wherever they are.
//
// A refusal never tells whether a path outside the roots exists: its message is the same either
// way. Inside the roots the messages may say more (not found, a FIFO), since jobs may look there.
//
// Immutable once made: every method is const and thread-safe.
#pragma once

#include <sys/types.h>

#include <string>
#include <string_view>
#include <vector>

#include "lib/common/status.h"

namespace fuji {

class PathPolicy {
 public:
  // A resolved root: its real path and the identity of the directory it named at the start.
  struct Root {
    std::string path;
    dev_t dev = 0;
    ino_t ino = 0;
  };

  // Each root made absolute and resolved. INVALID_ARGUMENT naming the root (and its flag) when one
  // does not exist, is not a directory, or is under /proc, /sys or /dev.
  // `program` is whose roots they are, for messages ("fuji-agent", "fujid").
  static Result<PathPolicy> Create(const std::vector<std::string>& read_roots,
                                   const std::vector<std::string>& write_roots,
                                   const std::string& program = "fuji-agent");

  // No roots: every check refuses, saying how to start the agent with roots.
  PathPolicy() = default;

  // The real path of an existing file or directory that a job reads: inside a read or a write
  // root, neither a special file nor under /proc, /sys or /dev. `what` names the path in messages
  // ("model path", "data path"). INVALID_ARGUMENT outside the roots or for a special file;
  // NOT_FOUND for a missing path inside them.
  Result<std::string> CheckRead(const std::string& path, std::string_view what = "path") const;

  // The real path a job may write at (its deepest existing ancestor resolved, the names below it
  // kept): inside a write root; an existing target must be a directory or a regular file.
  // INVALID_ARGUMENT otherwise.
  Result<std::string> CheckWrite(const std::string& path, std::string_view what = "path") const;

  // The write root holding `real_path` (a result of CheckWrite); "" when none does.
  std::string WriteRootOf(const std::string& real_path) const;

  bool empty() const { return read_.empty() && write_.empty(); }
  const std::vector<Root>& read_roots() const { return read_; }
  const std::vector<Root>& write_roots() const { return write_; }
  // "read /a, /b; write /w" (or "no roots"), for the agent's start line.
  std::string Describe() const;

 private:
  // The root of `roots` that `real_path` lies in and that is still the directory resolved at the
  // start; nullptr when none.
  static const Root* RootOf(const std::vector<Root>& roots, const std::string& real_path);
  Status Outside(const std::string& path, std::string_view what, bool write) const;

  std::vector<Root> read_;   // read roots only; write roots are readable too
  std::vector<Root> write_;
  std::string program_ = "fuji-agent";
};

// Whether `real_path` is /proc, /sys or /dev or lies below one of them.
bool IsUnderKernelFileSystem(const std::string& real_path);

}  // namespace fuji
