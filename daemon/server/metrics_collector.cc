// MetricsCollector; see metrics_collector.h.
#include "daemon/server/metrics_collector.h"

#include <filesystem>
#include <map>
#include <set>
#include <vector>

#include <nlohmann/json.hpp>

#include "daemon/store/job_state.h"

namespace fuji::daemon {
namespace {

constexpr double kMiB = 1024.0 * 1024.0;
const std::vector<store::JobKind> kKinds = {store::JobKind::kInfer, store::JobKind::kFinetune};
const std::vector<store::JobState> kStates = {
    store::JobState::kQueued,    store::JobState::kAssigned, store::JobState::kRunning,
    store::JobState::kSucceeded, store::JobState::kFailed,   store::JobState::kCancelled,
    store::JobState::kRetrying};

// The spec's "model", "" when it names none.
std::string ModelOf(const std::string& spec) {
  nlohmann::json parsed = nlohmann::json::parse(spec, nullptr, /*allow_exceptions=*/false);
  if (!parsed.is_object()) return "";
  auto it = parsed.find("model");
  return it != parsed.end() && it->is_string() ? it->get<std::string>() : "";
}

}  // namespace

void DefineDaemonMetrics(metrics::Registry& r) {
  using metrics::Type;
  r.Define("fuji_jobs", Type::kGauge, "Jobs by kind and state.", {"kind", "state"});
  r.Define("fuji_jobs_counted_partial", Type::kGauge,
           "1 when fuji_jobs counted only the newest jobs.", {});
  r.Define("fuji_job_submits_total", Type::kCounter, "Jobs submitted.", {"kind"});
  r.Define("fuji_job_transitions_total", Type::kCounter, "Job state changes.", {"from", "to"});
  r.Define("fuji_job_queue_wait_seconds", Type::kHistogram, "From submit to the start of a run.",
           {"kind"}, metrics::DurationBuckets());
  r.Define("fuji_job_run_seconds", Type::kHistogram, "From the start of a run to its end.",
           {"kind"}, metrics::DurationBuckets());
  r.Define("fuji_agent_up", Type::kGauge, "1 while the agent is connected.", {"agent"});
  r.Define("fuji_agent_devices", Type::kGauge, "Devices the agent registered.", {"agent"});
  r.Define("fuji_agent_free_memory_bytes", Type::kGauge,
           "Device memory the scheduler counts as free on the agent (fuji workers' free).",
           {"agent"});
  r.Define("fuji_device_memory_used_bytes", Type::kGauge,
           "The latest sample's used memory of a device.", {"agent", "device"});
  r.Define("fuji_device_utilization_ratio", Type::kGauge,
           "A device's utilization in its latest sample (0 to 1).", {"agent", "device"});
  r.Define("fuji_device_memory_total_bytes", Type::kGauge, "A device's memory.",
           {"agent", "device"});
  r.Define("fuji_job_tokens_per_second", Type::kGauge, "A running job's latest tokens per second.",
           {"job", "kind", "model"}, {}, kMaxScrapedRunningJobs);
  r.Define("fuji_job_step", Type::kGauge, "A running job's latest step done.",
           {"job", "kind", "model"}, {}, kMaxScrapedRunningJobs);
  r.Define("fuji_job_loss", Type::kGauge, "A running job's latest train loss.",
           {"job", "kind", "model"}, {}, kMaxScrapedRunningJobs);
  r.Define("fuji_rpc_requests_total", Type::kCounter, "gRPC calls fujid answered.",
           {"method", "code"}, {}, 2000);
  r.Define("fuji_store_commit_seconds", Type::kHistogram,
           "One group commit of the store: its batch and COMMIT.", {}, metrics::LatencyBuckets());
  r.Define("fuji_scheduler_pass_seconds", Type::kHistogram, "One scheduling pass.", {},
           metrics::LatencyBuckets());
  r.Define("fuji_database_bytes", Type::kGauge, "The database file's size (with its WAL).", {});
  r.Define("fuji_store_writable", Type::kGauge,
           "1 while the database commits; 0 after a storage fault.", {});
}

MetricsCollector::MetricsCollector(store::JobStore* store, Dispatcher* dispatcher,
                                   metrics::Registry* registry)
    : store_(store), dispatcher_(dispatcher), registry_(registry) {}

std::string MetricsCollector::Scrape() {
  std::lock_guard<std::mutex> lock(mu_);
  CollectJobs();
  CollectAgents();
  std::error_code ec;
  uintmax_t bytes = std::filesystem::file_size(store_->path(), ec);
  if (ec) bytes = 0;
  const uintmax_t wal = std::filesystem::file_size(store_->path() + "-wal", ec);
  if (!ec) bytes += wal;
  registry_->Set("fuji_database_bytes", {}, static_cast<double>(bytes));
  registry_->Set("fuji_store_writable", {}, store_->StorageFault().empty() ? 1 : 0);
  return registry_->Text();
}

void MetricsCollector::CollectJobs() {
  std::map<std::pair<store::JobKind, store::JobState>, int64_t> counts;
  std::vector<store::JobRecord> running;
  store::ListFilter filter;
  filter.limit = 1000;
  int read = 0;
  bool partial = false;
  while (true) {
    Result<store::JobPage> page = store_->List(filter);
    if (!page.ok()) return;  // the previous scrape's counts stay
    for (const store::JobRecord& job : page->jobs) {
      ++counts[{job.kind, job.state}];
      if (job.state == store::JobState::kRunning && running.size() < kMaxScrapedRunningJobs)
        running.push_back(job);
    }
    read += static_cast<int>(page->jobs.size());
    if (page->next_page_token == 0) break;
    if (read >= kMaxScrapedJobs) {
      partial = true;
      break;
    }
    filter.page_token = page->next_page_token;
  }
  for (store::JobKind kind : kKinds) {
    for (store::JobState state : kStates) {
      registry_->Set("fuji_jobs", {store::JobKindName(kind), store::JobStateName(state)},
                     static_cast<double>(counts[{kind, state}]));
    }
  }
  registry_->Set("fuji_jobs_counted_partial", {}, partial ? 1 : 0);
  for (const char* name : {"fuji_job_tokens_per_second", "fuji_job_step", "fuji_job_loss"})
    registry_->Clear(name);
  for (const store::JobRecord& job : running) {
    Result<store::JobRecord> whole = store_->Get(job.id);
    const std::vector<std::string> labels = {std::to_string(job.id), store::JobKindName(job.kind),
                                             whole.ok() ? ModelOf(whole->spec) : ""};
    const v1::Progress progress = dispatcher_->LatestProgress(job.id);
    registry_->Set("fuji_job_tokens_per_second", labels, progress.tokens_per_s());
    registry_->Set("fuji_job_step", labels, static_cast<double>(progress.done()));
    if (job.kind == store::JobKind::kFinetune)
      registry_->Set("fuji_job_loss", labels, progress.loss());
  }
}

void MetricsCollector::CollectAgents() {
  Result<std::vector<store::WorkerRecord>> workers = store_->ListWorkers();
  Result<std::vector<sched::AgentView>> agents = dispatcher_->CurrentAgents();
  if (!workers.ok() || !agents.ok()) return;
  std::map<std::string, const sched::AgentView*> views;
  for (const sched::AgentView& agent : *agents) views[agent.worker_id] = &agent;
  for (const char* name : {"fuji_agent_up", "fuji_agent_devices", "fuji_agent_free_memory_bytes",
                           "fuji_device_memory_used_bytes", "fuji_device_memory_total_bytes"}) {
    registry_->Clear(name);
  }
  // Utilization comes with each sample (SamplesOf); here only the devices that left are dropped.
  std::set<std::vector<std::string>> online;
  for (const store::WorkerRecord& worker : *workers) {
    if (worker.state != "ONLINE") continue;
    for (const store::DeviceRecord& d : worker.devices)
      online.insert({worker.id, std::to_string(d.index)});
  }
  for (const std::vector<std::string>& labels :
       registry_->SeriesOf("fuji_device_utilization_ratio")) {
    if (!online.count(labels)) registry_->Remove("fuji_device_utilization_ratio", labels);
  }
  for (const store::WorkerRecord& worker : *workers) {
    const sched::AgentView* view = views.count(worker.id) ? views[worker.id] : nullptr;
    registry_->Set("fuji_agent_up", {worker.id}, view != nullptr && view->connected ? 1 : 0);
    registry_->Set("fuji_agent_devices", {worker.id}, static_cast<double>(worker.devices.size()));
    int64_t free_mib = 0;
    bool known = false;
    for (const store::DeviceRecord& d : worker.devices) {
      const std::vector<std::string> labels = {worker.id, std::to_string(d.index)};
      registry_->Set("fuji_device_memory_total_bytes", labels,
                     static_cast<double>(d.total_mib) * kMiB);
      // A CPU device's memory is the host's: its latest host sample.
      const std::optional<store::MemoryReading>& reading =
          d.reading || d.kind != "cpu" ? d.reading : worker.host_memory;
      if (reading) {
        registry_->Set("fuji_device_memory_used_bytes", labels,
                       static_cast<double>(reading->used_mib) * kMiB);
      }
      // As ListWorkers says it: free only once the device or the host was sampled.
      if (view != nullptr && (d.reading || worker.host_memory)) {
        for (const sched::DeviceView& dv : view->devices) {
          if (dv.index == d.index) {
            free_mib += dv.free_mib;
            known = true;
          }
        }
      }
    }
    if (known)
      registry_->Set("fuji_agent_free_memory_bytes", {worker.id},
                     static_cast<double>(free_mib) * kMiB);
  }
}

}  // namespace fuji::daemon
