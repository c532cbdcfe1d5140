// Dashboard: the JSON the job page's charts and live updates read; see dashboard.h.
#include <cstring>

#include <nlohmann/json.hpp>

#include "daemon/http/dashboard.h"
#include "daemon/http/dashboard_html.h"

namespace fuji::http {
namespace {

using nlohmann::json;

// A job's losses are read a GetLosses page at a time; a chart needs no more points than this.
constexpr int kLossPage = 10000;
constexpr int kMaxLossPoints = 200000;

std::string Dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

// "ID" or "ID/what" under /ui/api/jobs/; false when it does not parse.
bool ParseJobPath(const std::string& rest, int64_t* id, std::string* what) {
  const size_t slash = rest.find('/');
  const std::string id_text = rest.substr(0, slash);
  *what = slash == std::string::npos ? "" : rest.substr(slash + 1);
  if (id_text.empty() || id_text.size() > 18 || id_text.find_first_not_of("0123456789") != std::string::npos) {
    return false;
  }
  *id = std::stoll(id_text);
  return *id > 0;
}

}  // namespace

void Dashboard::SendJson(HttpResponder& out, int status, const std::string& body) const {
  out.Send(status, "application/json", body, dashboard::Headers());
}

void Dashboard::ApiError(HttpResponder& out, const grpc::Status& status) const {
  int code = 503;
  switch (status.error_code()) {
    case grpc::StatusCode::UNAUTHENTICATED: code = 401; break;
    case grpc::StatusCode::PERMISSION_DENIED: code = 403; break;
    case grpc::StatusCode::NOT_FOUND: code = 404; break;
    case grpc::StatusCode::INVALID_ARGUMENT:
    case grpc::StatusCode::OUT_OF_RANGE: code = 400; break;
    default: break;
  }
  SendJson(out, code, Dump(json{{"error", status.error_message()}}));
}

void Dashboard::Api(const HttpRequest& request, const std::string& path, HttpResponder& out) const {
  const std::string token = dashboard::CookieValue(request.cookie, "fuji_token");
  if (!dashboard::CookieSafe(token)) {
    return SendJson(out, 401, Dump(json{{"error", "log in first (/ui/login)"}}));
  }
  int64_t id = 0;
  std::string what;
  if (path.rfind("jobs/", 0) != 0 || !ParseJobPath(path.substr(std::strlen("jobs/")), &id, &what)) {
    return SendJson(out, 404, Dump(json{{"error", "no such API"}}));
  }
  v1::JobRef ref;
  ref.set_id(id);
  if (what.empty()) {
    // The live page's poll: the job's state and progress, and its history.
    v1::GetJobRequest get;
    get.set_id(id);
    v1::Job job;
    grpc::Status status = jobs_->GetJob(Context(token).get(), get, &job);
    if (!status.ok()) return ApiError(out, status);
    v1::HistoryResponse history;
    status = jobs_->GetHistory(Context(token).get(), ref, &history);
    if (!status.ok()) return ApiError(out, status);
    const v1::JobState s = job.state();
    json j = {{"id", job.id()},
              {"kind", job.kind()},
              {"state", v1::JobState_IsValid(s) ? v1::JobState_Name(s) : "UNKNOWN"},
              {"ended", s == v1::SUCCEEDED || s == v1::FAILED || s == v1::CANCELLED},
              {"reason", job.reason()},
              {"started_at_ms", job.started_at_ms()},
              {"finished_at_ms", job.finished_at_ms()},
              {"history", json::array()}};
    if (job.has_progress()) {
      j["progress"] = {{"phase", job.progress().phase()},
                       {"done", job.progress().done()},
                       {"total", job.progress().total()},
                       {"loss", job.progress().loss()}};
    }
    for (const v1::StateChange& c : history.changes()) {
      j["history"].push_back({{"seq", c.seq()},
                              {"at_ms", c.at_ms()},
                              {"from", c.from_state()},
                              {"to", c.to_state()},
                              {"message", c.message()}});
    }
    return SendJson(out, 200, Dump(j));
  }
  if (what == "samples") {
    v1::SamplesResponse samples;
    grpc::Status status = jobs_->GetSamples(Context(token).get(), ref, &samples);
    if (!status.ok()) return ApiError(out, status);
    json rows = json::array();
    for (const v1::MemorySample& s : samples.samples()) {
      rows.push_back({{"at_ms", s.at_ms()},
                      {"worker_id", s.worker_id()},
                      {"device_index", s.device_index()},
                      {"device_name", s.device_name()},
                      {"used_mib", s.used_mib()},
                      {"total_mib", s.total_mib()},
                      {"utilization_pct", s.utilization_pct()},
                      {"process_mib", s.process_mib()},
                      {"host_memory", s.host_memory()}});
    }
    return SendJson(out, 200, Dump(json{{"samples", std::move(rows)}}));
  }
  if (what == "losses") {
    json rows = json::array();
    v1::GetLossesRequest page;
    page.set_job_id(id);
    page.set_limit(kLossPage);
    bool truncated = false;
    for (;;) {
      v1::GetLossesResponse losses;
      grpc::Status status = jobs_->GetLosses(Context(token).get(), page, &losses);
      if (!status.ok()) return ApiError(out, status);
      for (const v1::LossPoint& p : losses.losses()) {
        rows.push_back({{"step", p.step()},
                        {"loss", p.loss()},
                        {"split", p.split()},
                        {"attempt", p.attempt()},
                        {"at_ms", p.at_ms()}});
      }
      if (!losses.more() || losses.losses_size() == 0) break;
      if (rows.size() >= static_cast<size_t>(kMaxLossPoints)) {
        truncated = true;
        break;
      }
      page.set_after_step(losses.losses(losses.losses_size() - 1).step());
    }
    return SendJson(out, 200, Dump(json{{"losses", std::move(rows)}, {"truncated", truncated}}));
  }
  SendJson(out, 404, Dump(json{{"error", "no such API"}}));
}

}  // namespace fuji::http
