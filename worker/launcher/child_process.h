// Child processes with the fuji-rank protocol: the launcher that `fuji run`, the agent and the
// gang share (and the integration tests, for fujid and fuji-agent).
//
// A child runs in its own process group with three pipes: requests (its stdin), events (JSON lines
// on fd 3) and its stderr (log lines). Killing the group reaches everything the child started.
// A confined child (a rank, or the preparation of a job's data) gets a minimal environment and a
// private umask, and may run as another user than its parent.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "lib/common/json_lines.h"
#include "lib/common/status.h"

namespace fuji::launch {

// The fd number on which a child writes its events.
inline constexpr int kEventFd = 3;

// A user a child runs as.
struct UnixUser {
  std::string user;
  uid_t uid = 0;
  gid_t gid = 0;     // the user's primary group; a child that runs as the user has no other
  std::string home;  // its HOME
};

// The user `name` from the password database; NOT_FOUND when there is none.
Result<UnixUser> LookUpUser(const std::string& name);

// The user an agent runs its ranks as, from --run-as (`run_as`, "" when not given). As root:
// run_as, or "fuji" by default, which must exist and must not be root. As another user: nullopt
// (ranks run as the agent's user), and a run_as naming anyone else is an error. INVALID_ARGUMENT
// in one line naming the flag.
Result<std::optional<UnixUser>> RankUser(const std::string& run_as);

// Whether this process's variable `name` reaches a confined child: PATH, HOME, LANG, LC_ALL, TZ;
// those starting with CUDA_, NCCL_, OMP_, GLOO_ or FUJI_ (but not FUJI_..._TOKEN: credentials stay
// with their holder); the sanitizer runtimes' ASAN_, UBSAN_, LSAN_ and TSAN_OPTIONS.
bool PassesToConfinedChild(std::string_view name);

// How a child that runs a job's work (a rank, or the preparation of a job's data) is confined: it
// inherits only the variables PassesToConfinedChild lets through and starts with umask 077 (files
// 0600, directories 0700); with a user it runs as that user (setgroups(0), setgid, setuid
// between fork and exec; it does not start if it could become root again), with HOME its home,
// in "/".
struct Confinement {
  std::optional<UnixUser> user;  // nullopt: as this process's user
};

struct ChildSpec {
  std::string executable;             // path of the program (fuji-rank, mostly)
  std::vector<std::string> args;      // after argv[0]
  std::map<std::string, std::string> env;  // added to (or replacing in) the environment it inherits
  // Set: confined as it says. Unset: the child inherits the whole environment and the umask.
  std::optional<Confinement> confinement = std::nullopt;
};

// How a child process ended.
struct ExitInfo {
  int exit_code = -1;   // when it exited
  int signal = 0;       // when a signal ended it
  bool Succeeded() const { return signal == 0 && exit_code == 0; }
  std::string Describe() const;  // "exit code 3", "killed by signal 9 (SIGKILL)"
};

// One line from a child: an event object, or a line it wrote to stderr.
struct ChildOutput {
  enum class Kind { kEvent, kLog } kind;
  nlohmann::json event;  // kEvent
  std::string line;      // kLog
};

// A running child. Not thread-safe: one owner reads, writes and waits.
// The destructor kills the process group if it is still running and reaps it.
class ChildProcess {
 public:
  static Result<std::unique_ptr<ChildProcess>> Spawn(const ChildSpec& spec);
  ~ChildProcess();
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;

  pid_t pid() const { return pid_; }
  Status Send(const nlohmann::json& request);
  // Closes the child's stdin: it exits after the requests already sent.
  void CloseInput();
  // The next event or log line, waiting up to timeout (nullopt: both pipes reached end of file).
  // UNAVAILABLE on timeout; a malformed event line comes back as a log line.
  Result<std::optional<ChildOutput>> Next(std::chrono::milliseconds timeout);
  // The event and stderr descriptors not yet at end of file, to poll(2) over many children before
  // calling Next with a zero timeout.
  std::vector<int> OpenOutputFds() const;
  // Reaps the process if it has exited; nullopt while it runs.
  std::optional<ExitInfo> Poll();
  // Waits for the process to exit.
  ExitInfo Wait();
  // SIGTERM to the group, then SIGKILL after grace; returns once the group is gone.
  ExitInfo Terminate(std::chrono::milliseconds grace);

 private:
  ChildProcess() = default;
  bool GroupAlive() const;

  pid_t pid_ = -1;
  int stdin_fd_ = -1, event_fd_ = -1, stderr_fd_ = -1;
  std::unique_ptr<LineReader> events_, logs_;
  std::unique_ptr<JsonLineWriter> requests_;
  std::optional<ExitInfo> exit_;
};

// fuji-rank beside the running executable, or $FUJI_RANK.
Result<std::string> FindRankExecutable();

// The running executable's path, and its directory.
std::string ExecutablePath();
std::string ExecutableDir();

}  // namespace fuji::launch
