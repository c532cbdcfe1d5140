// The fine-tuning flags shared by `fuji run finetune` (ranks on this machine, no daemon) and
// `fuji submit finetune` (through fujid), the spec they build, and how the run is printed.
#pragma once

#include <string>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "lib/common/status.h"
#include "lib/spec/finetune_spec.h"

namespace fuji::client {

struct FinetuneFlags {
  FinetuneSpec spec;
  // "auto" leaves the choice to fujid's scheduler (the default of `submit finetune`).
  std::string zero = "0", offload = "none";
  std::string output = "text";
};

// Adds --model, --data, --ranks, --device, --zero, --offload, --precision, --seq-len,
// --micro-batch, --grad-accum, --steps, --lr, --save-to and every other FinetuneSpec field as a
// flag (--warmup-steps ... --keep-last ... --cache-dir), and --output text|json, stored in `*f`.
void AddFinetuneFlags(CLI::App* cmd, FinetuneFlags* f);

// Builds the spec from the flags and checks it the way the ranks and the daemon will; relative
// paths become absolute. "auto" becomes the planner's choice for this machine (local_plan.h).
Result<FinetuneSpec> FinetuneSpecFromFlags(const FinetuneFlags& f);
// The spec as `submit finetune` sends it: "zero" and "offload" may be "auto".
Result<nlohmann::json> FinetuneSubmitSpec(const FinetuneFlags& f);

// One line for a rank-0 "loss" event ("step 3/20  loss 5.4321  lr 1.2e-04  1234 tok/s"; eval
// losses "step 20/20  eval loss 5.1234"); "" for other events.
std::string FormatLossEvent(const nlohmann::json& event, int64_t total_steps);

// The text summary of a launcher result: final and eval loss, tokens/s, peak memory per rank.
std::string FormatFinetuneSummary(const nlohmann::json& result);

}  // namespace fuji::client
