// A job's plans from the memory planner, for placement; see job_plans.h.
#include "daemon/server/job_plans.h"

#include <sys/stat.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <mutex>
#include <optional>
#include <unordered_map>

#include <nlohmann/json.hpp>

#include "worker/plan/plan.h"
#include "worker/spec/plan_fields.h"

namespace fuji::daemon {
namespace {

constexpr int64_t kMiB = int64_t{1} << 20;

int64_t CeilMib(int64_t bytes) { return (bytes + kMiB - 1) / kMiB; }

// "111m fine-tune (0.11B parameters)"
std::string Label(const std::string& model, const char* what, int64_t parameters) {
  char count[32];
  std::snprintf(count, sizeof count, "%.2fB", static_cast<double>(parameters) / 1e9);
  std::string name = std::filesystem::path(model).lexically_normal().filename().string();
  if (name.empty()) name = std::filesystem::path(model).lexically_normal().parent_path().filename().string();
  return name + " " + what + " (" + count + " parameters)";
}

// What the spec asks of the planner, and which choices it leaves open.
struct Ask {
  plan::PlanRequest request;
  std::string model;
  bool zero_auto = false, offload_auto = false;
  int zero = 0;
  std::string offload = "none";
};

Result<Ask> AskOf(store::JobKind kind, const nlohmann::json& spec, int devices) {
  Ask ask;
  PlanFields fields;
  plan::PlanRequest& r = ask.request;
  r.gpus = devices;
  if (kind == store::JobKind::kFinetune) {
    FUJI_ASSIGN_OR_RETURN(FinetuneSpec s, FinetuneSpecWithAuto(spec, &fields));
    ask.model = s.model;
    r.mode = "finetune";
    r.precision = s.precision;
    r.seq_len = s.seq_len;
    r.micro_batch = s.micro_batch;
    r.activation_checkpointing = s.activation_checkpointing;
    r.device = s.device == "cuda" ? plan::DeviceKind::kCuda : plan::DeviceKind::kCpu;
    ask.zero = s.zero;
    ask.offload = s.offload;
  } else {
    FUJI_ASSIGN_OR_RETURN(InferSpec s, InferSpecWithAuto(spec, &fields));
    ask.model = s.model;
    r.mode = "infer";
    r.precision = s.precision;
    // A prompt of text has at most one token per byte.
    const int64_t prompt = s.prompt ? static_cast<int64_t>(s.prompt->size())
                                    : static_cast<int64_t>(s.prompt_ids.size());
    r.seq_len = std::max<int64_t>(1, prompt + s.max_new_tokens);
    r.micro_batch = 1;
    r.device = s.device.rfind("cuda", 0) == 0 ? plan::DeviceKind::kCuda : plan::DeviceKind::kCpu;
    ask.offload = s.offload;
  }
  ask.zero_auto = fields.zero_auto;
  ask.offload_auto = fields.offload_auto;
  // The bytes of each plan do not depend on the limits: placement compares them with each agent's.
  if (r.device == plan::DeviceKind::kCuda) r.gpu_memory_bytes = int64_t{1} << 50;
  return ask;
}

// Every plan the spec leaves open, fastest first, as the JSON the job row keeps.
Result<std::string> Plan(store::JobKind kind, Ask ask) {
  FUJI_ASSIGN_OR_RETURN(ask.request.config, plan::ResolveModel(ask.model, &ask.request.checkpoint_bytes));
  ask.request.seq_len = std::min<int64_t>(ask.request.seq_len, ask.request.config.n_positions);
  FUJI_ASSIGN_OR_RETURN(std::vector<plan::Plan> plans, plan::PlanAll(ask.request));
  const bool finetune = kind == store::JobKind::kFinetune;
  // Inference has no stage to choose: its plans are the offload choices.
  plans.erase(std::remove_if(plans.begin(), plans.end(),
                             [&](const plan::Plan& p) {
                               return (finetune && !ask.zero_auto && p.zero != ask.zero) ||
                                      (!ask.offload_auto && p.offload != ask.offload);
                             }),
              plans.end());
  if (plans.empty()) {
    return FailedPrecondition("the planner has no plan for zero " + std::to_string(ask.zero) +
                              " with offload " + ask.offload);
  }
  // Recommend's order: the fastest first, then the fewer bytes per device.
  std::stable_sort(plans.begin(), plans.end(), [](const plan::Plan& a, const plan::Plan& b) {
    return a.step_seconds != b.step_seconds ? a.step_seconds < b.step_seconds
                                            : a.gpu_bytes < b.gpu_bytes;
  });
  const bool cuda = ask.request.device == plan::DeviceKind::kCuda;
  nlohmann::json out = {
      {"label", Label(ask.model, finetune ? "fine-tune" : "inference", ask.request.config.NumParameters())},
      {"options", nlohmann::json::array()}};
  for (const plan::Plan& p : plans) {
    out["options"].push_back({{"label", finetune ? "zero " + std::to_string(p.zero) + ", offload " + p.offload
                                                 : "offload " + p.offload},
                              {"zero", p.zero},
                              {"offload", p.offload},
                              // CPU devices have no memory of their own: all of it is the host's.
                              {"device_mib", cuda ? CeilMib(p.gpu_bytes) : 0},
                              {"host_mib", CeilMib(p.host_bytes)},
                              {"gpu_bytes", p.gpu_bytes},
                              {"host_bytes", p.host_bytes},
                              {"step_seconds", p.step_seconds}});
  }
  return out.dump();
}

// The model directory's identity for the cache: its config's and its own modification times and
// the config's size (a weight file added, removed or renamed changes the directory's time).
std::string ModelStamp(const std::string& model) {
  struct stat dir {}, config {};
  if (::stat(model.c_str(), &dir) != 0 || ::stat((model + "/config.json").c_str(), &config) != 0) return "";
  return std::to_string(dir.st_mtim.tv_sec) + "." + std::to_string(dir.st_mtim.tv_nsec) + "/" +
         std::to_string(config.st_mtim.tv_sec) + "." + std::to_string(config.st_mtim.tv_nsec) + "/" +
         std::to_string(config.st_size);
}

// Plans by everything they depend on: a burst of submits of one kind of job reads the model's
// config and plans once; a hit costs two stat calls.
class PlanCache {
 public:
  static PlanCache& Get() {
    static PlanCache cache;
    return cache;
  }
  std::optional<std::string> Find(const std::string& key) {
    std::lock_guard<std::mutex> lock(mu_);
    const auto it = plans_.find(key);
    if (it == plans_.end()) return std::nullopt;
    return it->second;
  }
  void Put(const std::string& key, const std::string& plans) {
    std::lock_guard<std::mutex> lock(mu_);
    if (plans_.size() >= kMaxEntries) plans_.clear();
    plans_[key] = plans;
  }

 private:
  static constexpr size_t kMaxEntries = 1024;
  std::mutex mu_;
  std::unordered_map<std::string, std::string> plans_;
};

std::string CacheKey(store::JobKind kind, const Ask& ask, const std::string& stamp) {
  const plan::PlanRequest& r = ask.request;
  return std::to_string(static_cast<int>(kind)) + "|" + std::to_string(r.gpus) + "|" +
         (ask.zero_auto ? "auto" : std::to_string(ask.zero)) + "|" + (ask.offload_auto ? "auto" : ask.offload) +
         "|" + r.precision + "|" + std::to_string(r.seq_len) + "|" + std::to_string(r.micro_batch) + "|" +
         (r.activation_checkpointing ? "ac" : "") + "|" + (r.device == plan::DeviceKind::kCuda ? "cuda" : "cpu") +
         "|" + stamp + "|" + ask.model;
}

}  // namespace

Result<std::string> PlanJob(store::JobKind kind, const nlohmann::json& spec, int devices) {
  FUJI_ASSIGN_OR_RETURN(Ask ask, AskOf(kind, spec, devices));
  const std::string stamp = ModelStamp(ask.model);
  const std::string key = stamp.empty() ? "" : CacheKey(kind, ask, stamp);
  if (!key.empty()) {
    if (std::optional<std::string> hit = PlanCache::Get().Find(key)) return *hit;
  }
  FUJI_ASSIGN_OR_RETURN(std::string plans, Plan(kind, std::move(ask)));
  if (!key.empty()) PlanCache::Get().Put(key, plans);
  return plans;
}

std::optional<sched::MemoryOption> ReadPlan(const nlohmann::json& o) {
  if (!o.is_object()) return std::nullopt;
  const auto device = o.find("device_mib");
  const auto host = o.find("host_mib");
  if (device == o.end() || host == o.end() || !device->is_number_integer() || !host->is_number_integer()) {
    return std::nullopt;
  }
  sched::MemoryOption option;
  option.device_mib = device->get<int64_t>();
  option.host_mib = host->get<int64_t>();
  if (const auto label = o.find("label"); label != o.end() && label->is_string()) {
    option.label = label->get<std::string>();
  }
  return option;
}

std::optional<sched::MemoryOption> ReadPlan(const std::string& plan_json) {
  if (plan_json.empty()) return std::nullopt;
  return ReadPlan(nlohmann::json::parse(plan_json, nullptr, /*allow_exceptions=*/false));
}

std::shared_ptr<const sched::MemoryPlans> ReadPlans(const std::string& plans_json) {
  if (plans_json.empty()) return nullptr;
  const nlohmann::json j = nlohmann::json::parse(plans_json, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object() || !j.contains("options") || !j["options"].is_array()) return nullptr;
  auto plans = std::make_shared<sched::MemoryPlans>();
  for (const nlohmann::json& o : j["options"]) {
    std::optional<sched::MemoryOption> option = ReadPlan(o);
    if (!option) return nullptr;
    plans->options.push_back(std::move(*option));
  }
  if (plans->options.empty()) return nullptr;
  if (j.contains("label") && j["label"].is_string()) plans->label = j["label"].get<std::string>();
  return plans;
}

std::string PlanAt(const std::string& plans_json, int index) {
  if (plans_json.empty() || index < 0) return "";
  const nlohmann::json j = nlohmann::json::parse(plans_json, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object() || !j.contains("options") || !j["options"].is_array() ||
      static_cast<size_t>(index) >= j["options"].size()) {
    return "";
  }
  return j["options"][static_cast<size_t>(index)].dump();
}

std::string PlansAfterOom(const std::string& plans_json, const std::string& plan_json, bool device) {
  const std::optional<sched::MemoryOption> failed = ReadPlan(plan_json);
  nlohmann::json j = nlohmann::json::parse(plans_json, nullptr, /*allow_exceptions=*/false);
  if (!failed || !j.is_object() || !j.contains("options") || !j["options"].is_array()) return "";
  // A plan that needs none of that memory (a CPU job's GPU memory) says nothing about the others.
  if ((device ? failed->device_mib : failed->host_mib) <= 0) return plans_json;
  nlohmann::json kept = nlohmann::json::array();
  for (const nlohmann::json& o : j["options"]) {
    const std::optional<sched::MemoryOption> option = ReadPlan(o);
    if (!option) return "";
    if (device ? option->device_mib < failed->device_mib : option->host_mib < failed->host_mib) kept.push_back(o);
  }
  if (kept.empty()) return "";
  j["options"] = std::move(kept);
  return j.dump();
}

std::string SpecForPlacement(store::JobKind kind, const std::string& spec_json,
                             const std::string& plan_json) {
  if (plan_json.empty()) return spec_json;
  const nlohmann::json plan = nlohmann::json::parse(plan_json, nullptr, /*allow_exceptions=*/false);
  nlohmann::json spec = nlohmann::json::parse(spec_json, nullptr, /*allow_exceptions=*/false);
  if (!plan.is_object() || !spec.is_object() || !plan.value("zero", nlohmann::json()).is_number_integer() ||
      !plan.value("offload", nlohmann::json()).is_string()) {
    return spec_json;
  }
  return SpecWithPlan(std::move(spec), kind == store::JobKind::kFinetune, plan["zero"].get<int>(),
                      plan["offload"].get<std::string>())
      .dump();
}

}  // namespace fuji::daemon
