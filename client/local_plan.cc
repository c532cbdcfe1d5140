// The planner's choice for a run on this machine; see local_plan.h.
#include "client/local_plan.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <optional>
#include <vector>

#include "lib/nvml/nvml.h"
#include "lib/common/proc_stats.h"
#include "worker/launcher/child_process.h"
#include "worker/launcher/node_rates.h"
#include "lib/plan/plan.h"
#include "lib/plan/spec_plans.h"
#include "lib/spec/plan_fields.h"

namespace fuji::client {
namespace {

constexpr int64_t kMiB = int64_t{1} << 20;

// The NVML indices of the CUDA devices a process sees: CUDA_VISIBLE_DEVICES when it lists
// indices, else all of them.
std::vector<int> VisibleGpus(int count) {
  std::vector<int> gpus;
  const char* visible = std::getenv("CUDA_VISIBLE_DEVICES");
  if (visible == nullptr) {
    for (int i = 0; i < count; ++i) gpus.push_back(i);
    return gpus;
  }
  const std::string list = visible;
  size_t start = 0;
  while (start < list.size()) {
    const size_t end = std::min(list.find(',', start), list.size());
    const std::string item = list.substr(start, end - start);
    char* rest = nullptr;
    const long index = std::strtol(item.c_str(), &rest, 10);
    if (item.empty() || *rest != '\0' || index < 0 || index >= count) break;  // UUIDs, -1: stop
    gpus.push_back(static_cast<int>(index));
    start = end + 1;
  }
  return gpus;
}

// The free bytes each rank can count on: rank r uses GPU r % GPUs (of `first`.. for cuda:N), and
// ranks sharing a GPU share its free memory.
Result<int64_t> FreeBytesPerRank(int ranks, int first) {
  FUJI_ASSIGN_OR_RETURN(std::unique_ptr<nvml::Nvml> nvml, nvml::Nvml::Load());
  const std::vector<int> gpus = VisibleGpus(nvml->DeviceCount());
  if (gpus.empty() || first >= static_cast<int>(gpus.size())) {
    return Unavailable("no visible GPU to plan for");
  }
  const int used = first > 0 ? 1 : std::min<int>(ranks, static_cast<int>(gpus.size()));
  int64_t least = std::numeric_limits<int64_t>::max();
  for (int g = 0; g < used; ++g) {
    FUJI_ASSIGN_OR_RETURN(nvml::GpuReading reading, nvml->Read(gpus[static_cast<size_t>(first + g)]));
    const int sharing = first > 0 ? ranks : (ranks - g + used - 1) / used;  // ranks g, g + used, ...
    least = std::min(least, (reading.total_mib - reading.used_mib) * kMiB / std::max(1, sharing));
  }
  return least;
}

}  // namespace

plan::Throughput MeasuredRates() {
  Result<nlohmann::json> measured = Unavailable("no fuji-rank");
  if (Result<std::string> rank = launch::FindRankExecutable(); rank.ok()) {
    measured = launch::MeasureNodeRates(*rank, std::chrono::seconds(60));
  } else {
    measured = rank.status();
  }
  Result<plan::Throughput> rates = measured.ok() ? plan::RatesFromJson(*measured, plan::kThroughput)
                                                 : Result<plan::Throughput>(measured.status());
  if (rates.ok()) return *rates;
  std::fprintf(stderr, "fuji: note: planning with the planner's default rates (%s)\n", rates.status().message().c_str());
  return plan::kThroughput;
}

Result<nlohmann::json> ResolveLocalPlan(const std::string& kind, nlohmann::json spec) {
  const bool finetune = kind == "finetune";
  FUJI_ASSIGN_OR_RETURN(plan::SpecAsk ask, plan::AskOfSpec(finetune, spec));
  if (!ask.zero_auto && !ask.offload_auto) return spec;
  plan::PlanRequest& r = ask.request;
  r.host_memory_bytes = ReadHostMemory().available_bytes;
  if (r.device == plan::DeviceKind::kCuda) {
    Result<int64_t> free = FreeBytesPerRank(r.gpus, ask.first_gpu);
    if (!free.ok()) {
      return Unavailable("auto needs the GPUs' free memory (" + free.status().message() +
                         "): give the stage and offload (fuji plan recommends them)");
    }
    r.gpu_memory_bytes = *free;
  }
  r.rates = MeasuredRates();
  FUJI_ASSIGN_OR_RETURN(std::vector<plan::Plan> plans, plan::OpenPlans(&ask));
  const std::optional<plan::Plan> best = plan::Recommend(plans);
  const std::string where = (r.device == plan::DeviceKind::kCuda ? plan::FormatGiB(r.gpu_memory_bytes) + " free per GPU and " : "") +
                            plan::FormatGiB(r.host_memory_bytes) + " of host memory free";
  if (!best) {
    // The least demanding plan: the fewest host bytes among those that fit the GPU, else the
    // fewest bytes per GPU.
    const plan::Plan* least = nullptr;
    for (const plan::Plan& p : plans) {
      const bool gpu_fits = r.gpu_memory_bytes == 0 || p.gpu_bytes <= r.gpu_memory_bytes;
      const bool least_fits = least && (r.gpu_memory_bytes == 0 || least->gpu_bytes <= r.gpu_memory_bytes);
      if (!least || (gpu_fits && !least_fits) ||
          (gpu_fits == least_fits && (gpu_fits ? p.host_bytes < least->host_bytes : p.gpu_bytes < least->gpu_bytes))) {
        least = &p;
      }
    }
    return FailedPrecondition("no plan fits the " + where + ": the least demanding, " +
                              plan::PlanLabel(finetune, *least) + ", " + least->why_not + " (fuji plan lists every plan)");
  }
  const bool cuda = r.device == plan::DeviceKind::kCuda;
  std::string said = "plan: " + plan::PlanLabel(finetune, *best) + " (the fastest that fits the " + where + "; predicted " +
          plan::FormatGiB(cuda ? best->gpu_bytes : best->breakdown.host_peak) + " per rank";
  if (cuda) said += ", " + plan::FormatGiB(best->host_bytes) + " of host memory";
  char step[64];
  std::snprintf(step, sizeof step, ", %.3g s per %s", best->step_seconds, finetune ? "step" : "token");
  said += step;
  std::fprintf(stderr, "%s)\n", said.c_str());
  return SpecWithPlan(std::move(spec), finetune, best->zero, best->offload);
}

nlohmann::json ApplyCpuOffloadRule(nlohmann::json spec, bool run_here) {
  const char* emulate = std::getenv("FUJI_CPU_OFFLOAD");
  if (run_here && emulate != nullptr && std::string(emulate) == "emulate") return spec;
  std::string note;
  spec = WithoutCpuOffload(std::move(spec), &note);
  if (!note.empty()) std::fprintf(stderr, "fuji: note: %s\n", note.c_str());
  return spec;
}

}  // namespace fuji::client
