// Dashboard: the server-rendered pages (jobs, a job, workers); see dashboard.h. Each page is one
// string built from escaped pieces: the first screen needs no script, and --dump-dom sees it.
#include <algorithm>
#include <iterator>

#include <nlohmann/json.hpp>

#include "daemon/http/dashboard.h"
#include "daemon/http/dashboard_html.h"

namespace fuji::http {

using dashboard::Duration;
using dashboard::Escape;
using dashboard::Time;

namespace {

constexpr const char* kStates[] = {"QUEUED", "ASSIGNED", "RUNNING", "SUCCEEDED",
                                   "FAILED", "CANCELLED", "RETRYING"};
constexpr const char* kKinds[] = {"infer", "finetune"};
constexpr size_t kMaxOwnerBytes = 64;

std::string Cell(const std::string& text, const char* cls = nullptr) {
  return cls == nullptr ? "<td>" + Escape(text) + "</td>"
                        : std::string("<td class=\"") + cls + "\">" + Escape(text) + "</td>";
}

std::string Row(const std::string& name, const std::string& value, const char* id = nullptr) {
  std::string row = "<tr><th>" + Escape(name) + "</th><td";
  if (id != nullptr) row += std::string(" id=\"") + id + "\"";
  return row + ">" + Escape(value) + "</td></tr>";
}

std::string StateName(v1::JobState state) {
  return v1::JobState_IsValid(state) ? v1::JobState_Name(state) : "UNKNOWN";
}

bool Ended(v1::JobState state) {
  return state == v1::SUCCEEDED || state == v1::FAILED || state == v1::CANCELLED;
}

// A JSON text indented for reading; as given when it does not parse.
std::string Pretty(const std::string& text) {
  if (text.empty()) return "";
  nlohmann::json j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return text;
  return j.dump(2, ' ', false, nlohmann::json::error_handler_t::replace);
}

std::string Select(const char* name, const char* const* options, size_t n, const std::string& chosen) {
  std::string html = std::string("<select name=\"") + name + "\" id=\"filter-" + name +
                     "\"><option value=\"\">any</option>";
  for (size_t i = 0; i < n; ++i) {
    html += std::string("<option") + (chosen == options[i] ? " selected" : "") + ">" + options[i] + "</option>";
  }
  return html + "</select>";
}

std::string Mib(int64_t mib) { return mib < 0 ? "unknown" : std::to_string(mib) + " MiB"; }

}  // namespace

std::string Dashboard::Frame(const std::string& title, const Viewer* viewer, const std::string& body,
                             bool charts) const {
  std::string html =
      "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">"
      "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
      "<title>" + Escape(title) + " - fuji</title>"
      "<link rel=\"stylesheet\" href=\"" + dashboard::StaticUrl("app.css") + "\">";
  if (charts) html += "<link rel=\"stylesheet\" href=\"" + dashboard::StaticUrl("uPlot.min.css") + "\">";
  html += "</head><body><header><span class=\"brand\">fuji</span>";
  if (viewer != nullptr) {
    html += "<nav><a href=\"/ui/\">Jobs</a><a href=\"/ui/workers\">Workers</a></nav>"
            "<span class=\"who\" id=\"who\">" + Escape(viewer->user) + (viewer->admin ? " (admin)" : "") +
            "</span><form method=\"post\" action=\"/ui/logout\"><button type=\"submit\" id=\"logout\">"
            "Log out</button></form>";
  }
  html += "</header><main>" + body + "</main>";
  if (charts) html += "<script src=\"" + dashboard::StaticUrl("uPlot.iife.min.js") + "\"></script>";
  html += "<script src=\"" + dashboard::StaticUrl("app.js") + "\"></script></body></html>";
  return html;
}

void Dashboard::JobsPage(const Viewer& viewer, const Query& query, HttpResponder& out) const {
  auto param = [&](const char* name) {
    auto it = query.find(name);
    return it == query.end() ? std::string() : it->second;
  };
  v1::ListJobsRequest request;
  const std::string state = param("state"), kind = param("kind"), owner = param("owner"), page = param("page");
  bool valid = owner.size() <= kMaxOwnerBytes;
  if (!state.empty()) valid = valid && std::find(std::begin(kStates), std::end(kStates), state) != std::end(kStates);
  if (!kind.empty()) valid = valid && std::find(std::begin(kKinds), std::end(kKinds), kind) != std::end(kKinds);
  int64_t page_token = 0;
  if (!page.empty()) {
    valid = valid && page.size() <= 18 && page.find_first_not_of("0123456789") == std::string::npos;
    if (valid) page_token = std::stoll(page);
  }
  if (!valid) {
    return SendPage(out, 400, Frame("Bad request", &viewer, "<p>Filters: state is a job state, kind infer or "
                                                            "finetune, owner a user name, page a page token.</p>"));
  }
  if (!owner.empty() && !viewer.admin) {
    return SendPage(out, 403, Frame("Forbidden", &viewer, "<p>Only admins list another user's jobs.</p>"));
  }
  request.set_state(state);
  request.set_kind(kind);
  request.set_owner(owner);
  request.set_all(viewer.admin);  // admins see everyone's jobs
  request.set_limit(options_.jobs_page_size);
  request.set_page_token(page_token);
  v1::ListJobsResponse response;
  grpc::Status status = jobs_->ListJobs(Context(viewer.token).get(), request, &response);
  if (!status.ok()) return PageError(&viewer, status, out);

  std::string body = "<h1>Jobs</h1><form class=\"filters\" method=\"get\" action=\"/ui/\">"
                     "<label>State " + Select("state", kStates, std::size(kStates), state) + "</label>"
                     "<label>Kind " + Select("kind", kKinds, std::size(kKinds), kind) + "</label>";
  if (viewer.admin) {
    body += "<label>Owner <input name=\"owner\" id=\"filter-owner\" maxlength=\"64\" value=\"" + Escape(owner) +
            "\"></label>";
  }
  body += "<button type=\"submit\">Filter</button></form>";
  body += "<table id=\"jobs\"><thead><tr><th>ID</th><th>Kind</th><th>State</th><th>Owner</th><th>Priority</th>"
          "<th>Devices</th><th>Worker</th><th>Submitted</th><th>Started</th><th>Finished</th><th>Reason</th>"
          "</tr></thead><tbody>";
  body.reserve(body.size() + response.jobs_size() * 512);
  for (const v1::Job& job : response.jobs()) {
    const std::string id = std::to_string(job.id());
    body += "<tr data-id=\"" + id + "\"><td><a href=\"/ui/jobs/" + id + "\">" + id + "</a></td>" + Cell(job.kind()) +
            "<td class=\"state " + StateName(job.state()) + "\">" + StateName(job.state()) + "</td>" +
            Cell(job.owner()) + Cell(std::to_string(job.priority())) +
            Cell(std::to_string(job.devices()) + " " + job.device_kind()) + Cell(job.worker_id()) +
            Cell(Time(job.submitted_at_ms())) + Cell(Time(job.started_at_ms())) + Cell(Time(job.finished_at_ms())) +
            Cell(job.reason(), "reason") + "</tr>";
  }
  body += "</tbody></table>";
  if (response.jobs_size() == 0) body += "<p class=\"empty\">No jobs.</p>";
  body += "<nav class=\"pages\">";
  if (page_token != 0) body += "<a href=\"/ui/?state=" + state + "&amp;kind=" + kind + "&amp;owner=" +
                               dashboard::UrlEncode(owner) + "\" id=\"first-page\">First page</a>";
  if (response.next_page_token() != 0) {
    body += "<a href=\"/ui/?state=" + state + "&amp;kind=" + kind + "&amp;owner=" + dashboard::UrlEncode(owner) +
            "&amp;page=" + std::to_string(response.next_page_token()) + "\" id=\"next-page\">Next page</a>";
  }
  body += "</nav>";
  SendPage(out, 200, Frame("Jobs", &viewer, body));
}

void Dashboard::JobPage(const Viewer& viewer, int64_t id, HttpResponder& out) const {
  v1::GetJobRequest get;
  get.set_id(id);
  v1::Job job;
  grpc::Status status = jobs_->GetJob(Context(viewer.token).get(), get, &job);
  if (!status.ok()) return PageError(&viewer, status, out);
  v1::JobRef ref;
  ref.set_id(id);
  v1::HistoryResponse history;
  status = jobs_->GetHistory(Context(viewer.token).get(), ref, &history);
  if (!status.ok()) return PageError(&viewer, status, out);
  v1::TimingsResponse timings;
  status = jobs_->GetTimings(Context(viewer.token).get(), ref, &timings);
  if (!status.ok()) return PageError(&viewer, status, out);

  const std::string id_text = std::to_string(id);
  const bool ended = Ended(job.state());
  std::string body = "<article id=\"job\" data-id=\"" + id_text + "\" data-live=\"" + (ended ? "0" : "1") +
                     "\" data-kind=\"" + Escape(job.kind()) + "\"><h1>Job " + id_text + "</h1>";
  // ---- Summary ----
  const int64_t end_ms = job.finished_at_ms();
  body += "<table class=\"summary\" id=\"summary\">" + Row("Kind", job.kind()) +
          Row("State", StateName(job.state()), "job-state") + Row("Owner", job.owner()) +
          Row("Priority", std::to_string(job.priority())) +
          Row("Attempts", std::to_string(job.attempts() + 1) + " of " + std::to_string(job.max_attempts())) +
          Row("Devices", std::to_string(job.devices()) + " " + job.device_kind()) + Row("Worker", job.worker_id()) +
          Row("Submitted", Time(job.submitted_at_ms())) + Row("Started", Time(job.started_at_ms())) +
          Row("Finished", Time(end_ms)) +
          Row("Ran for", job.started_at_ms() > 0 && end_ms > 0 ? Duration(end_ms - job.started_at_ms()) : "-") +
          Row("Reason", job.reason(), "job-reason");
  std::string progress = "-";
  if (job.has_progress()) {
    progress = job.progress().phase();
    if (job.progress().total() > 0) {
      progress += " " + std::to_string(job.progress().done()) + "/" + std::to_string(job.progress().total());
    }
  }
  body += Row("Progress", progress, "job-progress") + "</table>";

  // ---- Charts (app.js draws them from the API) ----
  body += "<section><h2>Memory</h2><p class=\"note\">Each device's memory in use over time (MiB), as the "
          "agent's nvidia-smi style samples saw it.</p><div class=\"chart\" id=\"memory-chart\" data-src=\"/ui/api/jobs/" +
          id_text + "/samples\"></div></section>";
  if (job.kind() == "finetune") {
    body += "<section><h2>Loss</h2><div class=\"chart\" id=\"loss-chart\" data-src=\"/ui/api/jobs/" + id_text +
            "/losses\"></div></section>";
  }

  // ---- State history ----
  body += "<section><h2>State history</h2><table id=\"history\"><thead><tr><th>#</th><th>At</th><th>From</th>"
          "<th>To</th><th>Why</th></tr></thead><tbody>";
  for (const v1::StateChange& change : history.changes()) {
    body += "<tr>" + Cell(std::to_string(change.seq())) + Cell(Time(change.at_ms())) +
            Cell(change.from_state().empty() ? "-" : change.from_state()) + Cell(change.to_state()) +
            Cell(change.message()) + "</tr>";
  }
  body += "</tbody></table></section>";

  // ---- Timings ----
  body += "<section><h2>Timings</h2><table id=\"timings\"><thead><tr><th>Attempt</th><th>Rank</th><th>Phase</th>"
          "<th>Start</th><th>Took</th></tr></thead><tbody>";
  for (const v1::Timing& t : timings.timings()) {
    body += "<tr>" + Cell(std::to_string(t.attempt())) + Cell(std::to_string(t.rank())) + Cell(t.phase()) +
            Cell(Time(t.start_ms())) + Cell(t.end_ms() > 0 ? Duration(t.end_ms() - t.start_ms()) : "running") +
            "</tr>";
  }
  body += "</tbody></table></section>";

  // ---- Plan and spec ----
  body += "<section><h2>Plan</h2><pre id=\"plan\">" + Escape(job.plan_json().empty() ? "-" : Pretty(job.plan_json())) +
          "</pre></section><section><h2>Spec</h2><pre id=\"spec\">" + Escape(Pretty(job.spec_json())) +
          "</pre></section></article>";
  SendPage(out, 200, Frame("Job " + id_text, &viewer, body, /*charts=*/true));
}

void Dashboard::WorkersPage(const Viewer& viewer, HttpResponder& out) const {
  v1::ListWorkersResponse response;
  grpc::Status status = jobs_->ListWorkers(Context(viewer.token).get(), v1::ListWorkersRequest(), &response);
  if (!status.ok()) return PageError(&viewer, status, out);
  std::string body = "<h1>Workers</h1>";
  if (response.workers_size() == 0) body += "<p class=\"empty\">No workers have registered.</p>";
  for (const v1::Worker& w : response.workers()) {
    std::string running;
    for (int64_t id : w.running_jobs()) {
      running += "<a href=\"/ui/jobs/" + std::to_string(id) + "\">" + std::to_string(id) + "</a> ";
    }
    body += "<section class=\"worker\" data-worker=\"" + Escape(w.id()) + "\"><h2>" + Escape(w.id()) + "</h2>"
            "<table class=\"summary\">" + Row("Host", w.host()) + Row("State", w.state()) +
            Row("Last heartbeat", Time(w.last_heartbeat_ms())) +
            Row("Drained", w.drained_at_ms() > 0 ? "since " + Time(w.drained_at_ms()) : "no") +
            Row("Host memory", w.host_total_mib() > 0 ? Mib(w.host_free_mib()) + " free of " + Mib(w.host_total_mib())
                                                      : "not sampled") +
            "<tr><th>Running jobs</th><td>" + (running.empty() ? "none" : running) + "</td></tr></table>";
    body += "<table class=\"devices\"><thead><tr><th>Device</th><th>Name</th><th>Kind</th><th>Total</th>"
            "<th>Free</th></tr></thead><tbody>";
    for (const v1::Device& d : w.devices()) {
      body += "<tr>" + Cell(std::to_string(d.index())) + Cell(d.name()) + Cell(d.kind()) + Cell(Mib(d.total_mib())) +
              Cell(Mib(d.free_mib()), "free") + "</tr>";
    }
    body += "</tbody></table>";
    if (w.warm_size() > 0) {
      body += "<table class=\"warm\"><thead><tr><th>Warm model</th><th>Device</th><th>Precision</th><th>Offload</th>"
              "<th>Memory</th><th>Idle</th><th>Active</th><th>Serving job</th></tr></thead><tbody>";
      for (const v1::WarmModel& m : w.warm()) {
        body += "<tr>" + Cell(m.model()) + Cell(std::to_string(m.device_index())) + Cell(m.precision()) +
                Cell(m.offload()) + Cell(Mib(m.mib())) + Cell(Duration(m.idle_ms())) +
                Cell(std::to_string(m.active())) +
                Cell(m.serving_job_id() > 0 ? std::to_string(m.serving_job_id()) : "-") + "</tr>";
      }
      body += "</tbody></table>";
    } else {
      body += "<p class=\"note\">No warm models.</p>";
    }
    body += "</section>";
  }
  SendPage(out, 200, Frame("Workers", &viewer, body));
}

}  // namespace fuji::http
