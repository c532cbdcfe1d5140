// The edge between fuji's values and gRPC's: Status -> grpc::Status, store records -> messages.
#pragma once

#include <string>

#include <grpcpp/grpcpp.h>

#include "daemon/store/records.h"
#include "fuji/v1/jobs.pb.h"
#include "lib/common/status.h"

namespace fuji::daemon {

// INVALID_ARGUMENT, NOT_FOUND, ... with the message unchanged.
grpc::Status ToGrpcStatus(const Status& status);

// Ends a unary callback call with `status`: `return Finish(context, status);`.
inline grpc::ServerUnaryReactor* Finish(grpc::CallbackServerContext* context, const Status& status) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  reactor->Finish(ToGrpcStatus(status));
  return reactor;
}

// The job's proto form. device_kind is derived from the spec ("cpu" unless it asks for cuda).
v1::Job JobToProto(const store::JobRecord& job);
// "cpu" or "cuda", from a spec's "device" field ("cuda", "cuda:N" -> "cuda").
std::string DeviceKindOfSpec(const std::string& spec_json);
// A fine-tune's "nodes" (0 when absent or not a count in 0..64): how many agents its ranks span.
int NodesOfSpec(const std::string& spec_json);
// A gang member's proto form (GangMember).
v1::GangMember GangMemberToProto(const store::GangMemberRecord& member);
v1::JobState StateToProto(store::JobState state);
v1::LossPoint LossToProto(const store::Loss& loss);

}  // namespace fuji::daemon
