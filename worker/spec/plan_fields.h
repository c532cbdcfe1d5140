// Specs as submitted to fujid may leave the plan to its scheduler: a fine-tune's "zero" and
// "offload", and an inference's "offload", may be "auto". The scheduler writes the plan it chose
// into the spec it hands to the agent, so launchers and ranks only ever see concrete values (and
// refuse "auto" as any other bad value).
#pragma once

#include <string>

#include <nlohmann/json.hpp>

#include "worker/common/status.h"
#include "worker/spec/finetune_spec.h"
#include "worker/spec/job_spec.h"

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

// `spec` with the chosen plan in place: "zero" (fine-tunes) and "offload".
nlohmann::json SpecWithPlan(nlohmann::json spec, bool finetune, int zero, const std::string& offload);

}  // namespace fuji
