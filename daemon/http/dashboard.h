// Dashboard: fujid's web pages under /ui/ on its HTTP listener, a client of fujid's own gRPC
// JobService called in-process with the caller's token, as the OpenAI gateway is. So who may see
// what is the services' rule: a user sees their own jobs, an admin everyone's (and may filter by
// owner); a token that is not valid is refused by the services themselves.
//
//   GET  /ui/login          the login form (a fuji token)
//   POST /ui/login          checks the token (JobService.Health) and keeps it in the cookie
//                           fuji_token (Secure; HttpOnly; SameSite=Strict; Path=/ui; Max-Age 8 h)
//   POST /ui/logout         clears the cookie
//   GET  /ui/               the jobs table, first page rendered on the server; ?state= &kind=
//                           &owner= (admins) &page= (the previous page's token)
//   GET  /ui/jobs/ID        a job: summary, state history, timings, plan, spec, and the charts of
//                           its memory samples (per device over time) and losses; app.js polls
//                           the API every 2 s while the job has not ended
//   GET  /ui/workers        workers, their devices, free memory and warm models
//   GET  /ui/api/jobs/ID            {job, history}: what the live page polls
//   GET  /ui/api/jobs/ID/samples    the job's memory samples (JobService.GetSamples)
//   GET  /ui/api/jobs/ID/losses     its losses, every page of JobService.GetLosses (bounded)
//   GET  /ui/static/NAME    app.js, app.css, uPlot's script and style, compiled into fujid
//   GET  /                  redirects to /ui/
//
// Pages without a valid cookie redirect to /ui/login; the API answers 401. Every page carries a
// Content-Security-Policy of 'self' only (no inline script or style), nosniff, no framing; data
// is Cache-Control: no-store; everything from the database is HTML-escaped.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>

#include <grpcpp/grpcpp.h>

#include "daemon/http/http_server.h"
#include "fuji/v1/jobs.grpc.pb.h"

namespace fuji::http {

struct DashboardOptions {
  int64_t cookie_max_age_s = 8 * 3600;  // the login cookie's Max-Age
  int jobs_page_size = 50;              // rows of the jobs table per page
};

// Thread-safe: Handle runs on many threads at once.
class Dashboard {
 public:
  // `channel` reaches fujid's JobService (the gRPC server's in-process channel).
  Dashboard(std::shared_ptr<grpc::Channel> channel, DashboardOptions options = {});

  // Whether the request is the dashboard's: "/", "/ui" and everything under "/ui/".
  static bool Matches(const HttpRequest& request);
  // Answers one request (an HttpHandler).
  void Handle(const HttpRequest& request, const std::shared_ptr<HttpResponder>& out) const;

 private:
  // Who the cookie's token says the caller is.
  struct Viewer {
    std::string token;
    std::string user;
    bool admin = false;
  };
  using Query = std::map<std::string, std::string>;

  // ---- dashboard.cc: routing, login, static files ----
  void Route(const HttpRequest& request, HttpResponder& out) const;
  void LoginForm(HttpResponder& out, int status, const std::string& message) const;
  void Login(const HttpRequest& request, HttpResponder& out) const;
  void Static(const std::string& name, HttpResponder& out) const;
  // The viewer of a page request (JobService.Health with the cookie's token); nullopt when it
  // answered (a redirect to the login form, or an error page).
  std::optional<Viewer> PageViewer(const HttpRequest& request, HttpResponder& out) const;
  std::unique_ptr<grpc::ClientContext> Context(const std::string& token) const;

  // ---- dashboard_pages.cc: the server-rendered pages ----
  void JobsPage(const Viewer& viewer, const Query& query, HttpResponder& out) const;
  void JobPage(const Viewer& viewer, int64_t id, HttpResponder& out) const;
  void WorkersPage(const Viewer& viewer, HttpResponder& out) const;
  // The page's frame (head, navigation, the viewer) around `body`; `charts` adds uPlot.
  std::string Frame(const std::string& title, const Viewer* viewer, const std::string& body,
                    bool charts = false) const;
  void SendPage(HttpResponder& out, int status, const std::string& html) const;
  // An RPC's failure as a page: the login form for UNAUTHENTICATED, else an error page.
  void PageError(const Viewer* viewer, const grpc::Status& status, HttpResponder& out) const;

  // ---- dashboard_api.cc: JSON for the charts and the live page ----
  void Api(const HttpRequest& request, const std::string& path, HttpResponder& out) const;
  void SendJson(HttpResponder& out, int status, const std::string& json) const;
  void ApiError(HttpResponder& out, const grpc::Status& status) const;

  std::unique_ptr<v1::JobService::Stub> jobs_;
  const DashboardOptions options_;
};

}  // namespace fuji::http
