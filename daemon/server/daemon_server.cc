// DaemonServer; see daemon_server.h.
#include "daemon/server/daemon_server.h"

#include <chrono>

#include <boost/asio/post.hpp>

#include "lib/rpc/connection.h"

namespace fuji::daemon {

DaemonServer::DaemonServer(const ServerOptions& options, store::JobStore* store,
                           const store::Clock* clock, const store::Clock* lease_clock)
    : options_(options),
      auth_(store, clock),
      dispatcher_(store, clock, lease_clock != nullptr ? lease_clock : &steady_clock_, &hub_, DispatcherOptions{options.lease_ttl_ms, options.max_poll_wait_ms}),
      job_service_(store, &dispatcher_, &hub_, &rates_, &auth_, clock, JobServiceOptions{options.max_attempts, options.read_policy}),
      worker_service_(&dispatcher_, &rates_, &auth_, options.lease_ttl_ms),
      admin_service_(&auth_, store),
      work_(boost::asio::make_work_guard(io_)),
      pass_timer_(io_),
      lease_timer_(io_),
      poll_timer_(io_) {}

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
  self->Every(self->pass_timer_, options.pass_interval_ms, &Dispatcher::RunPass);
  self->Every(self->lease_timer_, options.lease_check_interval_ms, &Dispatcher::CheckLeases);
  self->Every(self->poll_timer_, options.poll_tick_ms, &Dispatcher::ExpirePolls);
  self->loop_ = std::thread([self] { self->io_.run(); });

  grpc::ServerBuilder builder;
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
  if (!options.http_listen.empty()) {
    if (Status http = self->StartHttp(); !http.ok()) {
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
  FUJI_ASSIGN_OR_RETURN(http_, http::HttpServer::Start(
                                   http_options,
                                   [gateway](const http::HttpRequest& request,
                                             const std::shared_ptr<http::HttpResponder>& out) {
                                     gateway->Handle(request, out);
                                   },
                                   &http::OpenAiGateway::ErrorBody));
  return Status::Ok();
}

void DaemonServer::Every(boost::asio::steady_timer& timer, int64_t period_ms,
                         void (Dispatcher::*tick)()) {
  timer.expires_after(std::chrono::milliseconds(period_ms));
  timer.async_wait([this, &timer, period_ms, tick](const boost::system::error_code& error) {
    if (error) return;  // cancelled: stopping
    (dispatcher_.*tick)();
    Every(timer, period_ms, tick);
  });
}

void DaemonServer::Stop(int64_t deadline_ms) {
  if (stopped_) return;
  stopped_ = true;
  // First, while the job service still answers: the HTTP requests cancel their jobs.
  if (http_ != nullptr) http_->Stop();
  dispatcher_.Drain();
  if (server_ != nullptr) {
    server_->Shutdown(std::chrono::system_clock::now() + std::chrono::milliseconds(deadline_ms));
    server_->Wait();
  }
  boost::asio::post(io_, [this] {
    pass_timer_.cancel();
    lease_timer_.cancel();
    poll_timer_.cancel();
  });
  work_.reset();
  io_.stop();
  if (loop_.joinable()) loop_.join();
}

DaemonServer::~DaemonServer() { Stop(); }

}  // namespace fuji::daemon
