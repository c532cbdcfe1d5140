// Continuous batching: many generation requests share one model and one paged KV cache. Each
// Step runs ONE forward pass over the new tokens of every running sequence (chunks of prompts
// being prefilled and one token per decoding sequence), flattened into rows: the Linear layers
// read their weights once for all rows (up to Gpt2Model::kRowKernelMaxRows rows in batch 1's
// arithmetic, GEMM beyond), attention runs per sequence over its own blocks. Requests join and
// leave between steps, so a finished sequence's slot goes to a waiting one at once.
//
// A request gets blocks as it grows. When the pool runs out, the newest running sequence is
// preempted: its blocks are freed and it goes back to the front of the waiting queue; readmitted,
// it recomputes its prompt and the tokens it already produced (without emitting them again) and
// continues. A request whose prompt and new tokens could never fit the pool is refused at Add.
//
// Tokens are those Generate (generate.h) gives for the same request: sampling uses one
// TokenSampler per request, and in a step of up to kRowKernelMaxRows rows (on the CPU) a row's
// arithmetic is batch 1's: it does not depend on the other rows of the step (cpu_kernels.h).
// Not thread-safe: one thread calls Add, Cancel and Step.
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "lib/common/status.h"
#include "worker/engine/generate.h"
#include "worker/engine/gpt2_model.h"
#include "worker/engine/paged_kv.h"

namespace fuji::engine {

struct BatchEngineOptions {
  int64_t block_size = 16;     // tokens per KV block
  int64_t num_blocks = 0;      // the pool's size: BlocksForBytes(config, dtype, budget, block_size)
  int64_t max_batch = 64;      // sequences running at once
  int64_t prefill_chunk = 256; // prompt tokens computed per step, over all sequences
};

struct BatchRequest {
  std::string id;  // unique among the requests in the engine
  std::vector<int32_t> prompt;
  GenerateOptions options;
  // Called with the tokens generated so far after each new token; true ends the request
  // ("stop"). Optional.
  std::function<bool(const std::vector<int32_t>& generated)> stop;
};

struct BatchTimings {
  double queue_ms = 0;    // arrival to first admission
  double prefill_ms = 0;  // arrival to the first token
  double decode_ms = 0;   // first token to last
  int64_t decode_steps = 0;
};

struct BatchEvent {
  enum class Kind { kToken, kFinished };
  std::string id;
  Kind kind = Kind::kToken;
  int32_t token = -1;   // kToken
  int64_t index = -1;   // kToken: 0 for the first new token
  std::string finish_reason;  // kFinished: length | eos | stop | cancelled
  BatchTimings timings;       // kFinished
};

class BatchEngine {
 public:
  // model must outlive the engine. Allocates the pool on the model's device.
  static Result<std::unique_ptr<BatchEngine>> Create(const Gpt2Model& model, const BatchEngineOptions& options);
  ~BatchEngine();

  // INVALID_ARGUMENT for a bad request (ValidateGeneration's checks, an empty or duplicate id);
  // RESOURCE_EXHAUSTED when it could never fit the pool. Other requests are unaffected.
  Status Add(BatchRequest request);
  // Ends the request: its blocks are freed now, and the next Step reports it finished with
  // "cancelled". False when no such request is in the engine.
  bool Cancel(const std::string& id);
  // Nothing waiting, running or left to report.
  bool Idle() const;
  // One forward pass over the running sequences (after admitting waiting ones); returns the
  // tokens it produced and the requests that finished, in order. Errors come from the device
  // (out of memory) and leave the engine unusable.
  Result<std::vector<BatchEvent>> Step();

  int64_t running() const { return static_cast<int64_t>(running_.size()); }
  int64_t waiting() const { return static_cast<int64_t>(waiting_.size()); }
  int64_t free_blocks() const { return pool_.free_blocks(); }
  int64_t max_batch_seen() const { return max_batch_seen_; }
  int64_t last_step_batch() const { return last_step_batch_; }  // sequences in the last Step's forward
  int64_t preemptions() const { return preemptions_; }
  const KvBlockPool& pool() const { return pool_; }

 private:
  using Clock = std::chrono::steady_clock;
  struct Sequence;

  BatchEngine(const Gpt2Model& model, const BatchEngineOptions& options, KvBlockPool pool);
  void Preempt(Sequence* s);
  void Finish(Sequence* s, const char* reason, std::vector<BatchEvent>* events);

  const Gpt2Model& model_;
  BatchEngineOptions options_;
  KvBlockPool pool_;
  std::unordered_map<std::string, std::unique_ptr<Sequence>> sequences_;
  std::deque<Sequence*> waiting_;   // the front is admitted first
  std::vector<Sequence*> running_;  // in admission order: the back is the newest
  std::vector<BatchEvent> pending_; // cancellations to report
  int64_t max_batch_seen_ = 0;
  int64_t last_step_batch_ = 0;
  int64_t preemptions_ = 0;
};

}  // namespace fuji::engine
