// This node's rates for the memory planner, measured by a fuji-rank process ({"op": "calibrate"},
// worker/rank/calibrate.h): fuji-agent asks once at start and reports them to fujid, `fuji run`
// asks before it plans. Torch-free.
#pragma once

#include <atomic>
#include <chrono>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "lib/common/status.h"
#include "worker/launcher/child_process.h"

namespace fuji::launch {

// The rates object of the calibration's result (as calibrate.h lists it). UNAVAILABLE when the
// rank cannot start, fails, takes longer than `timeout`, or *stop (when not null) becomes true
// (checked every 100 ms); the rank is killed then. An agent's rank is confined as its job ranks are.
Result<nlohmann::json> MeasureNodeRates(const std::string& rank_executable, std::chrono::milliseconds timeout,
                                        const std::atomic<bool>* stop = nullptr,
                                        const std::optional<Confinement>& confinement = std::nullopt);

}  // namespace fuji::launch
