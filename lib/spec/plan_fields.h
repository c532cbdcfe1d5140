// Specs as submitted to fujid may leave the plan to its scheduler: a fine-tune's "zero" and
// "offload", and an inference's "offload", may be "auto". The scheduler writes the plan it chose
// into the spec it hands to the agent, so launchers and ranks only ever see concrete values (and
// refuse "auto" as any other bad value).
#pragma once

#include <string>

#include <nlohmann/json.hpp>

#include "lib/common/status.h"
#include "lib/spec/finetune_spec.h"
#include "lib/spec/job_spec.h"

namespace fuji {

inline constexpr char kAuto[] = "auto";

struct PlanFields {
  bool zero_auto = false;
  bool offload_auto = false;
};

// Checks a fine-tuning spec that may hold "auto" fields as FinetuneSpec::FromJson checks the
// rest. The spec returned has each auto field at a value the fixed fields allow (zero 3 beside
// offload params, else 0; offload none), and *fields says which were auto.
Result<FinetuneSpec> FinetuneSpecWithAuto(const nlohmann::json& spec, PlanFields* fields);
// The same for an inference spec ("offload" only).
Result<InferSpec> InferSpecWithAuto(const nlohmann::json& spec, PlanFields* fields);

// On a CPU device the host's memory and the device's are the same memory: offloading would only
// copy tensors from one place in RAM to another, so offload is never a plan there. The spec with
// an explicit "offload" of optimizer or params on a CPU device ("device" absent, "cpu") set to
// "none"; *note (when not null) gets one line saying so, and stays empty when nothing changed.
// fujid applies it at submit, `fuji run` and `fuji submit` before anything else (`fuji run` keeps
// the offload data path, for tests of it without a GPU, when FUJI_CPU_OFFLOAD=emulate is set).
nlohmann::json WithoutCpuOffload(nlohmann::json spec, std::string* note);

// `spec` with the chosen plan in place: "zero" (fine-tunes) and "offload".
nlohmann::json SpecWithPlan(nlohmann::json spec, bool finetune, int zero, const std::string& offload);

}  // namespace fuji
