// "auto" for `fuji run` (no daemon): the memory planner's fastest plan that fits the memory free
// on this machine now (the host's MemAvailable and, for CUDA, each GPU's free memory through
// NVML), as fujid's scheduler would choose on an agent of this machine.
#pragma once

#include <string>

#include <nlohmann/json.hpp>

#include "worker/common/status.h"

namespace fuji::client {

// `spec` (a finetune or infer spec whose "zero"/"offload" may be "auto") with the plan in place;
// unchanged when nothing is "auto". FAILED_PRECONDITION with the numbers when no plan fits;
// UNAVAILABLE when a CUDA job's GPUs cannot be read (no NVML). Says the choice on stderr.
Result<nlohmann::json> ResolveLocalPlan(const std::string& kind, nlohmann::json spec);

}  // namespace fuji::client
