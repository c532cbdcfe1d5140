// The node's rates for the memory planner's step times, measured by fuji-rank with the threads
// and libraries the ranks use (fuji-agent asks once at start and reports them at Register; `fuji
// run` asks before it plans). A fraction of a second on two cores.
#pragma once

#include <nlohmann/json.hpp>

namespace fuji::rank {

// {"cpu_flops", "cpu_memory_bandwidth", "cpu_adamw_params_per_s_fp32",
//  "cpu_adamw_params_per_s_half", "cpu_link_bandwidth" (ZeRO's bytes per rank per second of a
//  Gloo reduce-scatter and all-gather between two ranks of this node), "threads"} and, where a CUDA device is present,
// "host_device_bandwidth" (pinned host memory to device 0). Each rate is the best of a few
// repetitions after a warm-up: the machine's capability, as the planner's constants are.
nlohmann::json MeasureRates();

}  // namespace fuji::rank
