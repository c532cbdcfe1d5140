// The work of a fuji-rank process: requests in, events out, as JSON lines.
//
// Requests: {"op": "infer" | "init" | "convert" | "finetune" | "calibrate", "id": "...", ...fields
// of the op}: an InferSpec's or InitSpec's fields (lib/spec/job_spec.h), "in"/"out"/"dtype" for
// convert, a FinetuneSpec's (lib/spec/finetune_spec.h) with the rank, rendezvous and token cache
// the launcher sets (worker/launcher/gang.h); "calibrate" measures the node's rates (calibrate.h).
// Events, each carrying the request's "id":
//   {"event": "started", "op", "pid"}          the request was accepted
//   {"event": "progress", "phase", "done", "total"}  a finetune's "train" phase adds rank 0's
//                                                   "loss" and "tokens_per_s"
//   {"event": "timing", "phase", "ms", "start_ms", "end_ms"}  one per phase (wall-clock ms)
//   {"event": "loss", "step", "loss", "split", ...}  finetune, rank 0: each train and eval loss
//   {"event": "checkpoint", "step", "path"}    finetune, rank 0: a checkpoint was published
//   {"event": "result", "result": {...}}       the request succeeded
//   {"event": "error", "code", "reason", "message"}  it failed; reason is bad_input, cuda_oom,
//                                                   host_oom, collective_timeout or internal
// One process serves requests one after another, and keeps the last model it loaded resident so
// that a later request for the same model, dtype and device skips the load.
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

  // Runs one request to completion; every outcome, errors included, is reported as events.
  // False when the request failed (an error event was written).
  bool Handle(const nlohmann::json& request);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace fuji::rank
