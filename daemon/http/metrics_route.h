// MetricsRoute: GET /metrics on fujid's HTTP listeners, for Prometheus. Who may scrape:
//   - a bearer token that is the metrics token (fujid --metrics-token-file), or
//   - a bearer token of an admin user (checked by fujid's own JobService.Health, in-process), or
//   - anyone, without a token, when `open` (--metrics-open-on-loopback on a loopback listener).
// A token that is given is always checked, even when the route is open.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include <grpcpp/grpcpp.h>

#include "daemon/http/http_server.h"
#include "fuji/v1/jobs.grpc.pb.h"

namespace fuji::http {

struct MetricsRouteOptions {
  std::string token;  // the metrics token; "" : none
  bool open = false;  // scrapes without a token are answered
};

// Thread-safe. `scrape` renders the registry; `channel` reaches fujid's JobService.
class MetricsRoute {
 public:
  MetricsRoute(std::function<std::string()> scrape, std::shared_ptr<grpc::Channel> channel,
               MetricsRouteOptions options);
  static bool Matches(const HttpRequest& request);
  void Handle(const HttpRequest& request, const std::shared_ptr<HttpResponder>& out) const;

 private:
  // 0 when the request may scrape, else the HTTP status that refuses it.
  int Refusal(const HttpRequest& request, std::string* why) const;

  std::function<std::string()> scrape_;
  std::unique_ptr<v1::JobService::Stub> jobs_;
  const MetricsRouteOptions options_;
};

}  // namespace fuji::http
