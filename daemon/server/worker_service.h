// WorkerService: the agents' API (register, heartbeat, long-poll for assignments, report,
// complete), a thin gRPC layer over the Dispatcher.
#pragma once

#include "daemon/server/auth.h"
#include "daemon/server/dispatcher.h"
#include "daemon/server/node_rates.h"
#include "fuji/v1/worker.grpc.pb.h"

namespace fuji::daemon {

// Thread-safe. dispatcher is not owned and must outlive the gRPC server that serves this.
class WorkerService final : public v1::WorkerService::CallbackService {
 public:
  // dispatcher, rates and auth are not owned and must outlive the service.
  WorkerService(Dispatcher* dispatcher, NodeRates* rates, Authenticator* auth, int64_t lease_ttl_ms);

  // With a join token: the agent's own credential, bound to worker_id.
  grpc::ServerUnaryReactor* Enroll(grpc::CallbackServerContext* context, const v1::EnrollRequest* request,
                                   v1::EnrollResponse* response) override;

  grpc::ServerUnaryReactor* Register(grpc::CallbackServerContext* context,
                                     const v1::RegisterRequest* request,
                                     v1::RegisterResponse* response) override;
  grpc::ServerUnaryReactor* Heartbeat(grpc::CallbackServerContext* context,
                                      const v1::HeartbeatRequest* request,
                                      v1::HeartbeatResponse* response) override;
  // Held open up to wait_ms (at most 30 s) until something is assigned to the worker.
  grpc::ServerUnaryReactor* PollAssignments(grpc::CallbackServerContext* context,
                                            const v1::PollAssignmentsRequest* request,
                                            v1::PollAssignmentsResponse* response) override;
  grpc::ServerUnaryReactor* Report(grpc::CallbackServerContext* context,
                                   const v1::JobReport* request,
                                   v1::ReportResponse* response) override;
  grpc::ServerUnaryReactor* Complete(grpc::CallbackServerContext* context,
                                     const v1::CompleteRequest* request,
                                     v1::CompleteResponse* response) override;

 private:
  Dispatcher* dispatcher_;
  NodeRates* rates_;
  Authenticator* auth_;
  const int64_t lease_ttl_ms_;
};

}  // namespace fuji::daemon
