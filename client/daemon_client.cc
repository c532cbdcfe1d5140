// gRPC plumbing of the CLI: one channel, deadlines, and status conversion.
#include "client/daemon_client.h"

#include <algorithm>
#include <cstdlib>

namespace fuji::client {

std::string ResolveServerAddress(const std::string& flag) {
  if (!flag.empty()) return flag;
  if (const char* env = std::getenv("FUJI_SERVER"); env != nullptr && *env != '\0') return env;
  return kDefaultServer;
}

Status StatusFromGrpc(const grpc::Status& status, const std::string& address, bool channel_was_ready) {
  if (status.ok()) return Status::Ok();
  const std::string message = status.error_message().empty() ? "gRPC code " + std::to_string(status.error_code())
                                                             : status.error_message();
  switch (status.error_code()) {
    case grpc::StatusCode::UNAVAILABLE:
      return Unavailable("cannot reach fujid at " + address + ": " + message);
    case grpc::StatusCode::DEADLINE_EXCEEDED:
      if (!channel_was_ready) return Unavailable("cannot reach fujid at " + address + ": " + message);
      return Internal(message);
    case grpc::StatusCode::INVALID_ARGUMENT: return InvalidArgument(message);
    case grpc::StatusCode::NOT_FOUND: return NotFound(message);
    case grpc::StatusCode::FAILED_PRECONDITION: return FailedPrecondition(message);
    case grpc::StatusCode::RESOURCE_EXHAUSTED: return ResourceExhausted(message);
    case grpc::StatusCode::CANCELLED: return Cancelled(message);
    default: return Internal(message);
  }
}

DaemonClient::DaemonClient(std::string address, std::chrono::milliseconds call_timeout)
    : address_(std::move(address)), call_timeout_(call_timeout) {
  grpc::ChannelArguments args;
  // A daemon that is down should be reported at once, not after the default 20 s backoff.
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 200);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 1000);
  args.SetMaxReceiveMessageSize(256 << 20);
  channel_ = grpc::CreateCustomChannel(address_, grpc::InsecureChannelCredentials(), args);
  stub_ = v1::JobService::NewStub(channel_);
}

void DaemonClient::SetDeadline(grpc::ClientContext* context) const {
  context->set_deadline(std::chrono::system_clock::now() + call_timeout_);
}

Status DaemonClient::Convert(const grpc::Status& status) const {
  return StatusFromGrpc(status, address_, channel_->GetState(false) == GRPC_CHANNEL_READY);
}

Result<v1::Job> DaemonClient::Submit(const v1::SubmitRequest& request) {
  grpc::ClientContext context;
  SetDeadline(&context);
  v1::SubmitResponse response;
  FUJI_RETURN_IF_ERROR(Convert(stub_->Submit(&context, request, &response)));
  return response.job();
}

Result<v1::Job> DaemonClient::GetJob(int64_t id) {
  grpc::ClientContext context;
  SetDeadline(&context);
  v1::GetJobRequest request;
  request.set_id(id);
  v1::Job job;
  FUJI_RETURN_IF_ERROR(Convert(stub_->GetJob(&context, request, &job)));
  return job;
}

Result<v1::ListJobsResponse> DaemonClient::ListJobs(const v1::ListJobsRequest& request) {
  grpc::ClientContext context;
  SetDeadline(&context);
  v1::ListJobsResponse response;
  FUJI_RETURN_IF_ERROR(Convert(stub_->ListJobs(&context, request, &response)));
  return response;
}

Result<v1::Job> DaemonClient::CancelJob(int64_t id) {
  grpc::ClientContext context;
  SetDeadline(&context);
  v1::CancelJobRequest request;
  request.set_id(id);
  v1::Job job;
  FUJI_RETURN_IF_ERROR(Convert(stub_->CancelJob(&context, request, &job)));
  return job;
}

Result<std::vector<v1::Timing>> DaemonClient::GetTimings(int64_t id) {
  grpc::ClientContext context;
  SetDeadline(&context);
  v1::JobRef request;
  request.set_id(id);
  v1::TimingsResponse response;
  FUJI_RETURN_IF_ERROR(Convert(stub_->GetTimings(&context, request, &response)));
  return std::vector<v1::Timing>(response.timings().begin(), response.timings().end());
}

Result<std::vector<v1::MemorySample>> DaemonClient::GetSamples(int64_t id) {
  grpc::ClientContext context;
  SetDeadline(&context);
  v1::JobRef request;
  request.set_id(id);
  v1::SamplesResponse response;
  FUJI_RETURN_IF_ERROR(Convert(stub_->GetSamples(&context, request, &response)));
  return std::vector<v1::MemorySample>(response.samples().begin(), response.samples().end());
}

Result<v1::ResultResponse> DaemonClient::GetResult(int64_t id) {
  grpc::ClientContext context;
  SetDeadline(&context);
  v1::JobRef request;
  request.set_id(id);
  v1::ResultResponse response;
  FUJI_RETURN_IF_ERROR(Convert(stub_->GetResult(&context, request, &response)));
  return response;
}

Result<std::vector<v1::LogLine>> DaemonClient::GetLogs(int64_t id, int64_t after_seq) {
  constexpr int kPage = 1000;
  std::vector<v1::LogLine> lines;
  for (;;) {
    grpc::ClientContext context;
    SetDeadline(&context);
    v1::LogsRequest request;
    request.set_id(id);
    request.set_after_seq(after_seq);
    request.set_limit(kPage);
    v1::LogsResponse response;
    FUJI_RETURN_IF_ERROR(Convert(stub_->GetLogs(&context, request, &response)));
    const int64_t before = after_seq;
    for (const auto& line : response.lines()) {
      after_seq = std::max(after_seq, line.seq());
      lines.push_back(line);
    }
    // A short page is the last; so is a page that does not move forward.
    if (response.lines_size() < kPage || after_seq == before) break;
  }
  return lines;
}

Result<std::vector<v1::LossPoint>> DaemonClient::GetLosses(int64_t id, const std::string& split) {
  constexpr int kPage = 10000;
  std::vector<v1::LossPoint> points;
  v1::GetLossesRequest request;
  request.set_job_id(id);
  request.set_split(split);
  request.set_limit(kPage);
  for (;;) {
    grpc::ClientContext context;
    SetDeadline(&context);
    v1::GetLossesResponse response;
    FUJI_RETURN_IF_ERROR(Convert(stub_->GetLosses(&context, request, &response)));
    points.insert(points.end(), response.losses().begin(), response.losses().end());
    // A page ends at a step boundary: the next starts after its last step. A page that does not
    // move forward ends the walk.
    if (!response.more() || response.losses_size() == 0) break;
    const int64_t last = response.losses(response.losses_size() - 1).step();
    if (request.has_after_step() && last <= request.after_step()) break;
    request.set_after_step(last);
  }
  return points;
}

Result<std::vector<v1::Worker>> DaemonClient::ListWorkers() {
  grpc::ClientContext context;
  SetDeadline(&context);
  v1::ListWorkersResponse response;
  FUJI_RETURN_IF_ERROR(Convert(stub_->ListWorkers(&context, v1::ListWorkersRequest(), &response)));
  return std::vector<v1::Worker>(response.workers().begin(), response.workers().end());
}

Status DaemonClient::Watch(int64_t id, int64_t after_log_seq,
                           const std::function<bool(const v1::WatchEvent&)>& on_event) {
  grpc::ClientContext context;
  v1::WatchJobRequest request;
  request.set_id(id);
  request.set_after_log_seq(after_log_seq);
  auto reader = stub_->WatchJob(&context, request);
  v1::WatchEvent event;
  bool stopped = false;
  while (reader->Read(&event)) {
    if (!on_event(event)) {
      stopped = true;
      context.TryCancel();
      break;
    }
  }
  const grpc::Status status = reader->Finish();
  if (stopped) return Status::Ok();
  return Convert(status);
}

}  // namespace fuji::client
