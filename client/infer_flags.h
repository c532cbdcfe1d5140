// The inference flags shared by `fuji run infer` (foreground, no daemon) and `fuji submit infer`
// (through fujid), the spec they build, and how an inference result is printed.
#pragma once

#include <string>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "lib/common/status.h"
#include "lib/spec/job_spec.h"

namespace fuji::client {

struct InferFlags {
  InferSpec spec;
  std::string offload = "none";  // "auto": fujid's scheduler picks (the default of `submit infer`)
  std::string prompt, prompt_ids, output = "text";
  bool greedy_flag = false;
};

// Adds --model, --prompt, --prompt-ids, sampling, --precision, --device, --ignore-eos and
// --output text|json to `cmd`, stored in `*f` (which must outlive the parse).
void AddInferFlags(CLI::App* cmd, InferFlags* f);

// Builds the spec from the flags and checks it the way the rank and the daemon will; a relative
// --model becomes absolute; --offload auto becomes the planner's choice for this machine.
Result<InferSpec> InferSpecFromFlags(CLI::App* cmd, const InferFlags& f);
// The spec as `submit infer` sends it: "offload" may be "auto".
Result<nlohmann::json> InferSubmitSpec(CLI::App* cmd, const InferFlags& f);

// json: the result object on stdout. text: the generated text on stdout and a timings line
// on stderr.
void PrintInferResult(const nlohmann::json& result, const std::string& output);

}  // namespace fuji::client
