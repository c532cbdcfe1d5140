// DaemonServer: fujid's running parts wired together — the gRPC server with the job and worker
// services, the dispatcher, the Boost.Asio loop that drives scheduling passes, lease checks and
// long-poll timeouts, and the OpenAI-compatible HTTP API over the job service (daemon/http).
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <grpcpp/grpcpp.h>

#include "daemon/http/dashboard.h"
#include "daemon/http/http_server.h"
#include "daemon/http/metrics_route.h"
#include "daemon/http/openai_gateway.h"
#include "daemon/server/admin_service.h"
#include "daemon/server/auth.h"
#include "daemon/server/dispatcher.h"
#include "daemon/server/event_hub.h"
#include "daemon/server/job_service.h"
#include "daemon/server/metrics_collector.h"
#include "daemon/server/node_rates.h"
#include "daemon/server/notifier.h"
#include "daemon/server/worker_service.h"
#include "daemon/store/clock.h"
#include "daemon/store/job_store.h"
#include "lib/common/limits.h"

namespace fuji::daemon {

struct ServerOptions {
  std::string listen = "127.0.0.1:7070";  // port 0: any free port (see DaemonServer::port)
  int64_t lease_ttl_ms = 10000;
  int64_t max_poll_wait_ms = 30000;  // an agent's long poll is answered within this
  int max_attempts = 3;            // default retry budget of a job
  // A pass runs whenever something changed (submit, completion, registration, requeue); this
  // period only bounds how stale time-based decisions (reservations) get.
  int64_t pass_interval_ms = 1000;
  int64_t lease_check_interval_ms = 500;
  int64_t poll_tick_ms = 50;       // long polls end within this of their wait
  int max_message_bytes = limits::kMaxMessageBytes;
  // TLS: fujid's certificate (chain) and key, PEM. With insecure, plaintext instead, which only a
  // loopback `listen` may use.
  std::string tls_cert_pem, tls_key_pem;
  bool insecure = false;
  PathPolicy read_policy;  // what fujid may read of submitted paths (JobServiceOptions)
  // The OpenAI-compatible HTTP API ("" : none): TLS with the certificate above, plaintext only
  // with insecure on a loopback address, as gRPC. Port 0: any free port (see http_port).
  std::string http_listen;
  // Directories whose model directories the HTTP API offers by name; each must be readable under
  // read_policy.
  std::vector<std::string> model_dirs;
  // GET /metrics (Prometheus) on http_listen and on metrics_listen ("": none), a plaintext HTTP
  // listener that only a loopback address may use. Scrapes need an admin's token or
  // metrics_token, or nothing when metrics_open_on_loopback and the listener is loopback.
  std::string metrics_listen;
  std::string metrics_token;
  bool metrics_open_on_loopback = false;
  // fuji submit --notify: the hosts fujid may POST a job's final state to (fujid --notify-allow;
  // none: submits naming a URL are refused), and the delivery's retries and timeouts.
  NotifyPolicy notify_policy;
  NotifierOptions notify;
};

// Not thread-safe: one owner starts and stops it. store and clock are not owned and must outlive
// it. Destroying it stops it.
class DaemonServer {
 public:
  // Loads the credentials, recovers leases from the store, starts the loop, then listens.
  // UNAVAILABLE when the address cannot be bound; INVALID_ARGUMENT for plaintext on an address
  // that is not loopback, or TLS without a certificate and key.
  // `clock` is the time of day (what the store keeps); leases run on `lease_clock`, fujid's own
  // steady clock when null (tests pass their fake clock for both).
  static Result<std::unique_ptr<DaemonServer>> Start(const ServerOptions& options,
                                                     store::JobStore* store,
                                                     const store::Clock* clock,
                                                     const store::Clock* lease_clock = nullptr);
  ~DaemonServer();
  DaemonServer(const DaemonServer&) = delete;
  DaemonServer& operator=(const DaemonServer&) = delete;

  int port() const { return port_; }
  // The HTTP API's port; 0 without one.
  int http_port() const { return http_ != nullptr ? http_->port() : 0; }
  // The plaintext metrics listener's port; 0 without one.
  int metrics_port() const { return metrics_http_ != nullptr ? metrics_http_->port() : 0; }
  // Users, agents and join tokens (fujid makes the first admin through it).
  Authenticator* auth() { return &auth_; }
  // Stops the HTTP API (its requests' clients are gone: their jobs are cancelled), answers
  // waiting polls, shuts the gRPC server down (calls still running after deadline_ms are
  // cancelled), then stops the loop. Idempotent.
  void Stop(int64_t deadline_ms = 2000);

 private:
  DaemonServer(const ServerOptions& options, store::JobStore* store, const store::Clock* clock,
               const store::Clock* lease_clock);
  // Starts the HTTP API on options_.http_listen, over the gRPC server's in-process channel.
  Status StartHttp();
  // Starts the plaintext metrics listener on options_.metrics_listen.
  Status StartMetricsHttp();
  // The /metrics route for a listener on `listen`.
  std::shared_ptr<http::MetricsRoute> MetricsRouteFor(const std::string& listen);
  // grpc.health.v1: SERVING while the store commits, NOT_SERVING after a storage fault.
  void UpdateHealth();
  // Runs `tick` every period_ms on the loop.
  void Every(boost::asio::steady_timer& timer, int64_t period_ms, std::function<void()> tick);

  const ServerOptions options_;
  store::JobStore* store_;
  const store::SteadyClock steady_clock_;
  EventHub hub_;
  NodeRates rates_;
  Authenticator auth_;
  Dispatcher dispatcher_;
  JobService job_service_;
  WorkerService worker_service_;
  AdminService admin_service_;
  MetricsCollector metrics_;
  Notifier notifier_;

  boost::asio::io_context io_;
  boost::asio::executor_work_guard<boost::asio::io_context::executor_type> work_;
  boost::asio::steady_timer pass_timer_, lease_timer_, poll_timer_, health_timer_;
  std::atomic<bool> pass_requested_{false};
  std::thread loop_;

  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
  std::unique_ptr<http::OpenAiGateway> gateway_;
  std::shared_ptr<http::Dashboard> dashboard_;  // /ui/ on the HTTP listener
  std::unique_ptr<http::HttpServer> http_;
  std::unique_ptr<http::HttpServer> metrics_http_;
  std::atomic<int> serving_{-1};  // the health last set: -1 unset, 0 NOT_SERVING, 1 SERVING
  bool stopped_ = false;
};

}  // namespace fuji::daemon
