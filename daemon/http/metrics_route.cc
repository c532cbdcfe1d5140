// MetricsRoute; see metrics_route.h.
#include "daemon/http/metrics_route.h"

#include <chrono>

#include <openssl/crypto.h>

#include "lib/rpc/connection.h"

namespace fuji::http {

MetricsRoute::MetricsRoute(std::function<std::string()> scrape,
                           std::shared_ptr<grpc::Channel> channel, MetricsRouteOptions options)
    : scrape_(std::move(scrape)),
      jobs_(v1::JobService::NewStub(std::move(channel))),
      options_(std::move(options)) {}

bool MetricsRoute::Matches(const HttpRequest& request) {
  const std::string path = request.target.substr(0, request.target.find('?'));
  return path == "/metrics";
}

int MetricsRoute::Refusal(const HttpRequest& request, std::string* why) const {
  if (request.authorization.empty()) {
    if (options_.open) return 0;
    *why = "a bearer token is needed: an admin's or the metrics token";
    return 401;
  }
  const std::string prefix = rpc::kBearerPrefix;
  if (request.authorization.compare(0, prefix.size(), prefix) != 0) {
    *why = "the Authorization header must be a bearer token";
    return 401;
  }
  const std::string token = request.authorization.substr(prefix.size());
  if (!options_.token.empty() && token.size() == options_.token.size() &&
      CRYPTO_memcmp(token.data(), options_.token.data(), token.size()) == 0) {
    return 0;
  }
  grpc::ClientContext context;
  context.AddMetadata(rpc::kAuthorizationKey, request.authorization);
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  v1::HealthRequest health;
  v1::HealthResponse caller;
  const grpc::Status status = jobs_->Health(&context, health, &caller);
  if (status.error_code() == grpc::StatusCode::UNAUTHENTICATED ||
      status.error_code() == grpc::StatusCode::PERMISSION_DENIED) {
    *why = "invalid or revoked token";
    return 401;
  }
  if (!status.ok()) {
    *why = "cannot check the token: " + status.error_message();
    return 503;
  }
  if (!caller.admin()) {
    *why = "user " + caller.user() + " is not an admin";
    return 403;
  }
  return 0;
}

void MetricsRoute::Handle(const HttpRequest& request,
                          const std::shared_ptr<HttpResponder>& out) const {
  if (request.method != "GET" && request.method != "HEAD") {
    out->Send(405, "text/plain; charset=utf-8", "GET /metrics only\n", {{"Allow", "GET"}});
    return;
  }
  std::string why;
  if (const int refusal = Refusal(request, &why); refusal != 0) {
    HttpHeaders headers;
    if (refusal == 401) headers.emplace_back("WWW-Authenticate", "Bearer");
    out->Send(refusal, "text/plain; charset=utf-8", why + "\n", headers);
    return;
  }
  out->Send(200, "text/plain; version=0.0.4; charset=utf-8", scrape_());
}

}  // namespace fuji::http
