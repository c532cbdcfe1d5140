// Child processes: fork/exec into a new process group with request, event and log pipes.
#include "worker/launcher/child_process.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <thread>

#include "lib/common/file_util.h"

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

}  // namespace

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
  std::vector<std::string> env_storage;
  for (char** e = environ; *e != nullptr; ++e) {
    std::string kv = *e;
    const std::string key = kv.substr(0, kv.find('='));
    if (!spec.env.count(key)) env_storage.push_back(std::move(kv));
  }
  for (const auto& [k, v] : spec.env) env_storage.push_back(k + "=" + v);
  std::vector<char*> envp;
  for (auto& e : env_storage) envp.push_back(e.data());
  envp.push_back(nullptr);

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
    // A child never outlives the process that supervises it.
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) ::_exit(127);
    ::dup2(in.read, 0);
    ::dup2(err.write, 1);
    ::dup2(err.write, 2);
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
  child->logs_ = std::make_unique<LineReader>(err.read, 1 << 20);
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

std::string ExecutableDir() {
  char buf[4096];
  ssize_t n = ::readlink("/proc/self/exe", buf, sizeof buf - 1);
  if (n <= 0) return ".";
  std::string path(buf, static_cast<size_t>(n));
  return path.substr(0, path.rfind('/'));
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
