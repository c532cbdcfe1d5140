// A gang: the fuji-rank processes of one job attempt on this machine, run and ended in one way.
// Starts them, sends each its request, passes what they say to callbacks, and stops them all as
// soon as one fails, is cancelled or runs out of time. Two shapes:
//
//   - peers (a fine-tuning job): N ranks that meet through a FileStore rendezvous in a fresh
//     private directory; each request carries rank, ranks and rendezvous; messages name the rank;
//     the result merges the ranks' results (MergeRankResults). A gang may also be one agent's part
//     of a gang across agents (GangOptions::world_size > 0): its ranks are first_rank ..
//     first_rank + local_ranks - 1 of world_size and meet the others at the given tcp: rendezvous;
//     everything it reports (outputs, failures, the merged result) names global ranks.
//   - a lone rank (an inference job): one fuji-rank with the request as given (plus op and id) and
//     no rendezvous; messages are the rank's own words; its result is the gang's. With no peers to
//     stop, its error event ends nothing by itself: it is read to its end and exits on its own
//     (fuji-rank does after an error), so its last words and its own exit are kept; and once it
//     has sent its result, how it exits no longer matters.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "lib/common/failure_kind.h"
#include "worker/launcher/child_process.h"
#include "lib/spec/finetune_spec.h"

namespace fuji::launch {

struct GangOptions {
  std::string executable;                     // "" = FindRankExecutable()
  std::string op = "finetune";
  std::string id = "finetune";
  std::map<std::string, std::string> env;     // for every rank
  // Per-rank additions to env (e.g. CUDA_VISIBLE_DEVICES), by global rank; may be empty.
  std::function<std::map<std::string, std::string>(int rank)> rank_env;
  // Set: every rank is confined so (an agent's); the rendezvous directory belongs to its user.
  std::optional<Confinement> confinement;
  std::chrono::milliseconds deadline{0};      // 0: none
  std::chrono::milliseconds terminate_grace{5000};
  // Tokens in the prepared training corpus (PreparedFinetune::num_tokens; 0 unknown): the
  // result carries it as "corpus_tokens", for the time to train the whole corpus.
  int64_t corpus_tokens = 0;
  // One agent's part of a gang across agents (peers only). world_size 0: every rank of the spec
  // runs here and the gang makes its own FileStore rendezvous. world_size > 0: this gang runs
  // local_ranks ranks, first_rank .. first_rank + local_ranks - 1 of world_size, which meet at
  // `rendezvous` ("tcp:HOST:PORT"; rank 0's process hosts the store).
  int world_size = 0;
  int first_rank = 0;
  int local_ranks = 0;
  std::string rendezvous;
};

// One line from a rank, in arrival order.
struct GangOutput {
  int rank = 0;  // global
  ChildOutput output;
};

// Why a gang failed. `rank` is the first (global) rank seen failing (-1 for a stop or a start failure).
struct GangFailure {
  enum class Kind { kRankError, kRankExit, kCancelled, kDeadline, kStart } kind = Kind::kRankError;
  int rank = -1;
  // kRankError: the rank's error event reason; else what the failure amounts to (kCancelled,
  // kTimeout for kDeadline, kInternal).
  FailureKind reason = FailureKind::kInternal;
  std::string message;      // one line, naming the rank among peers
  ExitInfo exit;            // the failing rank's exit (kRankError, kRankExit)
  std::string last_stderr;  // that rank's last non-empty stderr line
};

// What the owner of a running gang hears; every call comes on Run's thread. Any may be empty.
struct GangCallbacks {
  // Once, when every rank has been started, with their pids.
  std::function<void(const std::vector<pid_t>& pids)> started;
  // Each line a rank writes, in arrival order.
  std::function<void(const GangOutput&)> output;
  // Between polls, at least every 50 ms while the ranks run; may call Stop().
  std::function<void()> tick;
};

// What runs one job attempt's ranks and is run, stopped and judged the same way by its owner
// (the agent's supervisor): a Gang, or a request to a rank that outlives it (the agent's warm
// models, worker/agent/warm_pool.h).
class Runner {
 public:
  virtual ~Runner() = default;
  // Blocks until the attempt ended: OK with its result, or an error; failure() then says more.
  virtual Result<nlohmann::json> Run(const GangCallbacks& callbacks) = 0;
  // Thread-safe: ends a Run in progress; Run returns CANCELLED.
  virtual void Stop() = 0;
  virtual const std::optional<GangFailure>& failure() const = 0;
  // Whether the ranks are peers (a fine-tuning gang) rather than one rank.
  virtual bool has_peers() const = 0;
};

class Gang : public Runner {
 public:
  // Peers: spec.ranks processes; spec.rank and spec.rendezvous are set per rank by Run().
  Gang(FinetuneSpec spec, GangOptions options);
  // A lone rank: `request` (an object; op and id are set from options) to one fuji-rank.
  Gang(nlohmann::json request, GangOptions options);
  Gang(const Gang&) = delete;
  Gang& operator=(const Gang&) = delete;

  // Blocks until every rank has ended. OK with the gang's result, or an error whose message says
  // why (naming the rank, for peers); failure() then says more.
  Result<nlohmann::json> Run(const GangCallbacks& callbacks) override;
  Result<nlohmann::json> Run(const std::function<void(const GangOutput&)>& on_output) {
    return Run(GangCallbacks{nullptr, on_output, nullptr});
  }

  // Thread-safe: ends a Run in progress (the ranks are terminated); Run returns CANCELLED.
  void Stop() override;
  // Thread-safe: the pids of the running ranks (empty before they start and after they end).
  std::vector<pid_t> pids() const;
  const std::optional<GangFailure>& failure() const override { return failure_; }
  // Whether the ranks are peers (a fine-tuning gang) rather than one lone rank.
  bool has_peers() const override { return peers_; }

 private:
  // How messages name rank r: "rank r" among peers, "fuji-rank" alone.
  std::string Name(int r) const;

  nlohmann::json request_;  // what every rank is sent, before Run adds op, id and the rank's place
  int ranks_ = 1;           // run here
  int world_ = 1;           // in the whole gang
  int first_ = 0;           // the global rank of the first one run here
  bool peers_ = true;
  GangOptions options_;
  std::atomic<bool> stop_{false};
  mutable std::mutex mu_;
  std::vector<pid_t> pids_;
  std::optional<GangFailure> failure_;
};

// The error Run returns for a failure: CANCELLED, UNAVAILABLE (deadline, a lost peer), INTERNAL,
// INVALID_ARGUMENT (bad_input), RESOURCE_EXHAUSTED (out of memory), with its message.
Status FailureStatus(const GangFailure& f);

// The launcher result of the contract from each rank's "result" object (index = rank, or the rank
// less the first one's for one agent's part of a gang across agents).
nlohmann::json MergeRankResults(const std::vector<nlohmann::json>& results);

}  // namespace fuji::launch
