// The work of a fuji-rank process: requests in, events out, as JSON lines.
//
// Requests: {"op": "infer" | "init" | "convert" | "finetune" | "calibrate", "id": "...", ...fields
// of the op}: an InferSpec's or InitSpec's fields (lib/spec/job_spec.h), "in"/"out"/"dtype" for
// convert, a FinetuneSpec's (lib/spec/finetune_spec.h) with the rank, rendezvous and token cache
// the launcher sets (worker/launcher/gang.h); "calibrate" measures the node's rates (calibrate.h).
// Events, each carrying the request's "id":
//   {"event": "started", "op", "pid"}          the request was accepted
//   {"event": "progress", "phase", "done", "total"}  an infer's "generate" phase: every 250 ms;
//                                                   a finetune's "train" phase adds rank 0's
//                                                   "loss" and "tokens_per_s"
//   {"event": "timing", "phase", "ms", "start_ms", "end_ms"}  one per phase (wall-clock ms)
//   {"event": "loss", "step", "loss", "split", ...}  finetune, rank 0: each train and eval loss
//   {"event": "checkpoint", "step", "path"}    finetune, rank 0: a checkpoint was published
//   {"event": "preempted", "step", "checkpoint_step"}  finetune, every rank: it was asked to stop
//                                                   (SIGUSR1, below) and stopped after "step";
//                                                   "checkpoint_step" is the step it saved (0:
//                                                   no --save-to). Its result follows, with
//                                                   "preempted": true, and it exits 0
//   {"event": "result", "result": {...}}       the request succeeded
//   {"event": "error", "code", "reason", "message"}  it failed; reason is bad_input, cuda_oom,
//                                                   host_oom, collective_timeout, cancelled or
//                                                   internal
//   {"event": "token", "index", "ids": [...], "text"}  infer: new tokens, sent when 16 are pending
//                                                   or 20 ms after the last token event; "index"
//                                                   is the first one's; "text" is the UTF-8 those
//                                                   ids complete (a character cut between runs
//                                                   goes with the run that completes it; bytes
//                                                   that make no character are U+FFFD; text that
//                                                   could begin a stop string waits): the ids
//                                                   concatenate to "output_ids" and the texts to
//                                                   the result's "text"
// An infer's events: started, timing load, timing tokenize, token..., progress..., timing queue,
// timing prefill, timing decode, then result {"prompt_ids", "output_ids", "text", "finish_reason"
// (length | eos | stop), "timings" {"load_ms", "tokenize_ms", "queue_ms" (arrival to admission
// into the batch), "prefill_ms" (admission to first token), "decode_ms", "decode_tokens",
// "decode_tokens_per_s", "total_ms"}, "batch" {"max_batch_seen"}, "memory", "model" {..., "mib"
// (weights and KV cache), "kv_cache_mib"}, "device", "precision", "offload", "threads"} — or error.
// An InferSpec's "stop" strings end the generation once the decoded text contains one; the text
// is cut before it (output_ids keep the token that completed it).
// More ops: {"op": "cancel", "id"} ends request `id` with an error event whose reason is
// "cancelled" (no answer when no such request is in flight); {"op": "load", "id", ...an
// InferSpec's model, precision, device, offload} loads (or keeps) that model resident and answers
// {"result": {"loaded": true, "load_ms", "resident", "mib", "model", "device", "precision",
// "offload"}}. A rank holds at most 1024 requests at once; an id already in flight is refused.
// Preemption: SIGUSR1 asks a fine-tuning rank to checkpoint and stop (the agent sends it for a
// drain with requeue). At each step boundary the ranks sum a stop flag with the step's loss (one
// all-reduce), so every rank of the gang stops after the same step, whichever was signalled; they
// save that step when the spec has a save_to and say "preempted". Any other op ignores it.
//
// Serving: "infer" and "load" go to one engine thread, which runs every infer for the resident
// model (key: the model's real path | precision | device | offload) in one continuous batch
// (worker/engine/batch_engine.h) and streams its tokens. A request for another model waits until
// the batch drains, then that model replaces the resident one. The other ops run on the caller's
// thread, as before, once the batch has drained. The KV cache takes FUJI_KV_CACHE_MIB (default
// 1024 on the CPU, 4096 on a GPU), at most what 64 sequences of the model's full length need and
// at least one of them. When stdin closes, the requests taken run to their end first.
#pragma once

#include <memory>
#include <string>

#include <nlohmann/json.hpp>

#include "lib/common/json_lines.h"

namespace fuji::rank {

class RankService {
 public:
  // events must outlive the service.
  explicit RankService(JsonLineWriter* events);
  ~RankService();

  // Takes one request: "infer" and "load" are queued for the engine thread and "cancel" reaches
  // it at once; the other ops run to completion here after the batch drains. Every outcome,
  // errors included, is reported as events. False when a request run here failed.
  bool Handle(const nlohmann::json& request);
  // Waits until every request taken has ended.
  void Drain();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace fuji::rank
