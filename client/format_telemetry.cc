// Samples, timings, logs and workers as text and JSON.
#include "client/format_telemetry.h"

#include <algorithm>
#include <limits>
#include <map>

#include "client/format_jobs.h"
#include "client/format_text.h"

namespace fuji::client {

std::string SampleCsvHeader() {
  return "timestamp, index, name, memory.used [MiB], memory.total [MiB], utilization.gpu [%]";
}

std::string SampleCsvRow(const v1::MemorySample& s) {
  const bool host = s.host_memory();
  return FormatLocalTime(s.at_ms()) + ", " + std::to_string(host ? -1 : s.device_index()) + ", " +
         (host ? std::string("host memory") : s.device_name()) + ", " + std::to_string(s.used_mib()) + " MiB, " +
         std::to_string(s.total_mib()) + " MiB, " + std::to_string(s.utilization_pct()) + " %";
}

std::string SamplesCsv(const std::vector<v1::MemorySample>& samples) {
  std::string out = SampleCsvHeader() + "\n";
  for (const auto& s : samples) out += SampleCsvRow(s) + "\n";
  return out;
}

nlohmann::json SamplesJson(int64_t job_id, const std::vector<v1::MemorySample>& samples) {
  nlohmann::json list = nlohmann::json::array();
  for (const auto& s : samples) {
    list.push_back({{"at_ms", s.at_ms()},
                    {"worker_id", s.worker_id()},
                    {"device_index", s.host_memory() ? -1 : s.device_index()},
                    {"device_name", s.host_memory() && s.device_name().empty() ? "host memory" : s.device_name()},
                    {"used_mib", s.used_mib()},
                    {"total_mib", s.total_mib()},
                    {"utilization_pct", s.utilization_pct()},
                    {"process_mib", s.process_mib()},
                    {"host_memory", s.host_memory()}});
  }
  return {{"id", job_id}, {"samples", list}};
}

nlohmann::json TimingsJson(const v1::Job& job, const std::vector<v1::Timing>& timings) {
  nlohmann::json j = JobHeadJson(job);
  nlohmann::json list = nlohmann::json::array();
  for (const auto& t : timings) {
    list.push_back({{"attempt", t.attempt()},
                    {"rank", t.rank()},
                    {"phase", t.phase()},
                    {"start_ms", t.start_ms()},
                    {"end_ms", t.end_ms()},
                    {"ms", t.end_ms() - t.start_ms()}});
  }
  j["timings"] = list;
  return j;
}

std::string TimingsTable(const std::vector<v1::Timing>& timings) {
  int64_t origin = std::numeric_limits<int64_t>::max();
  for (const auto& t : timings) origin = std::min(origin, t.start_ms());
  std::vector<std::vector<std::string>> rows;
  for (const auto& t : timings) {
    rows.push_back({std::to_string(t.attempt()), std::to_string(t.rank()), t.phase(),
                    std::to_string(t.start_ms() - origin), std::to_string(t.end_ms() - origin),
                    std::to_string(t.end_ms() - t.start_ms())});
  }
  return RenderTable({"ATTEMPT", "RANK", "PHASE", "START", "END", "MS"}, rows);
}

nlohmann::json LossesJson(int64_t job_id, const std::vector<v1::LossPoint>& points,
                          const std::string& split) {
  nlohmann::json train = nlohmann::json::array(), eval = nlohmann::json::array();
  for (const auto& p : points) {
    (p.split() == "eval" ? eval : train).push_back({{"step", p.step()}, {"loss", p.loss()}});
  }
  nlohmann::json j = {{"id", job_id}};
  if (split != "eval") j["losses"] = train;
  if (split != "train") j["eval_losses"] = eval;
  return j;
}

std::string LossesTable(const std::vector<v1::LossPoint>& points, const std::string& split) {
  struct Row {
    std::string loss = "-", eval = "-", tokens = "-";
  };
  std::map<int64_t, Row> by_step;
  for (const auto& p : points) {
    Row& row = by_step[p.step()];
    if (p.split() == "eval") {
      row.eval = Fixed(p.loss(), 4);
    } else {
      row.loss = Fixed(p.loss(), 4);
      if (p.tokens_per_s() > 0) row.tokens = Fixed(p.tokens_per_s(), 0);
    }
  }
  std::vector<std::vector<std::string>> rows;
  for (const auto& [step, row] : by_step) {
    if (split == "train") rows.push_back({std::to_string(step), row.loss, row.tokens});
    else if (split == "eval") rows.push_back({std::to_string(step), row.eval});
    else rows.push_back({std::to_string(step), row.loss, row.eval, row.tokens});
  }
  if (split == "train") return RenderTable({"STEP", "LOSS", "TOK/S"}, rows);
  if (split == "eval") return RenderTable({"STEP", "EVAL_LOSS"}, rows);
  return RenderTable({"STEP", "LOSS", "EVAL_LOSS", "TOK/S"}, rows);
}

std::string LogLineText(const v1::LogLine& line, bool raw) {
  std::string text = line.stream().empty() ? line.line() : line.stream() + ": " + line.line();
  return raw ? text : EscapeControls(text);
}

namespace {

nlohmann::json WarmJson(const v1::Worker& w) {
  nlohmann::json warm = nlohmann::json::array();
  for (const auto& m : w.warm()) {
    warm.push_back({{"key", m.key()},
                    {"device_index", m.device_index()},
                    {"model", m.model()},
                    {"precision", m.precision()},
                    {"offload", m.offload()},
                    {"mib", m.mib()},
                    {"idle_ms", m.idle_ms()},
                    {"active", m.active()},
                    {"serving_job_id", m.serving_job_id()}});
  }
  return warm;
}

}  // namespace

std::string DrainWord(int64_t drained_at_ms, int running_jobs) {
  if (drained_at_ms <= 0) return "";
  return running_jobs > 0 ? "DRAINING" : "DRAINED";
}

nlohmann::json WorkersJson(const std::vector<v1::Worker>& workers) {
  nlohmann::json list = nlohmann::json::array();
  for (const auto& w : workers) {
    nlohmann::json devices = nlohmann::json::array();
    for (const auto& d : w.devices()) {
      devices.push_back({{"index", d.index()},
                         {"name", d.name()},
                         {"total_mib", d.total_mib()},
                         {"free_mib", d.free_mib()},
                         {"kind", d.kind()}});
    }
    list.push_back({{"id", w.id()},
                    {"host", w.host()},
                    {"state", w.state()},
                    {"drain", DrainWord(w.drained_at_ms(), w.running_jobs_size())},
                    {"last_heartbeat_ms", w.last_heartbeat_ms()},
                    {"devices", devices},
                    {"host_total_mib", w.host_total_mib()},
                    {"host_free_mib", w.host_free_mib()},
                    {"running_jobs", std::vector<int64_t>(w.running_jobs().begin(), w.running_jobs().end())},
                    {"drained_at_ms", w.drained_at_ms()},
                    {"warm", WarmJson(w)}});
  }
  return {{"workers", list}};
}

std::string WorkersTable(const std::vector<v1::Worker>& workers, int64_t now_ms) {
  std::vector<std::vector<std::string>> rows;
  for (const auto& w : workers) {
    // "2x NVIDIA H100 80GB HBM3" per distinct name, in order of first appearance.
    std::vector<std::pair<std::string, int>> counts;
    for (const auto& d : w.devices()) {
      auto it = std::find_if(counts.begin(), counts.end(), [&d](const auto& c) { return c.first == d.name(); });
      if (it == counts.end()) counts.push_back({d.name(), 1});
      else ++it->second;
    }
    std::string devices;
    for (const auto& [name, n] : counts) devices += (devices.empty() ? "" : ", ") + std::to_string(n) + "x " + name;
    std::string jobs;
    for (int64_t id : w.running_jobs()) jobs += (jobs.empty() ? "" : ",") + std::to_string(id);
    // Free memory as the scheduler counts it: per GPU, and the host's.
    std::string free;
    for (const auto& d : w.devices()) {
      if (d.kind() == "cuda" && d.free_mib() >= 0) free += (free.empty() ? "" : " ") + Fixed(d.free_mib() / 1024.0, 1);
    }
    if (!free.empty()) free = "GPU " + free + " GiB";
    if (w.host_free_mib() >= 0) {
      free += (free.empty() ? "" : ", ") + std::string("host ") + Fixed(w.host_free_mib() / 1024.0, 1) + "/" +
              Fixed(w.host_total_mib() / 1024.0, 1) + " GiB";
    }
    rows.push_back({w.id(), w.host(), w.drained_at_ms() > 0 ? w.state() + "," + DrainWord(w.drained_at_ms(), w.running_jobs_size()) : w.state(), FormatAge(w.last_heartbeat_ms(), now_ms),
                    devices.empty() ? "-" : devices, free.empty() ? "-" : free, jobs.empty() ? "-" : jobs});
  }
  std::string out = RenderTable({"ID", "HOST", "STATE", "HEARTBEAT", "DEVICES", "FREE", "JOBS"}, rows);
  // The models agents keep loaded (fuji-agent --keep-warm, fuji serve): per device, with how long
  // each has been idle (an idle one is unloaded after the agent's keep-warm, or for room).
  std::vector<std::vector<std::string>> warm;
  for (const auto& w : workers) {
    for (const auto& m : w.warm()) {
      warm.push_back({w.id(), std::to_string(m.device_index()), m.model(), m.precision(),
                      m.offload() == "none" ? "-" : m.offload(), m.mib() > 0 ? std::to_string(m.mib()) : "-",
                      std::to_string(m.active()),
                      m.active() > 0 ? "-" : FormatAge(now_ms - m.idle_ms(), now_ms + 1),
                      m.serving_job_id() > 0 ? std::to_string(m.serving_job_id()) : "-"});
    }
  }
  if (!warm.empty()) {
    out += "\n" + RenderTable({"WORKER", "DEVICE", "WARM MODEL", "PRECISION", "OFFLOAD", "MIB", "REQUESTS", "IDLE",
                               "SERVING JOB"},
                              warm);
  }
  return out;
}

}  // namespace fuji::client
