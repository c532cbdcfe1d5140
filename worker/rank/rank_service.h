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
//   {"event": "result", "result": {...}}       the request succeeded
//   {"event": "error", "code", "reason", "message"}  it failed; reason is bad_input, cuda_oom,
//                                                   host_oom, collective_timeout or internal
//   {"event": "token", "index", "ids": [...], "text"}  infer: new tokens, at most every 20 ms or
//                                                   16 tokens; "text" is the UTF-8 those ids
//                                                   complete (the texts concatenate to the
//                                                   result's "text")
// More ops: {"op": "cancel", "id"} ends request `id` with an error event whose reason is
// "cancelled" (no answer when no such request is in flight); {"op": "load", "id", ...an
// InferSpec's model, precision, device, offload} loads (or keeps) that model resident and answers
// {"result": {"loaded": true, "load_ms", "resident", "mib"}}.
//
// Serving: "infer" and "load" go to one engine thread, which runs every infer for the resident
// model (key: the model's real path | precision | device | offload) in one continuous batch
// (worker/engine/batch_engine.h) and streams its tokens. A request for another model waits until
// the batch drains, then that model replaces the resident one. The other ops run on the caller's
// thread, as before, once the batch has drained.
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
