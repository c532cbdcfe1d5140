// "auto" for `fuji run` (no daemon): the memory planner's fastest plan that fits the memory free
// on this machine now (the host's MemAvailable and, for CUDA, each GPU's free memory through
// NVML), as fujid's scheduler would choose on an agent of this machine.
#pragma once

#include <string>

#include <nlohmann/json.hpp>

#include "lib/common/status.h"
#include "lib/plan/plan.h"

namespace fuji::client {

// `spec` (a finetune or infer spec whose "zero"/"offload" may be "auto") with the plan in place;
// unchanged when nothing is "auto". FAILED_PRECONDITION with the numbers when no plan fits;
// UNAVAILABLE when a CUDA job's GPUs cannot be read (no NVML). Says the choice on stderr.
Result<nlohmann::json> ResolveLocalPlan(const std::string& kind, nlohmann::json spec);

// This machine's rates for the planner, measured by a fuji-rank (launch::MeasureNodeRates); the
// planner's defaults, said in one line on stderr, when that fails.
plan::Throughput MeasuredRates();

// The spec with an explicit offload on a CPU device run as none (WithoutCpuOffload), said in one
// line on stderr. For `fuji run` (`run_here`), FUJI_CPU_OFFLOAD=emulate keeps the offload: its
// data path then runs on the CPU with host memory standing in for the device's, which is how the
// tests check offload without a GPU.
nlohmann::json ApplyCpuOffloadRule(nlohmann::json spec, bool run_here);

}  // namespace fuji::client
