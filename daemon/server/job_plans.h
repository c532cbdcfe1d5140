// The plans a job may run with, from the memory planner (lib/plan): computed at submit for
// the job's device count, every ZeRO stage and offload choice its spec leaves to the scheduler
// ("auto"), fastest first; kept on the job row (JobRecord::plans) and handed to every scheduling
// pass as the job's memory options. The pass picks the first that fits the free memory of the
// devices it places the job on; the spec the agent gets carries that plan.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "daemon/scheduler/scheduler.h"
#include "daemon/server/node_rates.h"
#include "daemon/store/job_state.h"
#include "lib/common/status.h"

namespace fuji::daemon {

// The plans of a submitted spec (checked by the caller, "auto" fields allowed), as the JSON
// object the job row keeps: {"label": "111m fine-tune (0.11B parameters)", "options": [{"zero",
// "offload", "label" ("zero 2, offload optimizer"; inference: "offload none"), "device_mib",
// "host_mib", "gpu_bytes", "host_bytes", "step_seconds"}, ...]}. device_mib is 0 on CPU devices:
// their memory is the host's. Inference options also carry "weights_mib": of device_mib (host_mib
// on a CPU), what a warm rank of the model already holds (all but the request's KV cache and
// activations), which a request batched on that rank does not need again (sched::MemoryOption).
// INVALID_ARGUMENT / NOT_FOUND when the model's config cannot be read, FAILED_PRECONDITION when
// no plan is left (it cannot happen with valid specs).
// Step times use the measured rates of the job's kind of node (NodeRates::For). The model's config
// is read from model_dir when it is given (the spec's model as the caller resolved and checked
// it), else from the spec's model; the label names the spec's model.
Result<std::string> PlanJob(store::JobKind kind, const nlohmann::json& spec, int devices, const NodeRates& rates,
                            const std::string& model_dir = "");
// The model's positions as PlanJob recorded them in a job's plans; 0 when they are not there.
int64_t PositionsOfPlans(const std::string& plans_json);

// The scheduler's view of a job row's plans; null for "" (a job from before plans were kept).
// Malformed JSON gives null as well: such a job is placed by its device count only. Equal JSON
// gives the same object (a bounded cache): a pass recognizes the requests of one kind by it.
std::shared_ptr<const sched::MemoryPlans> ReadPlans(const std::string& plans_json);
// One plan (an element of the options, as PlanAt gives it); nullopt when malformed (a weights_mib
// that is not an integer from 0 to the option's memory among it).
std::optional<sched::MemoryOption> ReadPlan(const nlohmann::json& plan);
std::optional<sched::MemoryOption> ReadPlan(const std::string& plan_json);

// Option `index` of the plans JSON, as a JSON object text ("" when there is none).
std::string PlanAt(const std::string& plans_json, int index);

// After an attempt with plan `plan_json` ran out of memory (on its GPUs when `device`, else on the
// host): the plans of `plans_json` that need less of that memory, as the job row keeps them; ""
// when none is left (or the JSON is not plans). Unchanged when the plan needed none of that
// memory (a GPU out of memory reported for a CPU job).
std::string PlansAfterOom(const std::string& plans_json, const std::string& plan_json, bool device);

// The spec handed to the agent: `spec_json` with the plan `plan_json` (PlanAt's) in place of its
// "auto" fields; unchanged when plan_json is "".
std::string SpecForPlacement(store::JobKind kind, const std::string& spec_json,
                             const std::string& plan_json);

}  // namespace fuji::daemon
