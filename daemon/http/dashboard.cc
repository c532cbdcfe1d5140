// Dashboard: routing, the login cookie and the static files; see dashboard.h.
#include "daemon/http/dashboard.h"

#include <chrono>
#include <cstring>

#include "daemon/http/dashboard_assets.h"
#include "daemon/http/dashboard_html.h"
#include "lib/common/log.h"
#include "lib/rpc/connection.h"

namespace fuji::http {

using dashboard::Escape;

namespace {

constexpr char kCookie[] = "fuji_token";
// Unary calls are in-process and quick; this only bounds a stuck one.
constexpr auto kCallDeadline = std::chrono::seconds(30);
constexpr size_t kMaxLoginBody = 4096;

HttpHeaders Redirect(const std::string& to, const std::string& set_cookie = "") {
  HttpHeaders headers = dashboard::Headers();
  headers.emplace_back("Location", to);
  if (!set_cookie.empty()) headers.emplace_back("Set-Cookie", set_cookie);
  return headers;
}

std::string ClearCookie() {
  return std::string(kCookie) + "=; Max-Age=0; Path=/ui; Secure; HttpOnly; SameSite=Strict";
}

}  // namespace

Dashboard::Dashboard(std::shared_ptr<grpc::Channel> channel, DashboardOptions options)
    : jobs_(v1::JobService::NewStub(channel)), options_(options) {}

bool Dashboard::Matches(const HttpRequest& request) {
  const std::string path = dashboard::PathOf(request.target);
  return path == "/" || path == "/ui" || path.rfind("/ui/", 0) == 0;
}

void Dashboard::Handle(const HttpRequest& request, const std::shared_ptr<HttpResponder>& out) const {
  Route(request, *out);
}

std::unique_ptr<grpc::ClientContext> Dashboard::Context(const std::string& token) const {
  auto context = std::make_unique<grpc::ClientContext>();
  rpc::Authorize(context.get(), token);
  context->set_deadline(std::chrono::system_clock::now() + kCallDeadline);
  return context;
}

void Dashboard::Route(const HttpRequest& request, HttpResponder& out) const {
  const std::string path = dashboard::PathOf(request.target);
  const bool get = request.method == "GET" || request.method == "HEAD";
  if (path == "/" || path == "/ui") return out.Send(303, "text/plain", "", Redirect("/ui/"));
  if (path == "/ui/login") {
    if (get) return LoginForm(out, 200, "");
    if (request.method == "POST") return Login(request, out);
  } else if (path == "/ui/logout") {
    if (request.method == "POST") {
      return out.Send(303, "text/plain", "", Redirect("/ui/login", ClearCookie()));
    }
  } else if (path.rfind("/ui/static/", 0) == 0) {
    if (get) return Static(path.substr(std::strlen("/ui/static/")), out);
  } else if (path.rfind("/ui/api/", 0) == 0) {
    if (get) return Api(request, path.substr(std::strlen("/ui/api/")), out);
  } else if (get) {
    std::map<std::string, std::string> query;
    if (!dashboard::ParseForm(dashboard::QueryOf(request.target), &query)) {
      return SendPage(out, 400, Frame("Bad request", nullptr, "<p>The address's query does not parse.</p>"));
    }
    std::optional<Viewer> viewer;
    if (path == "/ui/" || path == "/ui/workers" || path.rfind("/ui/jobs/", 0) == 0) {
      viewer = PageViewer(request, out);
      if (!viewer.has_value()) return;
    }
    if (path == "/ui/") return JobsPage(*viewer, query, out);
    if (path == "/ui/workers") return WorkersPage(*viewer, out);
    if (path.rfind("/ui/jobs/", 0) == 0) {
      const std::string id_text = path.substr(std::strlen("/ui/jobs/"));
      char* end = nullptr;
      const long long id = id_text.size() <= 18 ? std::strtoll(id_text.c_str(), &end, 10) : 0;
      if (id <= 0 || end == nullptr || *end != '\0') {
        return SendPage(out, 404, Frame("Not found", &*viewer, "<p>No such job.</p>"));
      }
      return JobPage(*viewer, id, out);
    }
    return SendPage(out, 404, Frame("Not found", nullptr, "<p>No such page.</p>"));
  }
  // A path the dashboard has, asked with a method it does not take.
  out.Send(405, "text/plain", "method not allowed\n", dashboard::Headers());
}

void Dashboard::LoginForm(HttpResponder& out, int status, const std::string& message) const {
  std::string body = "<section class=\"login\"><h1>Log in to fuji</h1>";
  if (!message.empty()) body += "<p class=\"error\" id=\"login-error\">" + Escape(message) + "</p>";
  body +=
      "<form method=\"post\" action=\"/ui/login\">"
      "<label>Token <input type=\"password\" name=\"token\" id=\"token\" autocomplete=\"off\" "
      "maxlength=\"1024\" required autofocus></label>"
      "<button type=\"submit\" id=\"login\">Log in</button></form>"
      "<p class=\"hint\">A fuji user's token: <code>fuji admin user add NAME</code> prints one; "
      "fujid's admin token is in its state directory (admin.token).</p></section>";
  SendPage(out, status, Frame("Log in", nullptr, body));
}

void Dashboard::Login(const HttpRequest& request, HttpResponder& out) const {
  std::map<std::string, std::string> form;
  const bool form_type = request.content_type.rfind("application/x-www-form-urlencoded", 0) == 0;
  if (!form_type || request.body.size() > kMaxLoginBody || !dashboard::ParseForm(request.body, &form) ||
      form.count("token") == 0) {
    return LoginForm(out, 400, "Send the login form (a token).");
  }
  std::string token = form["token"];
  while (!token.empty() && (token.back() == ' ' || token.back() == '\n' || token.back() == '\r')) token.pop_back();
  while (!token.empty() && token.front() == ' ') token.erase(0, 1);
  if (!dashboard::CookieSafe(token)) return LoginForm(out, 401, "That is not a token fujid issued.");
  v1::HealthResponse health;
  grpc::Status status = jobs_->Health(Context(token).get(), v1::HealthRequest(), &health);
  if (status.error_code() == grpc::StatusCode::UNAUTHENTICATED) {
    return LoginForm(out, 401, "That token is not valid (revoked, expired, or not fujid's).");
  }
  if (!status.ok()) return LoginForm(out, 503, "fujid cannot check the token now: " + status.error_message());
  log::Info("dashboard: " + health.user() + " logged in");
  const std::string cookie = std::string(kCookie) + "=" + token + "; Max-Age=" +
                             std::to_string(options_.cookie_max_age_s) +
                             "; Path=/ui; Secure; HttpOnly; SameSite=Strict";
  out.Send(303, "text/plain", "", Redirect("/ui/", cookie));
}

std::optional<Dashboard::Viewer> Dashboard::PageViewer(const HttpRequest& request, HttpResponder& out) const {
  Viewer viewer;
  viewer.token = dashboard::CookieValue(request.cookie, kCookie);
  if (!dashboard::CookieSafe(viewer.token)) {
    out.Send(303, "text/plain", "", Redirect("/ui/login"));
    return std::nullopt;
  }
  v1::HealthResponse health;
  grpc::Status status = jobs_->Health(Context(viewer.token).get(), v1::HealthRequest(), &health);
  if (!status.ok()) {
    PageError(nullptr, status, out);
    return std::nullopt;
  }
  viewer.user = health.user();
  viewer.admin = health.admin();
  return viewer;
}

void Dashboard::Static(const std::string& name, HttpResponder& out) const {
  for (int i = 0; i < kNumDashboardAssets; ++i) {
    if (name == kDashboardAssets[i].name) {
      // Addresses carry the content's hash (StaticUrl): a day's caching is safe.
      return out.Send(200, kDashboardAssets[i].content_type, kDashboardAssets[i].text,
                      dashboard::Headers("private, max-age=86400"));
    }
  }
  out.Send(404, "text/plain", "no such file\n", dashboard::Headers());
}

void Dashboard::SendPage(HttpResponder& out, int status, const std::string& html) const {
  out.Send(status, "text/html; charset=utf-8", html, dashboard::Headers());
}

void Dashboard::PageError(const Viewer* viewer, const grpc::Status& status, HttpResponder& out) const {
  switch (status.error_code()) {
    case grpc::StatusCode::UNAUTHENTICATED:
      // A token revoked or expired since the login: log in again.
      return out.Send(303, "text/plain", "", Redirect("/ui/login", ClearCookie()));
    case grpc::StatusCode::NOT_FOUND:
      return SendPage(out, 404, Frame("Not found", viewer, "<p>" + Escape(status.error_message()) + "</p>"));
    case grpc::StatusCode::PERMISSION_DENIED:
      return SendPage(out, 403, Frame("Forbidden", viewer, "<p>" + Escape(status.error_message()) + "</p>"));
    case grpc::StatusCode::INVALID_ARGUMENT:
      return SendPage(out, 400, Frame("Bad request", viewer, "<p>" + Escape(status.error_message()) + "</p>"));
    default:
      return SendPage(out, 503, Frame("Unavailable", viewer, "<p>" + Escape(status.error_message()) + "</p>"));
  }
}

}  // namespace fuji::http
