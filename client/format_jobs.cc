// Job formatting: names, JSON, table and text.
#include "client/format_jobs.h"

#include <algorithm>
#include <cctype>
#include <cstdio>

#include "client/format_text.h"
#include "lib/plan/plan.h"

namespace fuji::client {
namespace {

constexpr v1::JobState kStates[] = {v1::QUEUED,    v1::ASSIGNED,  v1::RUNNING, v1::SUCCEEDED,
                                    v1::FAILED,    v1::CANCELLED, v1::RETRYING};

nlohmann::json ParsedSpec(const std::string& spec_json) {
  if (spec_json.empty()) return nlohmann::json::object();
  nlohmann::json j = nlohmann::json::parse(spec_json, nullptr, false);
  return j.is_discarded() ? nlohmann::json(spec_json) : j;
}

std::string TimeAndAge(int64_t ms, int64_t now_ms) {
  if (ms <= 0) return "-";
  return FormatLocalTime(ms) + " (" + FormatAge(ms, now_ms) + " ago)";
}

}  // namespace

std::string JobStateName(v1::JobState state) {
  switch (state) {
    case v1::QUEUED: return "QUEUED";
    case v1::ASSIGNED: return "ASSIGNED";
    case v1::RUNNING: return "RUNNING";
    case v1::SUCCEEDED: return "SUCCEEDED";
    case v1::FAILED: return "FAILED";
    case v1::CANCELLED: return "CANCELLED";
    case v1::RETRYING: return "RETRYING";
    default: return "UNSPECIFIED";
  }
}

Result<v1::JobState> ParseJobState(const std::string& name) {
  std::string upper = name;
  std::transform(upper.begin(), upper.end(), upper.begin(), [](unsigned char c) { return std::toupper(c); });
  std::string names;
  for (v1::JobState s : kStates) {
    if (upper == JobStateName(s)) return s;
    names += (names.empty() ? "" : ", ") + JobStateName(s);
  }
  return InvalidArgument("unknown job state '" + name + "': one of " + names);
}

bool IsTerminal(v1::JobState state) {
  return state == v1::SUCCEEDED || state == v1::FAILED || state == v1::CANCELLED;
}

nlohmann::json JobHeadJson(const v1::Job& job) {
  return {{"id", job.id()}, {"state", JobStateName(job.state())}, {"kind", job.kind()},
          {"attempts", job.attempts()}, {"reason", job.reason()}};
}

// "node-a ranks 0-1 (devices 0,1), node-b ranks 2-3 (devices 0,1)": a gang across agents.
std::string GangText(const v1::Job& job) {
  std::string text;
  for (const v1::GangMember& member : job.gang()) {
    if (!text.empty()) text += ", ";
    const int last = member.first_rank() + std::max(1, member.ranks()) - 1;
    text += member.worker_id() + (member.ranks() == 1 ? " rank " + std::to_string(member.first_rank())
                                                      : " ranks " + std::to_string(member.first_rank()) + "-" +
                                                            std::to_string(last));
    std::string devices;
    for (int index : member.device_indices()) devices += (devices.empty() ? "" : ",") + std::to_string(index);
    text += " (device" + std::string(member.device_indices_size() == 1 ? " " : "s ") + devices + ")";
  }
  return text;
}

nlohmann::json JobToJson(const v1::Job& job) {
  nlohmann::json j = JobHeadJson(job);
  j["owner"] = job.owner();
  j["priority"] = job.priority();
  j["max_attempts"] = job.max_attempts();
  j["worker_id"] = job.worker_id();
  j["devices"] = job.devices();
  j["device_kind"] = job.device_kind();
  j["timeout_ms"] = job.timeout_ms();
  j["submitted_at_ms"] = job.submitted_at_ms();
  j["started_at_ms"] = job.started_at_ms();
  j["finished_at_ms"] = job.finished_at_ms();
  j["spec"] = ParsedSpec(job.spec_json());
  j["shareable"] = job.shareable();
  j["plan"] = job.plan_json().empty() ? nlohmann::json() : ParsedSpec(job.plan_json());
  if (job.gang_size() > 0) {
    nlohmann::json gang = nlohmann::json::array();
    for (const v1::GangMember& member : job.gang()) {
      gang.push_back({{"worker_id", member.worker_id()},
                      {"advertise_addr", member.advertise_addr()},
                      {"first_rank", member.first_rank()},
                      {"ranks", member.ranks()},
                      {"device_indices", std::vector<int>(member.device_indices().begin(), member.device_indices().end())}});
    }
    j["gang"] = std::move(gang);
  }
  if (!job.progress().phase().empty()) {
    const v1::Progress& p = job.progress();
    j["progress"] = {{"phase", p.phase()},   {"done", p.done()},
                     {"total", p.total()},   {"loss", p.loss()},
                     {"tokens_per_s", p.tokens_per_s()}, {"at_ms", p.at_ms()},
                     {"corpus_tokens", p.corpus_tokens()}};
  }
  if (!job.last_loss().split().empty()) {
    j["last_loss"] = {{"step", job.last_loss().step()}, {"loss", job.last_loss().loss()}};
  }
  if (nlohmann::json estimate = RunningTrainEstimate(job); !estimate.is_null()) j["estimate"] = std::move(estimate);
  return j;
}

nlohmann::json JobResultJson(const v1::Job& job, const nlohmann::json& result) {
  nlohmann::json j = JobHeadJson(job);
  j["result"] = result;
  return j;
}

std::string JobsTable(const std::vector<v1::Job>& jobs, int64_t now_ms, bool with_owner) {
  std::vector<std::vector<std::string>> rows;
  for (const auto& job : jobs) {
    std::string attempts = std::to_string(job.attempts());
    if (job.max_attempts() > 0) attempts += "/" + std::to_string(job.max_attempts());
    rows.push_back({std::to_string(job.id()), JobStateName(job.state()), job.kind(), std::to_string(job.priority()),
                    attempts, FormatAge(job.submitted_at_ms(), now_ms), job.reason()});
    if (with_owner) rows.back().insert(rows.back().begin() + 1, job.owner().empty() ? "-" : job.owner());
  }
  std::vector<std::string> header = {"ID", "STATE", "KIND", "PRIO", "ATTEMPTS", "AGE", "REASON"};
  if (with_owner) header.insert(header.begin() + 1, "OWNER");
  return RenderTable(header, rows);
}

std::string PlanText(const std::string& plan_json) {
  if (plan_json.empty()) return "- (chosen when it is placed)";
  const nlohmann::json p = ParsedSpec(plan_json);
  if (!p.is_object()) return plan_json;
  const auto gib = [](const nlohmann::json& bytes) {
    return Fixed((bytes.is_number() ? bytes.get<double>() : 0.0) / (1024.0 * 1024 * 1024), 1) + " GiB";
  };
  std::string text = p.value("label", std::string("?")) + " (predicted ";
  if (p.value("device_mib", int64_t{0}) > 0) text += gib(p.value("gpu_bytes", nlohmann::json(0))) + " per device, ";
  text += gib(p.value("host_bytes", nlohmann::json(0))) + " of host memory";
  const nlohmann::json step = p.value("step_seconds", nlohmann::json(0));
  if (step.is_number() && step.get<double>() > 0) text += ", " + Fixed(step.get<double>(), 3) + " s per step";
  return text + ")";
}

std::string JobText(const v1::Job& job, int64_t now_ms) {
  std::vector<std::vector<std::string>> rows = {
      {"id:", std::to_string(job.id())},
      {"state:", JobStateName(job.state())},
      {"kind:", job.kind()},
      {"owner:", job.owner().empty() ? "-" : job.owner()},
      {"reason:", job.reason().empty() ? "-" : job.reason()},
      {"priority:", std::to_string(job.priority())},
      {"attempts:", std::to_string(job.attempts()) + " of at most " + std::to_string(job.max_attempts())},
      {"worker:", job.worker_id().empty() ? "-" : job.worker_id()},
      {"devices:", std::to_string(job.devices()) + " " + job.device_kind() + (job.shareable() ? ", shareable" : "")},
      {"plan:", PlanText(job.plan_json())},
  };
  if (job.gang_size() > 0) rows.push_back({"gang:", GangText(job)});
  std::vector<std::vector<std::string>> times = {
      {"timeout:", job.timeout_ms() > 0 ? std::to_string(job.timeout_ms()) + " ms" : "none"},
      {"submitted:", TimeAndAge(job.submitted_at_ms(), now_ms)},
      {"started:", TimeAndAge(job.started_at_ms(), now_ms)},
      {"finished:", TimeAndAge(job.finished_at_ms(), now_ms)},
  };
  rows.insert(rows.end(), times.begin(), times.end());
  const v1::Progress& p = job.progress();
  if (p.phase() == "train") {
    rows.push_back({"progress:", TrainProgressText(p, EtaMs(0, job.started_at_ms(), p.done(), p.at_ms(), p.total()))});
  } else if (!p.phase().empty()) {
    rows.push_back({"progress:", p.phase() + " " + std::to_string(p.done()) + "/" + std::to_string(p.total())});
  }
  if (nlohmann::json estimate = RunningTrainEstimate(job); !estimate.is_null()) {
    rows.push_back({"time to train:", TrainEstimateText(estimate)});
  }
  if (!job.last_loss().split().empty()) {
    rows.push_back({"last loss:", "step " + std::to_string(job.last_loss().step()) + "  loss " +
                                      Fixed(job.last_loss().loss(), 4)});
  }
  std::string out;
  for (const auto& r : rows) out += r[0] + std::string(r[0].size() < 12 ? 12 - r[0].size() : 1, ' ') + r[1] + "\n";
  out += "spec:       " + ParsedSpec(job.spec_json()).dump(2, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
  return out;
}

int64_t EtaMs(int64_t done_then, int64_t then_ms, int64_t done, int64_t at_ms, int64_t total) {
  if (then_ms <= 0 || at_ms <= then_ms || done <= done_then || total <= 0) return -1;
  if (done >= total) return 0;
  const double ms_per_step = static_cast<double>(at_ms - then_ms) / static_cast<double>(done - done_then);
  return static_cast<int64_t>(ms_per_step * static_cast<double>(total - done) + 0.5);
}

nlohmann::json RunningTrainEstimate(const v1::Job& job) {
  const v1::Progress& p = job.progress();
  if (job.state() != v1::RUNNING || job.kind() != "finetune" || p.phase() != "train") return nullptr;
  const double corpus = static_cast<double>(p.corpus_tokens());
  Result<plan::TrainingEstimate> e = plan::EstimateTraining(p.tokens_per_s(), corpus, 1);
  if (!e.ok()) return nullptr;  // no rate yet, or an agent that does not report the corpus
  return {{"corpus_tokens", p.corpus_tokens()}, {"tokens_per_s", p.tokens_per_s()}, {"epochs", 1},
          {"ranks", job.devices()}, {"seconds", e->seconds}, {"duration", plan::FormatDuration(e->seconds)}};
}

std::string TrainEstimateText(const nlohmann::json& e) {
  const double epochs = e.value("epochs", 1.0);
  char count[32];
  std::snprintf(count, sizeof count, "%g", epochs);
  const int64_t ranks = e.value("ranks", int64_t{0});
  return std::string(count) + (epochs == 1 ? " epoch" : " epochs") + " of " +
         Grouped(e.value("corpus_tokens", 0.0)) + " tokens at " + Grouped(e.value("tokens_per_s", 0.0)) + " tok/s on " +
         std::to_string(ranks) + (ranks == 1 ? " rank: " : " ranks: ") + e.value("duration", "");
}

std::string TrainProgressText(const v1::Progress& p, int64_t eta_ms) {
  std::string out = "step " + std::to_string(p.done()) + "/" + std::to_string(p.total());
  if (p.loss() != 0) out += "  loss " + Fixed(p.loss(), 4);
  if (p.tokens_per_s() > 0) out += "  " + Fixed(p.tokens_per_s(), 0) + " tok/s";
  if (eta_ms >= 0) out += "  ETA " + FormatEta(eta_ms);
  return out;
}

std::string JobOutcome(const v1::Job& job) {
  std::string s = "job " + std::to_string(job.id()) + " " + JobStateName(job.state());
  if (!job.reason().empty()) s += ": " + job.reason();
  return s;
}

}  // namespace fuji::client
