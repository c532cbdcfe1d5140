// WorkerService; see worker_service.h. The work is the Dispatcher's.
#include "daemon/server/worker_service.h"

#include <algorithm>

#include "daemon/server/grpc_status.h"
#include "lib/common/log.h"

namespace fuji::daemon {
namespace {


}  // namespace

WorkerService::WorkerService(Dispatcher* dispatcher, NodeRates* rates, Authenticator* auth, int64_t lease_ttl_ms)
    : dispatcher_(dispatcher), rates_(rates), auth_(auth), lease_ttl_ms_(lease_ttl_ms) {}

grpc::ServerUnaryReactor* WorkerService::Enroll(grpc::CallbackServerContext* context,
                                                const v1::EnrollRequest* request, v1::EnrollResponse* response) {
  Result<Caller> join = auth_->Join(*context);
  if (!join.ok()) return Finish(context, join.status());
  Result<NewCredential> agent = auth_->EnrollAgent(request->worker_id());
  if (!agent.ok()) {
    log::Warn("enrollment of worker " + request->worker_id() + " refused: " + agent.status().message());
    return Finish(context, agent.status());
  }
  response->set_credential(agent->token);
  log::Info("worker " + request->worker_id() + " enrolled from " + request->host() + " with join token " +
            std::to_string(join->credential_id));
  return Finish(context, Status::Ok());
}

grpc::ServerUnaryReactor* WorkerService::Register(grpc::CallbackServerContext* context,
                                                  const v1::RegisterRequest* request,
                                                  v1::RegisterResponse* response) {
  if (Result<Caller> agent = auth_->Agent(*context, request->worker_id()); !agent.ok()) {
    return Finish(context, agent.status());
  }
  Result<std::vector<int64_t>> stop = dispatcher_->Register(*request);
  if (stop.ok()) {
    const bool has_gpus = std::any_of(request->devices().begin(), request->devices().end(),
                                      [](const v1::Device& d) { return d.kind() == "cuda"; });
    rates_->Register(request->worker_id(), has_gpus, request->rates_json());
    response->set_lease_ttl_ms(lease_ttl_ms_);
    response->set_heartbeat_interval_ms(std::max<int64_t>(lease_ttl_ms_ / 3, 1));
    for (int64_t id : *stop) response->add_stop_job_ids(id);
  }
  return Finish(context, stop.status());
}

grpc::ServerUnaryReactor* WorkerService::Heartbeat(grpc::CallbackServerContext* context,
                                                   const v1::HeartbeatRequest* request,
                                                   v1::HeartbeatResponse* response) {
  if (Result<Caller> agent = auth_->Agent(*context, request->worker_id()); !agent.ok()) {
    return Finish(context, agent.status());
  }
  Result<v1::HeartbeatResponse> beat = dispatcher_->Heartbeat(*request);
  if (beat.ok()) {
    *response = *beat;
    rates_->Heartbeat(request->worker_id(), request->rates_json());
  }
  return Finish(context, beat.status());
}

grpc::ServerUnaryReactor* WorkerService::PollAssignments(
    grpc::CallbackServerContext* context, const v1::PollAssignmentsRequest* request,
    v1::PollAssignmentsResponse* response) {
  if (Result<Caller> agent = auth_->Agent(*context, request->worker_id()); !agent.ok()) {
    return Finish(context, agent.status());
  }
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  dispatcher_->Poll(request->worker_id(), request->wait_ms(),
                    [reactor, response](std::vector<v1::Assignment> assignments) {
                      for (v1::Assignment& a : assignments) *response->add_assignments() = a;
                      reactor->Finish(grpc::Status::OK);
                    });
  return reactor;
}

grpc::ServerUnaryReactor* WorkerService::Report(grpc::CallbackServerContext* context,
                                                const v1::JobReport* request,
                                                v1::ReportResponse* response) {
  if (Result<Caller> agent = auth_->Agent(*context, request->worker_id()); !agent.ok()) {
    return Finish(context, agent.status());
  }
  Result<bool> cancel = dispatcher_->Report(*request);
  if (cancel.ok()) response->set_cancel(*cancel);
  return Finish(context, cancel.status());
}

grpc::ServerUnaryReactor* WorkerService::Complete(grpc::CallbackServerContext* context,
                                                  const v1::CompleteRequest* request,
                                                  v1::CompleteResponse* response) {
  if (Result<Caller> agent = auth_->Agent(*context, request->worker_id()); !agent.ok()) {
    return Finish(context, agent.status());
  }
  return Finish(context, dispatcher_->Complete(*request));
}

}  // namespace fuji::daemon
