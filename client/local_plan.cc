// The planner's choice for a run on this machine; see local_plan.h.
#include "client/local_plan.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <optional>
#include <vector>

#include "worker/agent/nvml.h"
#include "worker/common/proc_stats.h"
#include "worker/plan/plan.h"
#include "worker/spec/plan_fields.h"

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
  FUJI_ASSIGN_OR_RETURN(std::unique_ptr<agent::Nvml> nvml, agent::Nvml::Load());
  const std::vector<int> gpus = VisibleGpus(nvml->DeviceCount());
  if (gpus.empty() || first >= static_cast<int>(gpus.size())) {
    return Unavailable("no visible GPU to plan for");
  }
  const int used = first > 0 ? 1 : std::min<int>(ranks, static_cast<int>(gpus.size()));
  int64_t least = std::numeric_limits<int64_t>::max();
  for (int g = 0; g < used; ++g) {
    FUJI_ASSIGN_OR_RETURN(agent::GpuReading reading, nvml->Read(gpus[static_cast<size_t>(first + g)]));
    const int sharing = first > 0 ? ranks : (ranks - g + used - 1) / used;  // ranks g, g + used, ...
    least = std::min(least, (reading.total_mib - reading.used_mib) * kMiB / std::max(1, sharing));
  }
  return least;
}

}  // namespace

Result<nlohmann::json> ResolveLocalPlan(const std::string& kind, nlohmann::json spec) {
  const bool finetune = kind == "finetune";
  PlanFields fields;
  plan::PlanRequest r;
  std::string model;
  int fixed_zero = 0;
  std::string fixed_offload, device;
  int first_gpu = 0;
  if (finetune) {
    FUJI_ASSIGN_OR_RETURN(FinetuneSpec s, FinetuneSpecWithAuto(spec, &fields));
    model = s.model;
    r.mode = "finetune";
    r.gpus = s.ranks;
    r.precision = s.precision;
    r.seq_len = s.seq_len;
    r.micro_batch = s.micro_batch;
    r.activation_checkpointing = s.activation_checkpointing;
    device = s.device;
    fixed_zero = s.zero;
    fixed_offload = s.offload;
  } else {
    FUJI_ASSIGN_OR_RETURN(InferSpec s, InferSpecWithAuto(spec, &fields));
    model = s.model;
    r.mode = "infer";
    const int64_t prompt = s.prompt ? static_cast<int64_t>(s.prompt->size()) : static_cast<int64_t>(s.prompt_ids.size());
    r.seq_len = std::max<int64_t>(1, prompt + s.max_new_tokens);
    r.precision = s.precision;
    device = s.device.rfind("cuda", 0) == 0 ? "cuda" : "cpu";
    if (s.device.rfind("cuda:", 0) == 0) first_gpu = std::atoi(s.device.c_str() + 5);
    fixed_offload = s.offload;
  }
  if (!fields.zero_auto && !fields.offload_auto) return spec;
  FUJI_ASSIGN_OR_RETURN(r.config, plan::ResolveModel(model, &r.checkpoint_bytes));
  r.seq_len = std::min<int64_t>(r.seq_len, r.config.n_positions);
  r.device = device == "cuda" ? plan::DeviceKind::kCuda : plan::DeviceKind::kCpu;
  r.host_memory_bytes = ReadHostMemory().available_bytes;
  if (r.device == plan::DeviceKind::kCuda) {
    Result<int64_t> free = FreeBytesPerRank(r.gpus, first_gpu);
    if (!free.ok()) {
      return Unavailable("auto needs the GPUs' free memory (" + free.status().message() +
                         "): give the stage and offload (fuji plan recommends them)");
    }
    r.gpu_memory_bytes = *free;
  }
  FUJI_ASSIGN_OR_RETURN(std::vector<plan::Plan> plans, plan::PlanAll(r));
  plans.erase(std::remove_if(plans.begin(), plans.end(),
                             [&](const plan::Plan& p) {
                               return (finetune && !fields.zero_auto && p.zero != fixed_zero) ||
                                      (!fields.offload_auto && p.offload != fixed_offload);
                             }),
              plans.end());
  const std::optional<plan::Plan> best = plan::Recommend(plans);
  const std::string where = (r.device == plan::DeviceKind::kCuda ? plan::FormatGiB(r.gpu_memory_bytes) + " free per GPU and " : "") +
                            plan::FormatGiB(r.host_memory_bytes) + " of host memory free";
  if (!best || plans.empty()) {
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
    if (!least) return FailedPrecondition("no plan keeps the fixed stage and offload");
    return FailedPrecondition("no plan fits the " + where + ": the least demanding, " +
                              (finetune ? "zero " + std::to_string(least->zero) + ", " : std::string()) + "offload " +
                              least->offload + ", " + least->why_not + " (fuji plan lists every plan)");
  }
  const bool cuda = r.device == plan::DeviceKind::kCuda;
  std::string said = "plan: ";
  if (finetune) said += "zero " + std::to_string(best->zero) + ", ";
  said += "offload " + best->offload + " (the fastest that fits the " + where + "; predicted " +
          plan::FormatGiB(cuda ? best->gpu_bytes : best->breakdown.host_peak) + " per rank";
  if (cuda) said += ", " + plan::FormatGiB(best->host_bytes) + " of host memory";
  std::fprintf(stderr, "%s)\n", said.c_str());
  return SpecWithPlan(std::move(spec), finetune, best->zero, best->offload);
}

}  // namespace fuji::client
