// Warm models: fuji-rank processes that keep their model loaded between inference jobs, so that a
// later job for the same model (directory, weights' modification time, precision, offload) on the
// same device skips the load, and concurrent jobs of one model share one rank (its batch).
//
// Every inference attempt of the agent runs as a request to a rank of the pool (WarmRequest): the
// rank is started when none holds the model, and after its last request ended it stays for
// keep_warm (0: it is stopped at once, as a rank per job). fujid learns what the pool holds from
// every heartbeat (Snapshot) and places an inference job where its model is warm; it makes room
// for other work by naming warm models the agent unloads (Evict) before starting a job.
//
// Threads: each rank has one reader thread that owns its process's output and its reaping; the
// requests' supervisor threads send requests and wait for what the reader hands them. One mutex
// guards the pool.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "fuji/v1/jobs.pb.h"
#include "worker/launcher/gang.h"

namespace fuji::agent {

struct WarmPoolOptions {
  std::string executable;                       // fuji-rank
  std::optional<launch::Confinement> confinement;
  std::map<std::string, std::string> env;       // for every rank
  bool cuda = false;                            // each rank sees only its GPU, as cuda:0
  std::chrono::milliseconds keep_warm{600000};  // 0: a rank ends with its last request
  std::chrono::milliseconds terminate_grace{2000};
};

// "REALPATH|PRECISION|OFFLOAD": what a rank holds, as fujid matches jobs to warm models.
std::string WarmKey(const std::string& real_model, const std::string& precision, const std::string& offload);

class WarmPool {
 public:
  explicit WarmPool(WarmPoolOptions options);
  // Ends every rank (their requests fail as the rank's exit says).
  ~WarmPool();
  WarmPool(const WarmPool&) = delete;
  WarmPool& operator=(const WarmPool&) = delete;

  // One request to the pool, run as an attempt (launch::Runner). `request` is an infer spec whose
  // paths the agent checked (its "model" the real directory) or, with pin_job_id > 0, the spec of
  // a serving job: the model is loaded ("op": "load") and kept pinned until the request is
  // stopped. `id` names the request to the rank; `deadline` 0 is none.
  std::unique_ptr<launch::Runner> Request(nlohmann::json request, int device, std::string id,
                                          std::chrono::milliseconds deadline, int64_t pin_job_id = 0);

  // Unloads the model `key` on `device` if no request uses it and nothing pins it.
  void Evict(const std::string& key, int device);
  // Unloads every idle, unpinned model on these devices (a job that takes them whole).
  void EvictIdleOn(const std::vector<int>& devices);
  // Unloads the models idle for longer than keep_warm; joins the reader threads of ended ranks.
  void Reap();
  // What the pool holds now, for heartbeats: one entry per live rank.
  std::vector<v1::WarmModel> Snapshot() const;
  // The pids of the live ranks (their memory is the node's, for the scheduler's readings).
  std::vector<pid_t> Pids() const;

 private:
  class WarmRequest;
  struct Rank;
  // What a rank's reader hands a request: an event for its id, a log line of the rank, or the
  // rank's end.
  struct Delivery {
    enum class Kind { kEvent, kLog, kExit } kind = Kind::kEvent;
    nlohmann::json event;
    std::string line;
    launch::ExitInfo exit;
  };
  struct Waiter {
    std::deque<Delivery> inbox;
  };
  struct Rank {
    std::string key, model, precision, offload;
    int device = 0;
    int64_t weights_mtime_ns = 0;
    std::unique_ptr<launch::ChildProcess> child;
    pid_t pid = -1;
    std::thread reader;
    // Guarded by the pool's mu_:
    std::map<std::string, Waiter*> waiters;  // by request id
    std::chrono::steady_clock::time_point last_used;
    int64_t pinned_by = 0;   // a serving job's id
    bool ended = false;      // the process exited (the reader reaped it)
    bool closing = false;    // asked to end: takes no new request
    std::chrono::steady_clock::time_point closing_since;
    bool input_closed = false;
    std::mutex send_mu;      // writes to its stdin (requests), and closing it
    int64_t mib = 0;         // the model's memory as the rank reported it
    std::string stderr_tail; // its last stderr line
  };

  // A rank for the request (an existing one that holds the model, or a new one); INTERNAL when
  // it cannot start. Takes mu_.
  Result<std::shared_ptr<Rank>> Acquire(const nlohmann::json& request, int device);
  void ReadLoop(std::shared_ptr<Rank> rank);
  // Marks the rank to end (no new requests); with `kill`, SIGKILL to its group now. Its input is
  // closed by CloseInputs, outside mu_ (a write to it may be in progress).
  void CloseLocked(Rank& rank, bool kill);
  // Closes the input of every rank marked to end (it exits after its requests), and kills those
  // that have not ended within the grace. Takes mu_, then each rank's send_mu without it.
  void CloseInputs();
  void Release(const std::shared_ptr<Rank>& rank, const std::string& id);
  static int64_t WeightsMtimeNs(const std::string& dir);

  const WarmPoolOptions options_;
  mutable std::mutex mu_;
  std::condition_variable cv_;  // a delivery arrived
  std::vector<std::shared_ptr<Rank>> ranks_;     // live or ended, not yet joined
};

}  // namespace fuji::agent
