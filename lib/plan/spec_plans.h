// The planner's question for a job spec, asked one way by `fuji run` (client/local_plan.cc) and by
// fujid at submit (daemon/server/job_plans.cc): the request a spec makes of the planner, the
// choices it leaves open ("auto"), and the plans that keep its fixed choices, fastest first.
// Torch-free.
#pragma once

#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "lib/common/status.h"
#include "lib/plan/plan.h"

namespace fuji::plan {

// The tokens an inference's KV cache holds: prompt and new tokens, rounded up to whole blocks
// and capped at the model's positions (when positions > 0); at least one block (kKvBlockTokens).
int64_t RequestTokens(int64_t prompt_tokens, int64_t max_new_tokens, int64_t positions);

struct SpecAsk {
  PlanRequest request;  // the model's config is resolved by OpenPlans
  std::string model;    // checkpoint directory or architecture name
  bool finetune = false;
  bool zero_auto = false, offload_auto = false;
  int zero = 0;                    // fixed stage (fine-tunes whose zero is not auto)
  std::string offload = "none";    // fixed offload (when not auto)
  int first_gpu = 0;               // inference on cuda:N: N
};

// The ask of a fine-tuning (`finetune`) or inference spec that may hold "auto" fields, checked
// as FinetuneSpecWithAuto / InferSpecWithAuto check it. An inference plans for its request, not
// the model's whole context: prompt_ids' length, or for a prompt of text one token per byte (an
// upper bound: tokens are counted only on the rank), plus max_new_tokens, in whole KV blocks
// (RequestTokens; OpenPlans caps it at the model's positions). The request has no memory limits:
// callers set them.
Result<SpecAsk> AskOfSpec(bool finetune, const nlohmann::json& spec);

// Resolves ask->model (ask->request gets its config, checkpoint bytes, and a sequence length
// within its positions), and returns every plan that keeps the ask's fixed choices, fastest first
// (ties: fewer bytes per GPU). FAILED_PRECONDITION when none is left.
Result<std::vector<Plan>> OpenPlans(SpecAsk* ask);

// "zero 2, offload optimizer" (fine-tunes) or "offload none" (inference).
std::string PlanLabel(bool finetune, const Plan& plan);

}  // namespace fuji::plan
