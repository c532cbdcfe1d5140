// Warm models: see warm_pool.h.
#include "worker/agent/warm_pool.h"

#include <dirent.h>
#include <signal.h>
#include <sys/stat.h>

#include <algorithm>
#include <cstdio>
#include <future>

#include "lib/common/limits.h"

namespace fuji::agent {
namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

void Log(const std::string& line) { std::fprintf(stderr, "fuji-agent: %s\n", line.c_str()); }

std::string Field(const nlohmann::json& j, const char* name, const std::string& fallback) {
  auto it = j.find(name);
  return it != j.end() && it->is_string() ? it->get<std::string>() : fallback;
}

}  // namespace

std::string WarmKey(const std::string& real_model, const std::string& precision, const std::string& offload) {
  return real_model + "|" + precision + "|" + offload;
}

// One request to a rank of the pool, as an attempt's runner.
class WarmPool::WarmRequest : public launch::Runner {
 public:
  WarmRequest(WarmPool* pool, nlohmann::json request, int device, std::string id, milliseconds deadline,
              int64_t pin_job_id)
      : pool_(pool), request_(std::move(request)), device_(device), id_(std::move(id)), deadline_(deadline),
        pin_job_id_(pin_job_id) {}

  Result<nlohmann::json> Run(const launch::GangCallbacks& callbacks) override;
  void Stop() override { stop_ = true; }
  const std::optional<launch::GangFailure>& failure() const override { return failure_; }
  bool has_peers() const override { return false; }

 private:
  Result<nlohmann::json> Fail(launch::GangFailure f) {
    failure_ = std::move(f);
    return launch::FailureStatus(*failure_);
  }
  static Status Send(Rank& rank, const nlohmann::json& message);

  WarmPool* pool_;
  nlohmann::json request_;
  int device_;
  std::string id_;
  milliseconds deadline_;
  int64_t pin_job_id_;
  std::atomic<bool> stop_{false};
  std::optional<launch::GangFailure> failure_;
};

Status WarmPool::WarmRequest::Send(Rank& rank, const nlohmann::json& message) {
  // Writes go to the rank's stdin, which only requests use; the reader owns the outputs.
  std::lock_guard<std::mutex> lock(rank.send_mu);
  if (rank.input_closed) return Unavailable("its input is closed");
  return rank.child->Send(message);
}

Result<nlohmann::json> WarmPool::WarmRequest::Run(const launch::GangCallbacks& callbacks) {
  using launch::GangFailure;
  nlohmann::json message = request_;
  message["op"] = pin_job_id_ > 0 ? "load" : "infer";
  message.erase("serve");  // a serving job's spec asks the rank to load its model: the "load" op
  message["id"] = id_;
  if (pool_->options_.cuda && Field(message, "device", "cpu").rfind("cuda", 0) == 0) message["device"] = "cuda:0";
  Waiter waiter;
  std::shared_ptr<Rank> rank;
  // A warm rank can end between two requests (killed, or out of memory) before its reader has
  // seen it: a rank that takes no request is retired, and the request goes to a new one, once.
  for (int tries = 0;; ++tries) {
    Result<std::shared_ptr<Rank>> acquired = pool_->Acquire(request_, device_);
    if (!acquired.ok()) {
      return Fail({GangFailure::Kind::kStart, -1, FailureKind::kInternal, acquired.status().message(), {}, ""});
    }
    rank = std::move(acquired).value();
    {
      std::lock_guard<std::mutex> lock(pool_->mu_);
      waiter.inbox.clear();
      rank->waiters[id_] = &waiter;
      if (rank->ended) waiter.inbox.push_back({Delivery::Kind::kExit, {}, "", {}});
    }
    Status sent = Send(*rank, message);
    if (sent.ok()) break;
    Log("fuji-rank " + std::to_string(rank->pid) + " took no request (" + sent.message() + "): retired");
    {
      std::lock_guard<std::mutex> lock(pool_->mu_);
      pool_->CloseLocked(*rank, /*kill=*/true);
    }
    pool_->Release(rank, id_);
    if (tries == 1) {
      return Fail({GangFailure::Kind::kStart, -1, FailureKind::kInternal,
                   "fuji-rank " + std::to_string(rank->pid) + " took no request: " + sent.message(), {}, ""});
    }
  }
  if (callbacks.started) callbacks.started({rank->pid});

  const auto begin = Clock::now();
  std::optional<Clock::time_point> kill_at;  // a stop or the deadline asked the rank to cancel
  std::optional<GangFailure> stopping;       // what the attempt ends as once the rank answered
  std::optional<nlohmann::json> result;
  bool pinned = false;
  for (;;) {
    std::deque<Delivery> got;
    {
      std::unique_lock<std::mutex> lock(pool_->mu_);
      pool_->cv_.wait_for(lock, milliseconds(50), [&] { return !waiter.inbox.empty(); });
      got.swap(waiter.inbox);
    }
    bool done = false;
    for (Delivery& d : got) {
      if (d.kind == Delivery::Kind::kLog) {
        if (callbacks.output) callbacks.output({0, {launch::ChildOutput::Kind::kLog, {}, d.line}});
        continue;
      }
      if (d.kind == Delivery::Kind::kExit) {
        if (!stopping) {
          stopping = GangFailure{GangFailure::Kind::kRankExit, 0, FailureKind::kInternal,
                                 "fuji-rank " + std::to_string(rank->pid) + " ended (" + d.exit.Describe() +
                                     ") while serving this request",
                                 d.exit, rank->stderr_tail};
        }
        done = true;
        break;
      }
      const std::string kind = Field(d.event, "event", "");
      if (kind == "result") {
        if (pin_job_id_ > 0 && !stopping) {
          // A serving job: the model is loaded and stays pinned until the job is stopped.
          std::lock_guard<std::mutex> lock(pool_->mu_);
          rank->pinned_by = pin_job_id_;
          pinned = true;
          continue;
        }
        result = d.event.contains("result") ? d.event["result"] : nlohmann::json::object();
        done = true;
        break;
      }
      if (kind == "error") {
        if (!stopping) {
          stopping = GangFailure{GangFailure::Kind::kRankError, 0,
                                 ParseFailureKind(Field(d.event, "reason", "internal")),
                                 Field(d.event, "message", Field(d.event, "code", "error")), {}, ""};
        }
        done = true;
        break;
      }
      if (kind == "started") continue;
      if (callbacks.output) callbacks.output({0, {launch::ChildOutput::Kind::kEvent, d.event, ""}});
    }
    if (done) break;
    if (callbacks.tick) callbacks.tick();
    const bool past_deadline = deadline_.count() > 0 && Clock::now() - begin >= deadline_;
    if (!kill_at && (stop_ || past_deadline)) {
      stopping = stop_ ? GangFailure{GangFailure::Kind::kCancelled, -1, FailureKind::kCancelled, "cancelled", {}, ""}
                       : GangFailure{GangFailure::Kind::kDeadline, -1, FailureKind::kTimeout,
                                     "stopped after the deadline of " + std::to_string(deadline_.count()) + " ms",
                                     {}, ""};
      if (pinned) break;  // a serving job holds no request in the rank: nothing to cancel
      (void)Send(*rank, {{"op", "cancel"}, {"id", id_}});
      kill_at = Clock::now() + pool_->options_.terminate_grace;
    }
    if (kill_at && Clock::now() >= *kill_at) {
      // The rank did not let go of the request within the grace: it ends, with its other requests.
      Log("fuji-rank " + std::to_string(rank->pid) + " did not cancel request " + id_ + " within the grace: killed");
      {
        std::lock_guard<std::mutex> lock(pool_->mu_);
        pool_->CloseLocked(*rank, /*kill=*/true);
      }
      kill_at = Clock::time_point::max();
    }
  }
  {
    std::lock_guard<std::mutex> lock(pool_->mu_);
    if (pinned && rank->pinned_by == pin_job_id_) rank->pinned_by = 0;
  }
  pool_->Release(rank, id_);
  if (stopping) return Fail(std::move(*stopping));
  return std::move(*result);
}

WarmPool::WarmPool(WarmPoolOptions options) : options_(std::move(options)) {}

WarmPool::~WarmPool() {
  std::vector<std::shared_ptr<Rank>> ranks;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto& rank : ranks_) CloseLocked(*rank, /*kill=*/true);
    ranks.swap(ranks_);
  }
  for (auto& rank : ranks) {
    if (rank->reader.joinable()) rank->reader.join();
  }
}

std::unique_ptr<launch::Runner> WarmPool::Request(nlohmann::json request, int device, std::string id,
                                                  milliseconds deadline, int64_t pin_job_id) {
  return std::make_unique<WarmRequest>(this, std::move(request), device, std::move(id), deadline, pin_job_id);
}

int64_t WarmPool::WeightsMtimeNs(const std::string& dir) {
  // The newest modification of the directory's files: a checkpoint written again (a fine-tune's
  // export into the same directory) changes it.
  int64_t newest = 0;
  auto consider = [&](const std::string& path) {
    struct stat st {};
    if (::stat(path.c_str(), &st) == 0) {
      newest = std::max(newest, static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec);
    }
  };
  consider(dir);
  if (DIR* d = ::opendir(dir.c_str())) {
    int entries = 0;
    while (dirent* e = ::readdir(d)) {
      if (e->d_name[0] == '.' || ++entries > 4096) continue;
      consider(dir + "/" + e->d_name);
    }
    ::closedir(d);
  }
  return newest;
}

Result<std::shared_ptr<WarmPool::Rank>> WarmPool::Acquire(const nlohmann::json& request, int device) {
  const std::string model = Field(request, "model", "");
  const std::string precision = Field(request, "precision", "fp32");
  const std::string offload = Field(request, "offload", "none");
  const std::string key = WarmKey(model, precision, offload);
  const int64_t mtime = WeightsMtimeNs(model);
  std::unique_lock<std::mutex> lock(mu_);
  for (const auto give_up = Clock::now() + 2 * options_.terminate_grace;;) {
    bool ending_here = false;
    for (auto& rank : ranks_) {
      if (rank->ended || rank->device != device) continue;
      if (rank->closing) {
        ending_here = true;
        continue;
      }
      if (rank->key != key) continue;
      if (rank->weights_mtime_ns == mtime) {
        rank->last_used = Clock::now();
        return rank;
      }
      // The weights changed since this rank loaded them: it ends once idle; a new one loads them.
      if (rank->waiters.empty() && rank->pinned_by == 0) {
        CloseLocked(*rank, false);
        ending_here = true;
      }
    }
    // A rank of this device that is ending (unloaded, or idle with --keep-warm 0) goes before a
    // new one starts there, so that two models never hold the device's memory at once.
    if (!ending_here || Clock::now() >= give_up) break;
    lock.unlock();
    CloseInputs();
    std::this_thread::sleep_for(milliseconds(10));
    lock.lock();
  }
  launch::ChildSpec spec;
  spec.executable = options_.executable;
  if (spec.executable.empty()) {
    FUJI_ASSIGN_OR_RETURN(spec.executable, launch::FindRankExecutable());
  }
  spec.env = options_.env;
  if (options_.cuda) spec.env["CUDA_VISIBLE_DEVICES"] = std::to_string(device);
  spec.confinement = options_.confinement;
  auto rank = std::make_shared<Rank>();
  rank->key = key;
  rank->model = model;
  rank->precision = precision;
  rank->offload = offload;
  rank->device = device;
  rank->weights_mtime_ns = mtime;
  rank->last_used = Clock::now();
  // The reader thread starts the rank: a child gets SIGKILL when the thread that started it ends
  // (its parent-death signal), and the reader lives as long as the rank.
  std::promise<Status> spawned;
  std::future<Status> started = spawned.get_future();
  rank->reader = std::thread([this, rank, spec, &spawned] {
    Result<std::unique_ptr<launch::ChildProcess>> child = launch::ChildProcess::Spawn(spec);
    if (!child.ok()) {
      spawned.set_value(child.status());
      return;
    }
    rank->child = std::move(child).value();
    rank->pid = rank->child->pid();
    spawned.set_value(Status::Ok());
    ReadLoop(rank);
  });
  if (Status s = started.get(); !s.ok()) {
    rank->reader.join();
    return s;
  }
  ranks_.push_back(rank);
  return rank;
}

void WarmPool::ReadLoop(std::shared_ptr<Rank> rank) {
  for (;;) {
    Result<std::optional<launch::ChildOutput>> next = rank->child->Next(milliseconds(1000));
    if (!next.ok()) {
      if (next.status().code() == StatusCode::kUnavailable) continue;  // nothing within the wait
      break;
    }
    if (!next->has_value()) break;
    launch::ChildOutput& out = **next;
    std::lock_guard<std::mutex> lock(mu_);
    if (out.kind == launch::ChildOutput::Kind::kLog) {
      if (!out.line.empty()) rank->stderr_tail = limits::CutLine(out.line);
      for (auto& [id, waiter] : rank->waiters) waiter->inbox.push_back({Delivery::Kind::kLog, {}, out.line, {}});
    } else {
      const std::string id = Field(out.event, "id", "");
      if (Field(out.event, "event", "") == "result" && out.event.contains("result") &&
          out.event["result"].is_object()) {
        const nlohmann::json& r = out.event["result"];
        const nlohmann::json* mib = r.contains("model") && r["model"].is_object() && r["model"].contains("mib")
                                        ? &r["model"]["mib"]
                                        : r.contains("mib") ? &r["mib"] : nullptr;
        if (mib != nullptr && mib->is_number()) rank->mib = static_cast<int64_t>(mib->get<double>() + 0.5);
      }
      auto it = rank->waiters.find(id);
      if (it != rank->waiters.end()) it->second->inbox.push_back({Delivery::Kind::kEvent, std::move(out.event), "", {}});
    }
    cv_.notify_all();
  }
  const launch::ExitInfo exit = rank->child->Wait();
  // Whatever the rank left in its group goes with it, before its requests hear of its end.
  ::killpg(rank->pid, SIGKILL);
  for (int i = 0; i < 200 && ::killpg(rank->pid, 0) == 0; ++i) std::this_thread::sleep_for(milliseconds(10));
  std::lock_guard<std::mutex> lock(mu_);
  rank->ended = true;
  if (!rank->closing) Log("warm fuji-rank " + std::to_string(rank->pid) + " of " + rank->model + " ended: " + exit.Describe());
  for (auto& [id, waiter] : rank->waiters) waiter->inbox.push_back({Delivery::Kind::kExit, {}, "", exit});
  cv_.notify_all();
}

void WarmPool::CloseLocked(Rank& rank, bool kill) {
  if (rank.ended) return;
  if (!rank.closing) rank.closing_since = Clock::now();
  rank.closing = true;
  if (kill) ::killpg(rank.pid, SIGKILL);
}

void WarmPool::CloseInputs() {
  std::vector<std::shared_ptr<Rank>> closing;
  {
    std::lock_guard<std::mutex> lock(mu_);
    const auto now = Clock::now();
    for (auto& rank : ranks_) {
      if (!rank->closing || rank->ended) continue;
      closing.push_back(rank);
      // Asked to end and still there after the grace: its input was closed a grace ago.
      if (now - rank->closing_since >= 2 * options_.terminate_grace) ::killpg(rank->pid, SIGKILL);
    }
  }
  for (auto& rank : closing) {
    std::lock_guard<std::mutex> lock(rank->send_mu);
    if (rank->input_closed) continue;
    rank->child->CloseInput();  // it exits once its requests are done (there are none)
    rank->input_closed = true;
  }
}

void WarmPool::Release(const std::shared_ptr<Rank>& rank, const std::string& id) {
  bool close = false;
  {
    std::lock_guard<std::mutex> lock(mu_);
    rank->waiters.erase(id);
    rank->last_used = Clock::now();
    close = options_.keep_warm.count() == 0 && rank->waiters.empty() && rank->pinned_by == 0;
    if (close) CloseLocked(*rank, false);
  }
  if (close) CloseInputs();
}

void WarmPool::Evict(const std::string& key, int device) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto& rank : ranks_) {
      if (rank->key == key && rank->device == device && rank->waiters.empty() && rank->pinned_by == 0 &&
          !rank->closing) {
        Log("unloading warm model " + rank->model + " from device " + std::to_string(device) + " (fujid needs the room)");
        CloseLocked(*rank, false);
      }
    }
  }
  CloseInputs();
}

void WarmPool::EvictIdleOn(const std::vector<int>& devices) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto& rank : ranks_) {
      if (std::find(devices.begin(), devices.end(), rank->device) == devices.end()) continue;
      if (rank->waiters.empty() && rank->pinned_by == 0 && !rank->closing) {
        Log("unloading warm model " + rank->model + " from device " + std::to_string(rank->device) +
            " (a job takes the device whole)");
        CloseLocked(*rank, false);
      }
    }
  }
  CloseInputs();
}

void WarmPool::Reap() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    const auto now = Clock::now();
    for (auto& rank : ranks_) {
      if (!rank->closing && rank->waiters.empty() && rank->pinned_by == 0 && now - rank->last_used >= options_.keep_warm) {
        CloseLocked(*rank, false);
      }
    }
  }
  CloseInputs();
  std::vector<std::shared_ptr<Rank>> ended;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = std::partition(ranks_.begin(), ranks_.end(), [](const auto& r) { return !r->ended; });
    ended.assign(std::make_move_iterator(it), std::make_move_iterator(ranks_.end()));
    ranks_.erase(it, ranks_.end());
  }
  for (auto& rank : ended) {
    if (rank->reader.joinable()) rank->reader.join();
  }
}

std::vector<v1::WarmModel> WarmPool::Snapshot() const {
  std::vector<v1::WarmModel> out;
  std::lock_guard<std::mutex> lock(mu_);
  const auto now = Clock::now();
  for (const auto& rank : ranks_) {
    if (rank->ended || rank->closing) continue;
    v1::WarmModel& w = out.emplace_back();
    w.set_key(rank->key);
    w.set_device_index(rank->device);
    w.set_model(rank->model);
    w.set_precision(rank->precision);
    w.set_offload(rank->offload);
    w.set_mib(rank->mib);
    w.set_active(static_cast<int32_t>(rank->waiters.size()));
    w.set_idle_ms(rank->waiters.empty()
                      ? std::chrono::duration_cast<milliseconds>(now - rank->last_used).count()
                      : 0);
    w.set_serving_job_id(rank->pinned_by);
  }
  return out;
}

std::vector<pid_t> WarmPool::Pids() const {
  std::vector<pid_t> out;
  std::lock_guard<std::mutex> lock(mu_);
  for (const auto& rank : ranks_) {
    if (!rank->ended) out.push_back(rank->pid);
  }
  return out;
}

}  // namespace fuji::agent
