// Inference flags, spec building and result printing shared by `run infer` and `submit infer`.
#include "client/infer_flags.h"

#include <unistd.h>

#include <cstdio>

#include "client/local_plan.h"
#include "lib/spec/plan_fields.h"

namespace fuji::client {

void AddInferFlags(CLI::App* cmd, InferFlags* f) {
  cmd->add_option("--model", f->spec.model, "Checkpoint directory")->required();
  auto* prompt = cmd->add_option("--prompt", f->prompt, "Prompt text");
  cmd->add_option("--prompt-ids", f->prompt_ids, "Prompt as token ids: 1,2,3")->excludes(prompt);
  cmd->add_option("--max-new-tokens", f->spec.max_new_tokens, "Tokens to generate at most");
  auto* greedy = cmd->add_flag("--greedy", f->greedy_flag, "Always the most likely token (default)");
  cmd->add_option("--temperature", f->spec.temperature, "Sample with this temperature")->excludes(greedy);
  cmd->add_option("--top-k", f->spec.top_k, "Sample among the k most likely tokens")->excludes(greedy);
  cmd->add_option("--top-p", f->spec.top_p, "Sample within this probability mass")->excludes(greedy);
  cmd->add_option("--seed", f->spec.seed, "Sampling seed");
  cmd->add_option("--precision", f->spec.precision, "fp32, bf16 or fp16");
  cmd->add_option("--device", f->spec.device, "cpu, cuda or cuda:N");
  cmd->add_flag("--ignore-eos", f->spec.ignore_eos, "Generate max-new-tokens even past end of text");
  cmd->add_option("--offload", f->offload,
                  "none; params: keep the weights in host memory and stream them to the device "
                  "block by block; auto: fujid's scheduler picks")
      ->check(CLI::IsMember({"auto", "none", "params"}));
  cmd->add_option("--output", f->output, "text or json")->check(CLI::IsMember({"text", "json"}));
}

namespace {

// The spec the flags give, with `offload` (not "auto"), checked.
Result<InferSpec> BuildSpec(CLI::App* cmd, const InferFlags& f, const std::string& offload) {
  InferSpec spec = f.spec;
  spec.offload = offload;
  if (!f.prompt.empty() || cmd->count("--prompt") > 0) spec.prompt = f.prompt;
  if (!f.prompt_ids.empty()) {
    FUJI_ASSIGN_OR_RETURN(spec.prompt_ids, ParseIdList(f.prompt_ids));
  }
  spec.greedy = cmd->count("--temperature") + cmd->count("--top-k") + cmd->count("--top-p") == 0;
  if (!spec.model.empty() && spec.model[0] != '/') {
    char cwd[4096];
    if (::getcwd(cwd, sizeof cwd) != nullptr) spec.model = std::string(cwd) + "/" + spec.model;
  }
  return InferSpec::FromJson(spec.ToJson());
}

}  // namespace

Result<InferSpec> InferSpecFromFlags(CLI::App* cmd, const InferFlags& f) {
  FUJI_ASSIGN_OR_RETURN(nlohmann::json spec, InferSubmitSpec(cmd, f));
  FUJI_ASSIGN_OR_RETURN(spec, ResolveLocalPlan("infer", ApplyCpuOffloadRule(std::move(spec), true)));
  return InferSpec::FromJson(spec);
}

Result<nlohmann::json> InferSubmitSpec(CLI::App* cmd, const InferFlags& f) {
  FUJI_ASSIGN_OR_RETURN(InferSpec spec, BuildSpec(cmd, f, f.offload == kAuto ? "none" : f.offload));
  nlohmann::json j = spec.ToJson();
  j["offload"] = f.offload;
  return j;
}

void PrintInferResult(const nlohmann::json& result, const std::string& output) {
  if (output == "json") {
    std::printf("%s\n", result.dump(2, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
    return;
  }
  std::printf("%s\n", result.value("text", "").c_str());
  const nlohmann::json t = result.value("timings", nlohmann::json::object());
  std::fprintf(stderr, "load %.0f ms, prefill %.0f ms, decode %.1f tokens/s, total %.0f ms\n",
               t.value("load_ms", 0.0), t.value("prefill_ms", 0.0), t.value("decode_tokens_per_s", 0.0),
               t.value("total_ms", 0.0));
}

}  // namespace fuji::client
