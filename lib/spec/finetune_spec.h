// The fine-tuning job specification (torch-free): parsed and checked in one place so that the CLI,
// the daemon, the agent's launcher and every fuji-rank refuse the same bad input the same way.
// JSON keys are the field names.
#pragma once

#include <cstdint>
#include <string>

#include <nlohmann/json.hpp>

#include "lib/common/status.h"

namespace fuji {

inline constexpr int kMaxFinetuneRanks = 64;

struct FinetuneSpec {
  std::string model;              // checkpoint dir (required)
  // When set, the weights are a random initialization of this architecture (engine's
  // ArchitectureConfig names) drawn with `seed`, and `model`'s weights are not read: training
  // from scratch, and GPU checks of big shapes without writing multi-GB checkpoints first.
  std::string random_init;
  std::string data;               // text file, .jsonl with "text", or a directory of them (required)
  std::string token_cache;        // the .tok file the launcher prepared (set by the launcher; ranks only map it)
  std::string cache_dir;          // where token caches live; "" = DefaultTokenCacheDir() where it runs
  int ranks = 1;                  // 1..64
  int rank = 0;                   // set per rank by the launcher
  std::string rendezvous;         // set by the launcher: "file:/abs/path" (FileStore) or "tcp:HOST:PORT"
  // Agents the ranks span: 0 = as few as hold them (one when one can); K = exactly K agents, each
  // with ranks / K of them (ranks must divide evenly).
  int nodes = 0;
  // Set by the launcher for a gang across agents: the agent's worker id (messages name it) and the
  // address its ranks' collectives bind to (the agent's --advertise-addr).
  std::string node;
  std::string bind_addr;
  std::string device = "cpu";     // cpu | cuda   (rank r uses cuda:(r % device_count))
  std::string backend = "auto";   // collectives: auto (NCCL on cuda, Gloo on cpu) | gloo | nccl
  int zero = 0;                   // 0..3
  std::string offload = "none";   // none | optimizer | params (params needs zero 3)
  std::string precision = "fp32"; // fp32 | bf16 | fp16
  int64_t seq_len = 128, micro_batch = 1, grad_accum = 1, steps = 10;
  double lr = 1e-4, min_lr = -1 /* <0: lr/10 */, warmup_steps = -1 /* <0: min(100, steps/10) */;
  double weight_decay = 0.1, clip = 1.0 /* 0: off */, beta1 = 0.9, beta2 = 0.95, eps = 1e-8;
  int64_t eval_every = 0 /* 0: only after the last step */, eval_batches = 4;
  double holdout = 0.05;
  bool activation_checkpointing = false;
  std::string save_to;            // "" = no checkpoints
  int64_t save_every = 0;         // 0: only after the last step (when save_to is set)
  std::string resume = "auto";    // auto: continue from save_to/latest when present | never
  int64_t stop_after = 0;         // >0: stop (after saving) once this step is done; the schedule still uses `steps`
  // Checkpoint retention (worker/ckpt/retention.h): N > 0 keeps the newest N complete step
  // directories of save_to and removes older ones once latest names a newer one; 0 keeps all;
  // -1 (unset) takes the agent's --keep-last, and keeps all outside an agent or without one.
  int64_t keep_last = -1;
  uint64_t seed = 0;
  double initial_loss_scale = 65536;  // fp16 only
  int64_t loss_scale_window = 1000;   // fp16 only
  int64_t collective_timeout_ms = 120000;
  int threads = 0;                // intra-op threads per rank; 0: cores / ranks (at least 1)

  nlohmann::json ToJson() const;
  // INVALID_ARGUMENT naming the field for anything malformed or out of range. Keys that are not
  // fields (a rank request's "op" and "id") are ignored.
  static Result<FinetuneSpec> FromJson(const nlohmann::json& j);

  // The schedule's resolved values: min_lr < 0 means lr / 10, warmup_steps < 0 means
  // min(100, steps / 10).
  double EffectiveMinLr() const;
  int64_t EffectiveWarmupSteps() const;
};

// "$XDG_CACHE_HOME/fuji/tokens", else "$HOME/.cache/fuji/tokens", else "/tmp/fuji-tokens".
std::string DefaultTokenCacheDir();

}  // namespace fuji
