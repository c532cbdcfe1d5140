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

#include "lib/plan/plan.h"
#include "lib/plan/spec_plans.h"
#include "lib/spec/plan_fields.h"

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

// Every plan the spec leaves open, fastest first, as the JSON the job row keeps; `named` is the
// model as the spec names it.
Result<std::string> Plan(plan::SpecAsk ask, const std::string& named) {
  FUJI_ASSIGN_OR_RETURN(std::vector<plan::Plan> plans, plan::OpenPlans(&ask));
  const bool cuda = ask.request.device == plan::DeviceKind::kCuda;
  nlohmann::json out = {
      {"label", Label(named, ask.finetune ? "fine-tune" : "inference", ask.request.config.NumParameters())},
      {"options", nlohmann::json::array()},
      // Submit bounds an inference's prompt and new tokens by it (PositionsOfPlans).
      {"positions", ask.request.config.n_positions}};
  for (const plan::Plan& p : plans) {
    nlohmann::json option = {{"label", plan::PlanLabel(ask.finetune, p)},
                             {"zero", p.zero},
                             {"offload", p.offload},
                             // CPU devices have no memory of their own: all of it is the host's.
                             {"device_mib", cuda ? CeilMib(p.gpu_bytes) : 0},
                             {"host_mib", CeilMib(p.host_bytes)},
                             {"gpu_bytes", p.gpu_bytes},
                             {"host_bytes", p.host_bytes},
                             {"step_seconds", p.step_seconds}};
    if (!ask.finetune) {
      // What a warm rank of the model already holds: all but the request's own KV cache and
      // activations, which each request of its batch adds.
      const int64_t memory_mib = CeilMib(cuda ? p.gpu_bytes : p.host_bytes);
      option["weights_mib"] = std::max<int64_t>(0, memory_mib - CeilMib(p.breakdown.request));
    }
    out["options"].push_back(std::move(option));
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

std::string CacheKey(const plan::SpecAsk& ask, const std::string& stamp) {
  const plan::PlanRequest& r = ask.request;
  return std::string(ask.finetune ? "finetune" : "infer") + "|" + std::to_string(r.gpus) + "|" +
         (ask.zero_auto ? "auto" : std::to_string(ask.zero)) + "|" + (ask.offload_auto ? "auto" : ask.offload) +
         "|" + r.precision + "|" + std::to_string(r.seq_len) + "|" + std::to_string(r.micro_batch) + "|" +
         (r.activation_checkpointing ? "ac" : "") + "|" + (r.device == plan::DeviceKind::kCuda ? "cuda" : "cpu") +
         "|" + plan::RatesStamp(r.rates) + "|" + stamp + "|" + ask.model;
}

}  // namespace

Result<std::string> PlanJob(store::JobKind kind, const nlohmann::json& spec, int devices, const NodeRates& rates,
                            const std::string& model_dir) {
  FUJI_ASSIGN_OR_RETURN(plan::SpecAsk ask, plan::AskOfSpec(kind == store::JobKind::kFinetune, spec));
  const std::string named = ask.model;
  if (!model_dir.empty()) ask.model = model_dir;
  ask.request.gpus = devices;
  // The bytes of each plan do not depend on the limits: placement compares them with each agent's.
  if (ask.request.device == plan::DeviceKind::kCuda) ask.request.gpu_memory_bytes = int64_t{1} << 50;
  ask.request.rates = rates.For(ask.request.device == plan::DeviceKind::kCuda);
  const std::string stamp = ModelStamp(ask.model);
  const std::string key = stamp.empty() ? "" : CacheKey(ask, stamp);
  if (!key.empty()) {
    if (std::optional<std::string> hit = PlanCache::Get().Find(key)) return *hit;
  }
  FUJI_ASSIGN_OR_RETURN(std::string plans, Plan(std::move(ask), named));
  if (!key.empty()) PlanCache::Get().Put(key, plans);
  return plans;
}

int64_t PositionsOfPlans(const std::string& plans_json) {
  const nlohmann::json j = nlohmann::json::parse(plans_json, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object()) return 0;
  const auto it = j.find("positions");
  return it != j.end() && it->is_number_integer() ? it->get<int64_t>() : 0;
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
  // Inference options: of device_mib (host_mib on a CPU, where device_mib is 0), at most all of it.
  if (const auto weights = o.find("weights_mib"); weights != o.end()) {
    if (!weights->is_number_integer()) return std::nullopt;
    option.weights_mib = weights->get<int64_t>();
    if (option.weights_mib < 0 ||
        option.weights_mib > (option.device_mib > 0 ? option.device_mib : option.host_mib)) {
      return std::nullopt;
    }
  }
  if (const auto label = o.find("label"); label != o.end() && label->is_string()) {
    option.label = label->get<std::string>();
  }
  return option;
}

std::optional<sched::MemoryOption> ReadPlan(const std::string& plan_json) {
  if (plan_json.empty()) return std::nullopt;
  return ReadPlan(nlohmann::json::parse(plan_json, nullptr, /*allow_exceptions=*/false));
}

namespace {

// Parsed plans by their JSON: the jobs of a burst of one kind of request (one model, one spec's
// shape) share one MemoryPlans, which a scheduling pass recognizes by its address.
class ReadPlansCache {
 public:
  static ReadPlansCache& Get() {
    static ReadPlansCache cache;
    return cache;
  }
  std::shared_ptr<const sched::MemoryPlans> Find(const std::string& json) {
    std::lock_guard<std::mutex> lock(mu_);
    const auto it = plans_.find(json);
    return it == plans_.end() ? nullptr : it->second;
  }
  void Put(const std::string& json, std::shared_ptr<const sched::MemoryPlans> plans) {
    std::lock_guard<std::mutex> lock(mu_);
    if (plans_.size() >= kMaxEntries) plans_.clear();
    plans_[json] = std::move(plans);
  }

 private:
  static constexpr size_t kMaxEntries = 1024;
  std::mutex mu_;
  std::unordered_map<std::string, std::shared_ptr<const sched::MemoryPlans>> plans_;
};

std::shared_ptr<const sched::MemoryPlans> ParsePlans(const std::string& plans_json) {
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

}  // namespace

std::shared_ptr<const sched::MemoryPlans> ReadPlans(const std::string& plans_json) {
  if (plans_json.empty()) return nullptr;
  if (std::shared_ptr<const sched::MemoryPlans> hit = ReadPlansCache::Get().Find(plans_json)) return hit;
  std::shared_ptr<const sched::MemoryPlans> plans = ParsePlans(plans_json);
  if (plans) ReadPlansCache::Get().Put(plans_json, plans);
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
