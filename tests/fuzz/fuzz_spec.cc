// Fuzzes the job spec parsers with the bytes of a submitted spec_json, as fujid's Submit and the
// agent read them: the bounded JSON parse, then every spec kind (with and without "auto" plan
// fields), the CPU offload rewrite and the plan fields. A spec that parses must survive its own
// ToJson: FromJson(ToJson(s)) parses again to the same JSON. The bytes also go to ParseIdList
// (the CLI's --prompt-ids).
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "lib/common/json_bounds.h"
#include "lib/spec/finetune_spec.h"
#include "lib/spec/job_spec.h"
#include "lib/spec/plan_fields.h"

namespace {

// Aborts (a crash to libFuzzer) when a parsed spec does not read back as itself.
template <typename Spec>
void CheckRoundTrip(const fuji::Result<Spec>& parsed, const char* kind) {
  if (!parsed.ok()) return;
  const nlohmann::json once = parsed->ToJson();
  fuji::Result<Spec> again = Spec::FromJson(once);
  if (!again.ok() || again->ToJson() != once) {
    std::fprintf(stderr, "%s spec does not read back as itself: %s\n", kind,
                 again.ok() ? "different JSON" : again.status().message().c_str());
    std::abort();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  (void)fuji::ParseIdList(std::string(text));

  const nlohmann::json spec = fuji::ParseJsonBounded(text);
  if (spec.is_discarded()) return 0;
  fuji::PlanFields fields;
  fuji::Result<fuji::FinetuneSpec> finetune = fuji::FinetuneSpecWithAuto(spec, &fields);
  if (finetune.ok()) {
    (void)finetune->EffectiveMinLr();
    (void)finetune->EffectiveWarmupSteps();
    (void)fuji::SpecWithPlan(spec, true, fields.zero_auto ? 3 : finetune->zero, finetune->offload);
  }
  (void)fuji::InferSpecWithAuto(spec, &fields);
  std::string note;
  (void)fuji::WithoutCpuOffload(spec, &note);

  CheckRoundTrip(fuji::FinetuneSpec::FromJson(spec), "finetune");
  CheckRoundTrip(fuji::InferSpec::FromJson(spec), "infer");
  CheckRoundTrip(fuji::InitSpec::FromJson(spec), "init");
  return 0;
}
