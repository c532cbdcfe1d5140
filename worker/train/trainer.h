// The fine-tuning loop of one rank: data, schedule, ZeRO model, evaluation, checkpoints, events.
#pragma once

#include <functional>

#include <nlohmann/json.hpp>

#include "lib/common/status.h"
#include "lib/spec/finetune_spec.h"

namespace fuji::train {

// Receives the events of the rank protocol (worker/rank/rank_service.h) without their "id".
using EventSink = std::function<void(nlohmann::json)>;

// Runs spec on this rank (spec.rank of spec.ranks) to the end: emits timing, loss, progress and
// checkpoint events as it goes and the result event last. Errors come back as a Status; a
// collective that fails (a peer died, timeout) throws like any engine error.
// The run stops early when RequestPreempt was called: see RequestPreempt.
Status RunFinetune(const FinetuneSpec& spec, const EventSink& emit);

// Asks the fine-tune running in this process to stop at its next step boundary: the ranks agree on
// that step through the stop flag they all-reduce with each step's loss, save it (with a save_to),
// emit {"event": "preempted", "step", "checkpoint_step"} and their result with "preempted": true.
// Async-signal-safe (fuji-rank's SIGUSR1 handler calls it); it stays asked for the process's life.
void RequestPreempt();

}  // namespace fuji::train
