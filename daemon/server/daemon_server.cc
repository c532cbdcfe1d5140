// DaemonServer; see daemon_server.h.
#include "daemon/server/daemon_server.h"

#include <chrono>

#include <boost/asio/post.hpp>
#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/health_check_service_interface.h>
#include <grpcpp/support/server_interceptor.h>

#include "lib/rpc/connection.h"

namespace fuji::daemon {
namespace {

// Counts every call fujid answers by method and status code (fuji_rpc_requests_total).
class RpcCounter : public grpc::experimental::Interceptor {
 public:
  explicit RpcCounter(grpc::experimental::ServerRpcInfo* info) : method_(info->method()) {}
  void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
    if (methods->QueryInterceptionHookPoint(grpc::experimental::InterceptionHookPoints::PRE_SEND_STATUS)) {
      metrics::Registry::Default().Add("fuji_rpc_requests_total", {method_, CodeName(methods->GetSendStatus())});
    }
    methods->Proceed();
  }

 private:
  static std::string CodeName(const grpc::Status& status) {
    static const char* const kNames[] = {"OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED",
                                         "NOT_FOUND", "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED",
                                         "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED",
                                         "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED"};
    const int code = static_cast<int>(status.error_code());
    return code >= 0 && code <= 16 ? kNames[code] : "UNKNOWN";
  }
  const std::string method_;
};

class RpcCounterFactory : public grpc::experimental::ServerInterceptorFactoryInterface {
 public:
  grpc::experimental::Interceptor* CreateServerInterceptor(grpc::experimental::ServerRpcInfo* info) override {
    return new RpcCounter(info);
  }
};

}  // namespace

DaemonServer::DaemonServer(const ServerOptions& options, store::JobStore* store,
                           const store::Clock* clock, const store::Clock* lease_clock)
    : options_(options),
      store_(store),
      auth_(store, clock),
      dispatcher_(store, clock, lease_clock != nullptr ? lease_clock : &steady_clock_, &hub_, DispatcherOptions{options.lease_ttl_ms, options.max_poll_wait_ms}),
      job_service_(store, &dispatcher_, &hub_, &rates_, &auth_, clock, JobServiceOptions{options.max_attempts, options.read_policy, options.notify_policy}),
      worker_service_(&dispatcher_, &rates_, &auth_, options.lease_ttl_ms),
      admin_service_(&auth_, store),
      metrics_(store, &dispatcher_, &metrics::Registry::Default()),
      notifier_(store, clock, options.notify_policy, options.notify),
      work_(boost::asio::make_work_guard(io_)),
      pass_timer_(io_),
      lease_timer_(io_),
      poll_timer_(io_),
      health_timer_(io_) {
  DefineDaemonMetrics(metrics::Registry::Default());
}

Result<std::unique_ptr<DaemonServer>> DaemonServer::Start(const ServerOptions& options,
                                                          store::JobStore* store,
                                                          const store::Clock* clock,
                                                          const store::Clock* lease_clock) {
  std::shared_ptr<grpc::ServerCredentials> credentials;
  if (options.insecure) {
    if (!rpc::IsLoopbackAddress(options.listen)) {
      return InvalidArgument("plaintext (--insecure) may listen on loopback addresses only, not " + options.listen);
    }
    credentials = grpc::InsecureServerCredentials();
  } else {
    if (options.tls_cert_pem.empty() || options.tls_key_pem.empty()) {
      return InvalidArgument("TLS needs a certificate and its key");
    }
    grpc::SslServerCredentialsOptions tls;
    tls.pem_key_cert_pairs.push_back({options.tls_key_pem, options.tls_cert_pem});
    credentials = grpc::SslServerCredentials(tls);
  }
  std::unique_ptr<DaemonServer> server(new DaemonServer(options, store, clock, lease_clock));
  FUJI_RETURN_IF_ERROR(server->auth_.Load());
  FUJI_RETURN_IF_ERROR(server->dispatcher_.Recover());
  DaemonServer* self = server.get();
  // Coalesced: many submits in a burst cost one pass.
  self->dispatcher_.SetPassRequester([self] {
    if (self->pass_requested_.exchange(true)) return;
    boost::asio::post(self->io_, [self] {
      self->pass_requested_ = false;
      self->dispatcher_.RunPass();
    });
  });
  Dispatcher* dispatcher = &self->dispatcher_;
  self->Every(self->pass_timer_, options.pass_interval_ms, [dispatcher] { dispatcher->RunPass(); });
  self->Every(self->lease_timer_, options.lease_check_interval_ms, [dispatcher] { dispatcher->CheckLeases(); });
  self->Every(self->poll_timer_, options.poll_tick_ms, [dispatcher] { dispatcher->ExpirePolls(); });
  self->loop_ = std::thread([self] { self->io_.run(); });
  // Notifications owed from before a restart are delivered too: the notifier reads the store.
  self->notifier_.Start();

  // The standard grpc.health.v1.Health (no token: it tells only whether fujid can commit) and
  // server reflection (no token: it describes the services, whose .proto files are public; every
  // call it describes still checks its caller).
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  std::vector<std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>> interceptors;
  interceptors.push_back(std::make_unique<RpcCounterFactory>());
  builder.experimental().SetInterceptorCreators(std::move(interceptors));
  builder.AddListeningPort(options.listen, credentials, &self->port_);
  builder.SetMaxReceiveMessageSize(options.max_message_bytes);
  builder.RegisterService(&self->job_service_);
  builder.RegisterService(&self->worker_service_);
  builder.RegisterService(&self->admin_service_);
  self->server_ = builder.BuildAndStart();
  if (self->server_ == nullptr || self->port_ == 0) {
    self->Stop();
    return Unavailable("cannot listen on " + options.listen);
  }
  self->UpdateHealth();
  self->Every(self->health_timer_, options.lease_check_interval_ms, [self] { self->UpdateHealth(); });
  if (!options.http_listen.empty()) {
    if (Status http = self->StartHttp(); !http.ok()) {
      self->Stop();
      return http;
    }
  }
  if (!options.metrics_listen.empty()) {
    if (Status http = self->StartMetricsHttp(); !http.ok()) {
      self->Stop();
      return http;
    }
  }
  return server;
}

Status DaemonServer::StartHttp() {
  if (options_.insecure && !rpc::IsLoopbackAddress(options_.http_listen)) {
    return InvalidArgument("plaintext (--insecure) HTTP may listen on loopback addresses only, not " +
                           options_.http_listen);
  }
  FUJI_ASSIGN_OR_RETURN(http::ModelCatalog catalog,
                        http::ModelCatalog::Create(options_.model_dirs, options_.read_policy));
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(options_.max_message_bytes);
  args.SetMaxSendMessageSize(options_.max_message_bytes);
  gateway_ = std::make_unique<http::OpenAiGateway>(server_->InProcessChannel(args),
                                                   http::GatewayOptions{std::move(catalog), options_.read_policy});
  http::HttpServerOptions http_options;
  http_options.listen = options_.http_listen;
  if (!options_.insecure) {
    http_options.tls_cert_pem = options_.tls_cert_pem;
    http_options.tls_key_pem = options_.tls_key_pem;
  }
  http::OpenAiGateway* gateway = gateway_.get();
  std::shared_ptr<http::MetricsRoute> metrics = MetricsRouteFor(options_.http_listen);
  dashboard_ = std::make_shared<http::Dashboard>(server_->InProcessChannel(args));
  FUJI_ASSIGN_OR_RETURN(http_, http::HttpServer::Start(
                                   http_options,
                                   [gateway, metrics, dashboard = dashboard_](
                                       const http::HttpRequest& request, const std::shared_ptr<http::HttpResponder>& out) {
                                     if (http::MetricsRoute::Matches(request)) return metrics->Handle(request, out);
                                     if (http::Dashboard::Matches(request)) return dashboard->Handle(request, out);
                                     gateway->Handle(request, out);
                                   },
                                   &http::OpenAiGateway::ErrorBody));
  return Status::Ok();
}

std::shared_ptr<http::MetricsRoute> DaemonServer::MetricsRouteFor(const std::string& listen) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(options_.max_message_bytes);
  MetricsCollector* collector = &metrics_;
  return std::make_shared<http::MetricsRoute>(
      [collector] { return collector->Scrape(); }, server_->InProcessChannel(args),
      http::MetricsRouteOptions{options_.metrics_token,
                                options_.metrics_open_on_loopback && rpc::IsLoopbackAddress(listen)});
}

Status DaemonServer::StartMetricsHttp() {
  if (!rpc::IsLoopbackAddress(options_.metrics_listen)) {
    return InvalidArgument("--metrics-listen is plaintext HTTP: loopback addresses only, not " +
                           options_.metrics_listen + " (scrape https on --http-listen from elsewhere)");
  }
  http::HttpServerOptions http_options;
  http_options.listen = options_.metrics_listen;
  http_options.max_connections = 16;
  http_options.max_body_bytes = 1024;
  std::shared_ptr<http::MetricsRoute> metrics = MetricsRouteFor(options_.metrics_listen);
  FUJI_ASSIGN_OR_RETURN(metrics_http_, http::HttpServer::Start(
                                           http_options,
                                           [metrics](const http::HttpRequest& request,
                                                     const std::shared_ptr<http::HttpResponder>& out) {
                                             if (http::MetricsRoute::Matches(request)) {
                                               return metrics->Handle(request, out);
                                             }
                                             out->Send(404, "text/plain; charset=utf-8", "only /metrics here\n");
                                           },
                                           [](int, const std::string& message) { return message + "\n"; }));
  return Status::Ok();
}

void DaemonServer::UpdateHealth() {
  const int serving = store_->StorageFault().empty() ? 1 : 0;
  if (serving_.exchange(serving) == serving || server_ == nullptr) return;
  if (grpc::HealthCheckServiceInterface* health = server_->GetHealthCheckService()) {
    health->SetServingStatus(serving == 1);
  }
}

void DaemonServer::Every(boost::asio::steady_timer& timer, int64_t period_ms, std::function<void()> tick) {
  timer.expires_after(std::chrono::milliseconds(period_ms));
  timer.async_wait([this, &timer, period_ms, tick = std::move(tick)](const boost::system::error_code& error) {
    if (error) return;  // cancelled: stopping
    tick();
    Every(timer, period_ms, tick);
  });
}

void DaemonServer::Stop(int64_t deadline_ms) {
  if (stopped_) return;
  stopped_ = true;
  notifier_.Stop();  // after the POST in flight, if any (bounded by its timeout)
  // First, while the job service still answers: the HTTP requests cancel their jobs.
  if (http_ != nullptr) http_->Stop();
  if (metrics_http_ != nullptr) metrics_http_->Stop();
  dispatcher_.Drain();
  if (server_ != nullptr) {
    server_->Shutdown(std::chrono::system_clock::now() + std::chrono::milliseconds(deadline_ms));
    server_->Wait();
  }
  boost::asio::post(io_, [this] {
    pass_timer_.cancel();
    lease_timer_.cancel();
    poll_timer_.cancel();
    health_timer_.cancel();
  });
  work_.reset();
  io_.stop();
  if (loop_.joinable()) loop_.join();
}

DaemonServer::~DaemonServer() { Stop(); }

}  // namespace fuji::daemon
