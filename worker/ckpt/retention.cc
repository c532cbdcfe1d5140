// Checkpoint retention: which step directories of a save directory go, and their removal.
#include "worker/ckpt/retention.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <string_view>
#include <utility>

#include "lib/common/file_util.h"
#include "worker/ckpt/zero_checkpoint.h"

namespace fuji::ckpt {
namespace {

// The most entries a step directory of fuji's holds: a rank file per rank, meta.json, and the
// temporary files a crash can leave beside each.
constexpr size_t kMaxStepDirEntries = 3 * kMaxWorldSize + 8;
// The most entries of a save directory looked at: far more steps than anyone keeps.
constexpr size_t kMaxSaveDirEntries = 1'000'000;

// A file descriptor, closed with its owner.
class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }
  bool ok() const { return fd_ >= 0; }

 private:
  int fd_;
};

// The names in the directory open at `fd` (not "." and ".."); RESOURCE_EXHAUSTED naming `what`
// when it cannot be listed or holds more than `max`.
Result<std::vector<std::string>> ListDir(int fd, size_t max, const std::string& what) {
  const int dup = ::fcntl(fd, F_DUPFD_CLOEXEC, 0);
  DIR* dir = dup < 0 ? nullptr : ::fdopendir(dup);
  if (dir == nullptr) {
    Status s = ResourceExhausted(what + ": cannot be listed: " + ErrnoMessage());
    if (dup >= 0) ::close(dup);
    return s;
  }
  std::vector<std::string> names;
  Status status = Status::Ok();
  while (const dirent* e = ::readdir(dir)) {
    const std::string name = e->d_name;
    if (name == "." || name == "..") continue;
    if (names.size() >= max) {
      status = ResourceExhausted(what + ": more than " + std::to_string(max) + " entries");
      break;
    }
    names.push_back(name);
  }
  ::closedir(dir);
  if (!status.ok()) return status;
  return names;
}

bool IsRegularAt(int dir_fd, const std::string& name) {
  struct stat st {};
  return ::fstatat(dir_fd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISREG(st.st_mode);
}

bool AllDigits(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

bool IsHex16(std::string_view s) {
  return s.size() == 16 && std::all_of(s.begin(), s.end(), [](char c) {
           return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
         });
}

// A name found on disk as it goes into a message: at most 100 bytes, control bytes as '?'.
std::string Printable(const std::string& name) {
  std::string out = name.substr(0, 100);
  for (char& c : out) {
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) c = '?';
  }
  return out;
}

// Whether `name` is a file the writer puts in a step directory: meta.json or a rank file
// ("rank-00000-of-00002.safetensors"), either perhaps followed by the suffixes of its temporary
// files (".tmp-<16 hex>" of WriteFileDurably, ".partial-<16 hex>" of the safetensors writer).
bool IsWriterFile(std::string_view name) {
  for (;;) {
    const size_t dot = name.rfind('.');
    if (dot == std::string_view::npos) break;
    const std::string_view tail = name.substr(dot);
    const bool tmp = tail.size() == 5 + 16 && tail.substr(0, 5) == ".tmp-" && IsHex16(tail.substr(5));
    const bool partial = tail.size() == 9 + 16 && tail.substr(0, 9) == ".partial-" && IsHex16(tail.substr(9));
    if (!tmp && !partial) break;
    name = name.substr(0, dot);
  }
  if (name == "meta.json") return true;
  return name.size() == 31 && name.substr(0, 5) == "rank-" && AllDigits(name.substr(5, 5)) &&
         name.substr(10, 4) == "-of-" && AllDigits(name.substr(14, 5)) && name.substr(19) == ".safetensors";
}

// Whether save_to/name is a directory of its own holding meta.json for `step` and every rank file
// that meta.json names, all regular files.
bool IsComplete(int save_fd, const std::string& save_to, const std::string& name, int64_t step) {
  const Fd dir(::openat(save_fd, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  if (!dir.ok() || !IsRegularAt(dir.get(), "meta.json")) return false;
  Result<CheckpointMeta> meta = ReadMeta(save_to + "/" + name);
  if (!meta.ok() || meta->step != step) return false;
  for (int r = 0; r < meta->world_size; ++r) {
    if (!IsRegularAt(dir.get(), RankFileName(r, meta->world_size))) return false;
  }
  return true;
}

// Removes save_to/name with the writer's files in it. Returns "" once removed, or why it was left
// in place (it holds something fuji does not write there, it is a link); an error status for a
// removal that failed halfway.
Result<std::string> RemoveStepDir(int save_fd, const std::string& save_to, const std::string& name) {
  const std::string path = save_to + "/" + name;
  const Fd dir(::openat(save_fd, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  if (!dir.ok()) {
    if (errno == ELOOP || errno == ENOTDIR) return std::string("not a directory of its own (a symbolic link?)");
    return ResourceExhausted(path + ": " + ErrnoMessage());
  }
  FUJI_ASSIGN_OR_RETURN(std::vector<std::string> files, ListDir(dir.get(), kMaxStepDirEntries, path));
  for (const std::string& file : files) {
    if (!IsWriterFile(file)) return "holds '" + Printable(file) + "', which fuji does not write there";
    if (!IsRegularAt(dir.get(), file)) return "holds '" + file + "', which is not a regular file";
  }
  for (const std::string& file : files) {
    if (::unlinkat(dir.get(), file.c_str(), 0) != 0 && errno != ENOENT) {
      return ResourceExhausted(path + "/" + file + ": " + ErrnoMessage());
    }
  }
  if (::unlinkat(save_fd, name.c_str(), AT_REMOVEDIR) != 0) {
    if (errno == ENOTEMPTY || errno == EEXIST) return std::string("something was added to it during its removal");
    return ResourceExhausted(path + ": " + ErrnoMessage());
  }
  return std::string();
}

// The entries of the directory open at save_fd named as step directories, by step.
Result<std::vector<std::pair<int64_t, std::string>>> ListSteps(int save_fd, const std::string& save_to) {
  FUJI_ASSIGN_OR_RETURN(std::vector<std::string> names, ListDir(save_fd, kMaxSaveDirEntries, save_to));
  std::vector<std::pair<int64_t, std::string>> steps;
  for (std::string& name : names) {
    if (const int64_t step = StepOfName(name); step >= 0) steps.emplace_back(step, std::move(name));
  }
  std::sort(steps.begin(), steps.end());
  return steps;
}

}  // namespace

Result<std::vector<std::string>> StepDirNames(const std::string& save_to) {
  const Fd save(::open(save_to.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!save.ok()) return ResourceExhausted(save_to + ": " + ErrnoMessage());
  FUJI_ASSIGN_OR_RETURN(auto steps, ListSteps(save.get(), save_to));
  std::vector<std::string> names;
  for (auto& [step, name] : steps) names.push_back(std::move(name));
  return names;
}

int64_t StepOfName(const std::string& name) {
  static constexpr std::string_view kPrefix = "step-";
  if (name.size() <= kPrefix.size() || name.compare(0, kPrefix.size(), kPrefix) != 0) return -1;
  const std::string_view digits = std::string_view(name).substr(kPrefix.size());
  if (!AllDigits(digits)) return -1;
  int64_t step = -1;
  const auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), step);
  if (ec != std::errc() || end != digits.data() + digits.size() || step < 0) return -1;
  return StepDirName(step) == name ? step : -1;
}

Status PruneCheckpoints(const std::string& save_to, int64_t keep_last, PruneReport* report) {
  PruneReport local;
  PruneReport& out = report != nullptr ? *report : local;
  out = PruneReport();
  if (keep_last <= 0) return Status::Ok();
  const Fd save(::open(save_to.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!save.ok()) return ResourceExhausted(save_to + ": " + ErrnoMessage());

  // Rule 2: latest, a regular file naming a complete step directory.
  const std::string nothing = "; nothing removed";
  if (!IsRegularAt(save.get(), "latest")) {
    return FailedPrecondition(save_to + "/latest: not a regular file" + nothing);
  }
  Result<std::string> target = ResolveStepDir(save_to);
  if (!target.ok()) return FailedPrecondition(target.status().message() + nothing);
  const std::string latest_name = target->substr(target->rfind('/') + 1);
  const int64_t latest_step = StepOfName(latest_name);
  if (latest_step < 0 || !IsComplete(save.get(), save_to, latest_name, latest_step)) {
    return FailedPrecondition(save_to + "/latest: names '" + latest_name + "', not a complete step directory" +
                              nothing);
  }

  FUJI_ASSIGN_OR_RETURN(auto steps, ListSteps(save.get(), save_to));

  // Rule 3: the newest keep_last complete ones at or below latest's step.
  int64_t oldest_kept = latest_step;
  for (auto it = steps.rbegin(); it != steps.rend() && static_cast<int64_t>(out.kept.size()) < keep_last; ++it) {
    if (it->first > latest_step || !IsComplete(save.get(), save_to, it->second, it->first)) continue;
    out.kept.insert(out.kept.begin(), it->second);
    oldest_kept = it->first;
  }

  // Rule 4: everything of fuji's below the oldest kept one.
  for (const auto& [step, name] : steps) {
    if (step >= oldest_kept) break;
    FUJI_ASSIGN_OR_RETURN(std::string why, RemoveStepDir(save.get(), save_to, name));
    if (why.empty()) out.removed.push_back(name);
    else out.skipped.push_back(name + ": " + why);
  }
  return Status::Ok();
}

}  // namespace fuji::ckpt
