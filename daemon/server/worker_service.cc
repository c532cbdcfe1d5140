// WorkerService; see worker_service.h. The work is the Dispatcher's.
#include "daemon/server/worker_service.h"

#include <algorithm>

#include "daemon/server/grpc_status.h"

namespace fuji::daemon {
namespace {

grpc::ServerUnaryReactor* Done(grpc::CallbackServerContext* context, const Status& status) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  reactor->Finish(ToGrpcStatus(status));
  return reactor;
}

}  // namespace

WorkerService::WorkerService(Dispatcher* dispatcher, NodeRates* rates, int64_t lease_ttl_ms)
    : dispatcher_(dispatcher), rates_(rates), lease_ttl_ms_(lease_ttl_ms) {}

grpc::ServerUnaryReactor* WorkerService::Register(grpc::CallbackServerContext* context,
                                                  const v1::RegisterRequest* request,
                                                  v1::RegisterResponse* response) {
  Result<std::vector<int64_t>> stop = dispatcher_->Register(*request);
  if (stop.ok()) {
    const bool has_gpus = std::any_of(request->devices().begin(), request->devices().end(),
                                      [](const v1::Device& d) { return d.kind() == "cuda"; });
    rates_->Register(request->worker_id(), has_gpus, request->rates_json());
    response->set_lease_ttl_ms(lease_ttl_ms_);
    response->set_heartbeat_interval_ms(std::max<int64_t>(lease_ttl_ms_ / 3, 1));
    for (int64_t id : *stop) response->add_stop_job_ids(id);
  }
  return Done(context, stop.status());
}

grpc::ServerUnaryReactor* WorkerService::Heartbeat(grpc::CallbackServerContext* context,
                                                   const v1::HeartbeatRequest* request,
                                                   v1::HeartbeatResponse* response) {
  Result<v1::HeartbeatResponse> beat = dispatcher_->Heartbeat(*request);
  if (beat.ok()) {
    *response = *beat;
    rates_->Heartbeat(request->worker_id(), request->rates_json());
  }
  return Done(context, beat.status());
}

grpc::ServerUnaryReactor* WorkerService::PollAssignments(
    grpc::CallbackServerContext* context, const v1::PollAssignmentsRequest* request,
    v1::PollAssignmentsResponse* response) {
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
  Result<bool> cancel = dispatcher_->Report(*request);
  if (cancel.ok()) response->set_cancel(*cancel);
  return Done(context, cancel.status());
}

grpc::ServerUnaryReactor* WorkerService::Complete(grpc::CallbackServerContext* context,
                                                  const v1::CompleteRequest* request,
                                                  v1::CompleteResponse* response) {
  return Done(context, dispatcher_->Complete(*request));
}

}  // namespace fuji::daemon
