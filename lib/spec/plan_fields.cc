// "auto" plan fields of submitted specs; see plan_fields.h.
#include "lib/spec/plan_fields.h"

namespace fuji {
namespace {

bool IsAuto(const nlohmann::json& spec, const char* key) {
  const auto it = spec.find(key);
  return it != spec.end() && it->is_string() && it->get<std::string>() == kAuto;
}

}  // namespace

Result<FinetuneSpec> FinetuneSpecWithAuto(const nlohmann::json& spec, PlanFields* fields) {
  if (!spec.is_object()) return FinetuneSpec::FromJson(spec);
  nlohmann::json concrete = spec;
  fields->zero_auto = IsAuto(spec, "zero");
  fields->offload_auto = IsAuto(spec, "offload");
  if (fields->offload_auto) concrete["offload"] = "none";
  const auto offload = spec.find("offload");
  const bool params = offload != spec.end() && offload->is_string() && offload->get<std::string>() == "params";
  if (fields->zero_auto) concrete["zero"] = params ? 3 : 0;
  return FinetuneSpec::FromJson(concrete);
}

Result<InferSpec> InferSpecWithAuto(const nlohmann::json& spec, PlanFields* fields) {
  if (!spec.is_object()) return InferSpec::FromJson(spec);
  nlohmann::json concrete = spec;
  fields->zero_auto = false;
  fields->offload_auto = IsAuto(spec, "offload");
  if (fields->offload_auto) concrete["offload"] = "none";
  return InferSpec::FromJson(concrete);
}

nlohmann::json WithoutCpuOffload(nlohmann::json spec, std::string* note) {
  if (note != nullptr) note->clear();
  if (!spec.is_object()) return spec;
  const auto device = spec.find("device");
  const bool cpu = device == spec.end() || (device->is_string() && device->get<std::string>() == "cpu");
  const auto offload = spec.find("offload");
  if (!cpu || offload == spec.end() || !offload->is_string()) return spec;
  const std::string choice = offload->get<std::string>();
  if (choice != "optimizer" && choice != "params") return spec;
  spec["offload"] = "none";
  if (note != nullptr) {
    *note = "offload " + choice +
            " runs as offload none on a CPU device: its host and device memory are the same memory";
  }
  return spec;
}

nlohmann::json SpecWithPlan(nlohmann::json spec, bool finetune, int zero, const std::string& offload) {
  if (finetune) spec["zero"] = zero;
  spec["offload"] = offload;
  return spec;
}

}  // namespace fuji
