// The planner's question for a job spec; see spec_plans.h.
#include "lib/plan/spec_plans.h"

#include <algorithm>
#include <cstdlib>

#include <nlohmann/json.hpp>

#include "lib/spec/plan_fields.h"

namespace fuji::plan {

int64_t RequestTokens(int64_t prompt_tokens, int64_t max_new_tokens, int64_t positions) {
  const int64_t tokens =
      std::max<int64_t>(1, std::max<int64_t>(0, prompt_tokens) + std::max<int64_t>(0, max_new_tokens));
  int64_t rounded = (tokens + kKvBlockTokens - 1) / kKvBlockTokens * kKvBlockTokens;
  if (positions > 0) rounded = std::min(rounded, positions);
  return rounded;
}

Result<SpecAsk> AskOfSpec(bool finetune, const nlohmann::json& spec) {
  SpecAsk ask;
  ask.finetune = finetune;
  PlanFields fields;
  PlanRequest& r = ask.request;
  if (finetune) {
    FUJI_ASSIGN_OR_RETURN(FinetuneSpec s, FinetuneSpecWithAuto(spec, &fields));
    ask.model = s.model;
    r.mode = "finetune";
    r.gpus = s.ranks;
    r.precision = s.precision;
    r.seq_len = s.seq_len;
    r.micro_batch = s.micro_batch;
    r.activation_checkpointing = s.activation_checkpointing;
    r.device = s.device == "cuda" ? DeviceKind::kCuda : DeviceKind::kCpu;
    ask.zero = s.zero;
    ask.offload = s.offload;
  } else {
    FUJI_ASSIGN_OR_RETURN(InferSpec s, InferSpecWithAuto(spec, &fields));
    ask.model = s.model;
    r.mode = "infer";
    r.gpus = 1;
    r.precision = s.precision;
    const int64_t prompt = s.prompt ? static_cast<int64_t>(s.prompt->size())
                                    : static_cast<int64_t>(s.prompt_ids.size());
    // The model's positions are known once OpenPlans resolves it, which caps this.
    r.seq_len = RequestTokens(prompt, s.max_new_tokens, 0);
    r.micro_batch = 1;
    r.device = s.device.rfind("cuda", 0) == 0 ? DeviceKind::kCuda : DeviceKind::kCpu;
    if (s.device.rfind("cuda:", 0) == 0) ask.first_gpu = std::atoi(s.device.c_str() + 5);
    ask.offload = s.offload;
  }
  ask.zero_auto = fields.zero_auto;
  ask.offload_auto = fields.offload_auto;
  return ask;
}

Result<std::vector<Plan>> OpenPlans(SpecAsk* ask) {
  PlanRequest& r = ask->request;
  FUJI_ASSIGN_OR_RETURN(r.config, ResolveModel(ask->model, &r.checkpoint_bytes));
  r.seq_len = std::min<int64_t>(r.seq_len, r.config.n_positions);
  FUJI_ASSIGN_OR_RETURN(std::vector<Plan> plans, PlanAll(r));
  plans.erase(std::remove_if(plans.begin(), plans.end(),
                             [&](const Plan& p) {
                               return (ask->finetune && !ask->zero_auto && p.zero != ask->zero) ||
                                      (!ask->offload_auto && p.offload != ask->offload);
                             }),
              plans.end());
  if (plans.empty()) {
    return FailedPrecondition("the planner has no plan for " +
                              (ask->finetune ? "zero " + std::to_string(ask->zero) + " with " : std::string()) +
                              "offload " + ask->offload);
  }
  // Recommend's order: the fastest first, then the fewer bytes per device.
  std::stable_sort(plans.begin(), plans.end(), [](const Plan& a, const Plan& b) {
    return a.step_seconds != b.step_seconds ? a.step_seconds < b.step_seconds : a.gpu_bytes < b.gpu_bytes;
  });
  return plans;
}

std::string PlanLabel(bool finetune, const Plan& plan) {
  return (finetune ? "zero " + std::to_string(plan.zero) + ", " : std::string()) + "offload " + plan.offload;
}

}  // namespace fuji::plan
