// Conversions at the gRPC edge; see grpc_status.h.
#include "daemon/server/grpc_status.h"

#include <nlohmann/json.hpp>

namespace fuji::daemon {

grpc::Status ToGrpcStatus(const Status& status) {
  grpc::StatusCode code = grpc::StatusCode::INTERNAL;
  switch (status.code()) {
    case StatusCode::kOk: return grpc::Status::OK;
    case StatusCode::kInvalidArgument: code = grpc::StatusCode::INVALID_ARGUMENT; break;
    case StatusCode::kNotFound: code = grpc::StatusCode::NOT_FOUND; break;
    case StatusCode::kDataLoss: code = grpc::StatusCode::DATA_LOSS; break;
    case StatusCode::kFailedPrecondition: code = grpc::StatusCode::FAILED_PRECONDITION; break;
    case StatusCode::kResourceExhausted: code = grpc::StatusCode::RESOURCE_EXHAUSTED; break;
    case StatusCode::kUnavailable: code = grpc::StatusCode::UNAVAILABLE; break;
    case StatusCode::kCancelled: code = grpc::StatusCode::CANCELLED; break;
    case StatusCode::kInternal: code = grpc::StatusCode::INTERNAL; break;
    case StatusCode::kUnauthenticated: code = grpc::StatusCode::UNAUTHENTICATED; break;
    case StatusCode::kPermissionDenied: code = grpc::StatusCode::PERMISSION_DENIED; break;
    case StatusCode::kAlreadyExists: code = grpc::StatusCode::ALREADY_EXISTS; break;
  }
  return grpc::Status(code, status.message());
}

v1::JobState StateToProto(store::JobState state) {
  switch (state) {
    case store::JobState::kQueued: return v1::QUEUED;
    case store::JobState::kAssigned: return v1::ASSIGNED;
    case store::JobState::kRunning: return v1::RUNNING;
    case store::JobState::kSucceeded: return v1::SUCCEEDED;
    case store::JobState::kFailed: return v1::FAILED;
    case store::JobState::kCancelled: return v1::CANCELLED;
    case store::JobState::kRetrying: return v1::RETRYING;
  }
  return v1::JOB_STATE_UNSPECIFIED;
}

std::string DeviceKindOfSpec(const std::string& spec_json) {
  nlohmann::json spec = nlohmann::json::parse(spec_json, nullptr, /*allow_exceptions=*/false);
  if (spec.is_object()) {
    auto it = spec.find("device");
    if (it != spec.end() && it->is_string() && it->get<std::string>().rfind("cuda", 0) == 0) {
      return "cuda";
    }
  }
  return "cpu";
}

int NodesOfSpec(const std::string& spec_json) {
  constexpr int kMaxNodes = 64;
  nlohmann::json spec = nlohmann::json::parse(spec_json, nullptr, /*allow_exceptions=*/false);
  if (!spec.is_object()) return 0;
  auto it = spec.find("nodes");
  if (it == spec.end() || !it->is_number_integer()) return 0;
  const int64_t nodes = it->get<int64_t>();
  return nodes >= 0 && nodes <= kMaxNodes ? static_cast<int>(nodes) : 0;
}

v1::GangMember GangMemberToProto(const store::GangMemberRecord& member) {
  v1::GangMember out;
  out.set_worker_id(member.worker_id);
  out.set_advertise_addr(member.advertise_addr);
  out.set_first_rank(member.first_rank);
  out.set_ranks(static_cast<int32_t>(member.device_indices.size()));
  for (int index : member.device_indices) out.add_device_indices(index);
  return out;
}

v1::LossPoint LossToProto(const store::Loss& loss) {
  v1::LossPoint out;
  out.set_step(loss.step);
  out.set_loss(loss.loss);
  out.set_split(loss.split);
  out.set_tokens_per_s(loss.tokens_per_s);
  out.set_at_ms(loss.at_ms);
  out.set_attempt(loss.attempt);
  return out;
}

v1::Job JobToProto(const store::JobRecord& job) {
  v1::Job out;
  out.set_id(job.id);
  out.set_kind(store::JobKindName(job.kind));
  out.set_state(StateToProto(job.state));
  out.set_priority(static_cast<int32_t>(job.priority));
  out.set_attempts(job.attempts);
  out.set_lease_epoch(job.lease_epoch);
  out.set_max_attempts(job.max_attempts);
  out.set_reason(job.reason);
  out.set_worker_id(job.worker_id);
  out.set_devices(job.devices);
  out.set_device_kind(DeviceKindOfSpec(job.spec));
  out.set_timeout_ms(job.timeout_ms);
  out.set_submitted_at_ms(job.submitted_at_ms);
  out.set_started_at_ms(job.started_at_ms.value_or(0));
  out.set_finished_at_ms(job.finished_at_ms.value_or(0));
  out.set_spec_json(job.spec);
  out.set_plan_json(job.plan);
  out.set_shareable(job.shareable);
  out.set_owner(job.owner);
  for (const store::GangMemberRecord& member : job.gang) *out.add_gang() = GangMemberToProto(member);
  return out;
}

}  // namespace fuji::daemon
