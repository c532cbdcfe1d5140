// A gang: N fuji-rank processes running one fine-tuning job together on this machine. Starts them
// with a FileStore rendezvous in a fresh private directory, sends each its request, passes what
// they say to a callback, and stops them all as soon as one fails, is cancelled or runs out of time.
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
  // Per-rank additions to env (e.g. CUDA_VISIBLE_DEVICES); may be empty.
  std::function<std::map<std::string, std::string>(int rank)> rank_env;
  std::chrono::milliseconds deadline{0};      // 0: none
  std::chrono::milliseconds terminate_grace{5000};
  // Tokens in the prepared training corpus (PreparedFinetune::num_tokens; 0 unknown): the
  // result carries it as "corpus_tokens", for the time to train the whole corpus.
  int64_t corpus_tokens = 0;
};

// One line from a rank, in arrival order.
struct GangOutput {
  int rank = 0;
  ChildOutput output;
};

// Why a gang failed. `rank` is the first rank seen failing (-1 for a stop or a start failure).
struct GangFailure {
  enum class Kind { kRankError, kRankExit, kCancelled, kDeadline, kStart } kind = Kind::kRankError;
  int rank = -1;
  // kRankError: the rank's error event reason; else what the failure amounts to (kCancelled,
  // kTimeout for kDeadline, kInternal).
  FailureKind reason = FailureKind::kInternal;
  std::string message;      // one line, naming the rank
  ExitInfo exit;            // the failing rank's exit (kRankError, kRankExit)
  std::string last_stderr;  // that rank's last non-empty stderr line
};

class Gang {
 public:
  // spec.ranks processes; spec.rank and spec.rendezvous are set per rank by Run().
  Gang(FinetuneSpec spec, GangOptions options);
  Gang(const Gang&) = delete;
  Gang& operator=(const Gang&) = delete;

  // Blocks until every rank has ended. The callback runs on this thread for each output line.
  // OK with the merged launcher result, or an error whose message names the rank and why;
  // failure() then says more.
  Result<nlohmann::json> Run(const std::function<void(const GangOutput&)>& on_output);

  // Thread-safe: ends a Run in progress (the ranks are terminated); Run returns CANCELLED.
  void Stop();
  // Thread-safe: the pids of the running ranks (empty before they start and after they end).
  std::vector<pid_t> pids() const;
  const std::optional<GangFailure>& failure() const { return failure_; }

 private:
  FinetuneSpec spec_;
  GangOptions options_;
  std::atomic<bool> stop_{false};
  mutable std::mutex mu_;
  std::vector<pid_t> pids_;
  std::optional<GangFailure> failure_;
};

// The launcher result of the contract from each rank's "result" object (index = rank).
nlohmann::json MergeRankResults(const std::vector<nlohmann::json>& results);

}  // namespace fuji::launch
