// Child processes: fork/exec into a new process group with request, event and log pipes.
#include "worker/launcher/child_process.h"

#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <thread>

#include "lib/common/file_util.h"
#include "lib/common/limits.h"

extern char** environ;

namespace fuji::launch {
namespace {

struct Pipe {
  int read = -1, write = -1;
  Status Open() {
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) != 0) return ResourceExhausted("pipe: " + ErrnoMessage());
    read = fds[0];
    write = fds[1];
    return Status::Ok();
  }
  void Close() {
    if (read >= 0) ::close(read);
    if (write >= 0) ::close(write);
    read = write = -1;
  }
};

ExitInfo FromWaitStatus(int status) {
  ExitInfo info;
  if (WIFEXITED(status)) info.exit_code = WEXITSTATUS(status);
  if (WIFSIGNALED(status)) info.signal = WTERMSIG(status);
  return info;
}

bool StartsWith(std::string_view s, std::string_view prefix) { return s.substr(0, prefix.size()) == prefix; }

bool EndsWith(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

// The child's environment: the parent's (all of it, or what a confined child may see), HOME of the
// user it runs as, then spec.env.
std::vector<std::string> ChildEnvironment(const ChildSpec& spec) {
  std::map<std::string, std::string> env;
  for (char** e = environ; *e != nullptr; ++e) {
    const std::string_view kv = *e;
    const size_t eq = kv.find('=');
    if (eq == std::string_view::npos) continue;
    const std::string key(kv.substr(0, eq));
    if (!spec.confinement || PassesToConfinedChild(key)) env[key] = std::string(kv.substr(eq + 1));
  }
  if (spec.confinement && spec.confinement->user) env["HOME"] = spec.confinement->user->home;
  for (const auto& [k, v] : spec.env) env[k] = v;
  std::vector<std::string> out;
  for (const auto& [k, v] : env) out.push_back(k + "=" + v);
  return out;
}

// In the child between fork and exec (async-signal-safe calls only): becomes `who` for good.
// False when any step fails or root could be had back.
bool BecomeUser(const UnixUser& who) {
  if (::setgroups(0, nullptr) != 0 || ::setgid(who.gid) != 0 || ::setuid(who.uid) != 0) return false;
  if (who.uid != 0 && ::setuid(0) == 0) return false;
  return ::chdir("/") == 0;
}

}  // namespace

Result<UnixUser> LookUpUser(const std::string& name) {
  struct passwd entry {};
  struct passwd* found = nullptr;
  std::vector<char> buffer(16384);
  const int rc = ::getpwnam_r(name.c_str(), &entry, buffer.data(), buffer.size(), &found);
  if (rc != 0 || found == nullptr) return NotFound("no user '" + name + "' on this machine");
  return UnixUser{found->pw_name, found->pw_uid, found->pw_gid, found->pw_dir};
}

Result<std::optional<UnixUser>> RankUser(const std::string& run_as) {
  const uid_t self = ::geteuid();
  if (self != 0) {
    if (run_as.empty()) return std::optional<UnixUser>();
    auto who = LookUpUser(run_as);
    if (who.ok() && who->uid == self) return std::optional<UnixUser>();
    return InvalidArgument("--run-as " + run_as + ": fuji-agent runs as uid " + std::to_string(self) +
                           ", not root, so its ranks run as that user; start it as root to run them as another");
  }
  const std::string name = run_as.empty() ? "fuji" : run_as;
  auto who = LookUpUser(name);
  if (!who.ok()) {
    return InvalidArgument("--run-as " + name + ": no such user; create it (scripts/bootstrap does: useradd --system "
                           "--no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin " + name +
                           ") or name another with --run-as USER");
  }
  if (who->uid == 0) return InvalidArgument("--run-as " + name + ": ranks never run as root");
  return std::optional<UnixUser>(std::move(who).value());
}

bool PassesToConfinedChild(std::string_view name) {
  for (const char* exact : {"PATH", "HOME", "LANG", "LC_ALL", "TZ"}) {
    if (name == exact) return true;
  }
  if (StartsWith(name, "FUJI_")) return !EndsWith(name, "_TOKEN");
  for (const char* prefix : {"CUDA_", "NCCL_", "OMP_", "GLOO_"}) {
    if (StartsWith(name, prefix)) return true;
  }
  for (const char* sanitizer : {"ASAN_OPTIONS", "UBSAN_OPTIONS", "LSAN_OPTIONS", "TSAN_OPTIONS"}) {
    if (name == sanitizer) return true;
  }
  return false;
}

std::string ExitInfo::Describe() const {
  if (signal != 0) {
    const char* name = sigabbrev_np(signal);
    return "killed by signal " + std::to_string(signal) + (name ? std::string(" (SIG") + name + ")" : "");
  }
  return "exit code " + std::to_string(exit_code);
}

Result<std::unique_ptr<ChildProcess>> ChildProcess::Spawn(const ChildSpec& spec) {
  if (::access(spec.executable.c_str(), X_OK) != 0) {
    return NotFound(spec.executable + ": not an executable (" + ErrnoMessage() + ")");
  }
  // Everything the child needs is built before fork: after it only async-signal-safe calls.
  std::vector<std::string> argv_storage = {spec.executable};
  argv_storage.insert(argv_storage.end(), spec.args.begin(), spec.args.end());
  std::vector<char*> argv;
  for (auto& a : argv_storage) argv.push_back(a.data());
  argv.push_back(nullptr);
  std::vector<std::string> env_storage = ChildEnvironment(spec);
  std::vector<char*> envp;
  for (auto& e : env_storage) envp.push_back(e.data());
  envp.push_back(nullptr);
  const UnixUser* user = spec.confinement && spec.confinement->user ? &*spec.confinement->user : nullptr;
  const std::string user_error =
      user ? "fuji launcher: cannot run as user " + user->user + " (uid " + std::to_string(user->uid) + ")\n"
           : std::string();

  Pipe in, events, err;
  for (Pipe* p : {&in, &events, &err}) {
    Status s = p->Open();
    if (!s.ok()) {
      in.Close(), events.Close(), err.Close();
      return s;
    }
  }
  const pid_t parent = ::getpid();
  const pid_t pid = ::fork();
  if (pid < 0) {
    in.Close(), events.Close(), err.Close();
    return ResourceExhausted("fork: " + ErrnoMessage());
  }
  if (pid == 0) {
    ::setpgid(0, 0);
    ::dup2(in.read, 0);
    ::dup2(err.write, 1);
    ::dup2(err.write, 2);
    if (user != nullptr && !BecomeUser(*user)) {
      (void)!::write(2, user_error.data(), user_error.size());
      ::_exit(126);
    }
    if (spec.confinement) ::umask(077);
    // A child never outlives the process that supervises it. (After the change of user, which
    // clears the parent-death signal.)
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) ::_exit(127);
    if (events.write == kEventFd) {
      ::fcntl(kEventFd, F_SETFD, 0);
    } else {
      ::dup2(events.write, kEventFd);  // dup2 clears O_CLOEXEC on the new descriptor
    }
    ::signal(SIGPIPE, SIG_DFL);
    ::execve(argv[0], argv.data(), envp.data());
    const char msg[] = "fuji launcher: execve failed\n";
    (void)!::write(2, msg, sizeof msg - 1);
    ::_exit(127);
  }
  ::setpgid(pid, pid);  // also here: no race with a kill sent before the child ran
  ::close(in.read);
  ::close(events.write);
  ::close(err.write);
  std::unique_ptr<ChildProcess> child(new ChildProcess());
  child->pid_ = pid;
  child->stdin_fd_ = in.write;
  child->event_fd_ = events.read;
  child->stderr_fd_ = err.read;
  child->events_ = std::make_unique<LineReader>(events.read);
  // A rank's stderr is drained whatever it writes: a line longer than fujid stores comes back cut.
  child->logs_ = std::make_unique<LineReader>(err.read, limits::kMaxLogLineBytes, LineReader::Overlong::kCut);
  child->requests_ = std::make_unique<JsonLineWriter>(in.write);
  return child;
}

ChildProcess::~ChildProcess() {
  if (!exit_) Terminate(std::chrono::milliseconds(2000));
  CloseInput();
  if (event_fd_ >= 0) ::close(event_fd_);
  if (stderr_fd_ >= 0) ::close(stderr_fd_);
}

Status ChildProcess::Send(const nlohmann::json& request) {
  if (stdin_fd_ < 0) return FailedPrecondition("the child's input is closed");
  // A child that died closes its end: report that rather than dying of SIGPIPE.
  ::signal(SIGPIPE, SIG_IGN);
  return requests_->Write(request);
}

void ChildProcess::CloseInput() {
  if (stdin_fd_ >= 0) ::close(stdin_fd_);
  stdin_fd_ = -1;
}

Result<std::optional<ChildOutput>> ChildProcess::Next(std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    bool open = false;
    for (LineReader* reader : {events_.get(), logs_.get()}) {
      if (reader->eof()) continue;
      auto line = reader->ReadLine(0);
      if (!line.ok()) {
        if (line.status().code() == StatusCode::kUnavailable) {  // nothing complete yet
          open = true;
          continue;
        }
        return line.status();
      }
      if (!line->has_value()) continue;  // end of file
      ChildOutput out;
      if (reader == events_.get()) {
        auto event = ParseJsonObject(**line);
        if (event.ok()) {
          out.kind = ChildOutput::Kind::kEvent;
          out.event = std::move(event).value();
          return std::optional<ChildOutput>(std::move(out));
        }
      }
      out.kind = ChildOutput::Kind::kLog;
      out.line = std::move(**line);
      return std::optional<ChildOutput>(std::move(out));
    }
    if (!open) return std::optional<ChildOutput>();
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now()).count();
    if (left <= 0) return Unavailable("no output from child " + std::to_string(pid_) + " in time");
    struct pollfd fds[2] = {{event_fd_, POLLIN, 0}, {stderr_fd_, POLLIN, 0}};
    if (::poll(fds, 2, static_cast<int>(left)) < 0 && errno != EINTR) {
      return Unavailable("poll: " + ErrnoMessage());
    }
  }
}

std::vector<int> ChildProcess::OpenOutputFds() const {
  std::vector<int> fds;
  if (!events_->eof()) fds.push_back(event_fd_);
  if (!logs_->eof()) fds.push_back(stderr_fd_);
  return fds;
}

std::optional<ExitInfo> ChildProcess::Poll() {
  if (exit_) return exit_;
  int status = 0;
  pid_t r = ::waitpid(pid_, &status, WNOHANG);
  if (r == pid_) exit_ = FromWaitStatus(status);
  return exit_;
}

ExitInfo ChildProcess::Wait() {
  if (exit_) return *exit_;
  int status = 0;
  while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
  }
  exit_ = FromWaitStatus(status);
  return *exit_;
}

bool ChildProcess::GroupAlive() const { return ::kill(-pid_, 0) == 0 || errno == EPERM; }

ExitInfo ChildProcess::Terminate(std::chrono::milliseconds grace) {
  ::kill(-pid_, SIGTERM);
  const auto deadline = std::chrono::steady_clock::now() + grace;
  while (std::chrono::steady_clock::now() < deadline) {
    Poll();
    if (exit_ && !GroupAlive()) return *exit_;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ::kill(-pid_, SIGKILL);
  ExitInfo info = Wait();
  // Processes the child started in its group are not ours to reap; wait until the kernel has them gone.
  for (int i = 0; i < 500 && GroupAlive(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  return info;
}

std::string ExecutablePath() {
  char buf[4096];
  const ssize_t n = ::readlink("/proc/self/exe", buf, sizeof buf - 1);
  return n > 0 ? std::string(buf, static_cast<size_t>(n)) : std::string();
}

std::string ExecutableDir() {
  const std::string path = ExecutablePath();
  return path.empty() ? "." : path.substr(0, path.rfind('/'));
}

Result<std::string> FindRankExecutable() {
  if (const char* env = std::getenv("FUJI_RANK"); env != nullptr && *env != '\0') return std::string(env);
  const std::string path = ExecutableDir() + "/fuji-rank";
  if (::access(path.c_str(), X_OK) != 0) {
    return NotFound("fuji-rank not found beside " + ExecutableDir() + " (set FUJI_RANK)");
  }
  return path;
}

}  // namespace fuji::launch
