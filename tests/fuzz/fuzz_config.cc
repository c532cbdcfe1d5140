// Fuzzes a model's config.json as LoadModelConfig reads it for the planner, the CLI and the ranks:
// the depth check, the parse, ParseModelConfig and Validate. A config it accepts must give a
// parameter count that does not overflow and read back as itself from its own ToJson.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include <nlohmann/json.hpp>

#include "lib/common/json_bounds.h"
#include "lib/model/model_config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const nlohmann::json j = fuji::ParseJsonBounded(std::string_view(reinterpret_cast<const char*>(data), size));
  if (j.is_discarded()) return 0;
  fuji::Result<fuji::engine::ModelConfig> config = fuji::engine::ParseModelConfig(j, "config.json");
  if (!config.ok()) return 0;
  (void)config->NumParameters();
  (void)config->head_dim();
  const nlohmann::json once = config->ToJson();
  fuji::Result<fuji::engine::ModelConfig> again = fuji::engine::ParseModelConfig(once, "config.json");
  if (!again.ok() || again->ToJson() != once) {
    std::fprintf(stderr, "config does not read back as itself: %s\n",
                 again.ok() ? "different JSON" : again.status().message().c_str());
    std::abort();
  }
  return 0;
}
