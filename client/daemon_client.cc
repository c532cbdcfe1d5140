// gRPC plumbing of the CLI: one authenticated channel, deadlines, and status conversion.
#include "client/daemon_client.h"

#include <algorithm>
#include <cstdlib>

namespace fuji::client {

Status StatusFromGrpc(const grpc::Status& status, const std::string& address, bool channel_was_ready) {
  if (status.ok()) return Status::Ok();
  const std::string message = status.error_message().empty() ? "gRPC code " + std::to_string(status.error_code())
                                                             : status.error_message();
  switch (status.error_code()) {
    case grpc::StatusCode::UNAVAILABLE:
      // fujid answered, but cannot serve the call now (its disk full): its own words.
      if (channel_was_ready && status.error_message().rfind("fujid ", 0) == 0) return Unavailable(message);
      return Unavailable("cannot reach fujid at " + address + ": " + message);
    case grpc::StatusCode::DEADLINE_EXCEEDED:
      if (!channel_was_ready) return Unavailable("cannot reach fujid at " + address + ": " + message);
      return Internal(message);
    case grpc::StatusCode::INVALID_ARGUMENT: return InvalidArgument(message);
    case grpc::StatusCode::NOT_FOUND: return NotFound(message);
    case grpc::StatusCode::FAILED_PRECONDITION: return FailedPrecondition(message);
    case grpc::StatusCode::RESOURCE_EXHAUSTED: return ResourceExhausted(message);
    case grpc::StatusCode::CANCELLED: return Cancelled(message);
    case grpc::StatusCode::UNAUTHENTICATED: return Unauthenticated(message);
    case grpc::StatusCode::PERMISSION_DENIED: return PermissionDenied(message);
    case grpc::StatusCode::ALREADY_EXISTS: return AlreadyExists(message);
    default: return Internal(message);
  }
}

DaemonClient::DaemonClient(const ServerFlags& flags, std::chrono::milliseconds call_timeout)
    : call_timeout_(call_timeout) {
  Result<Connection> connection = ResolveConnection(flags);
  if (!connection.ok()) {
    unusable_ = connection.status();
    connection_.endpoint.address = flags.server;
    return;
  }
  connection_ = std::move(*connection);
  Open();
}

DaemonClient::DaemonClient(Connection connection, std::chrono::milliseconds call_timeout)
    : connection_(std::move(connection)), call_timeout_(call_timeout) {
  Open();
}

void DaemonClient::Open() {
  grpc::ChannelArguments args;
  // A daemon that is down should be reported at once, not after the default 20 s backoff.
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 200);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 1000);
  args.SetMaxReceiveMessageSize(256 << 20);
  Result<std::shared_ptr<grpc::Channel>> channel = rpc::MakeChannel(connection_.endpoint, args);
  if (!channel.ok()) {
    unusable_ = channel.status();
    return;
  }
  channel_ = std::move(*channel);
  stub_ = v1::JobService::NewStub(channel_);
  admin_ = v1::AdminService::NewStub(channel_);
}

void DaemonClient::Prepare(grpc::ClientContext* context) const {
  context->set_deadline(std::chrono::system_clock::now() + call_timeout_);
  rpc::Authorize(context, connection_.token);
}

Status DaemonClient::Convert(const grpc::Status& status) const {
  const std::string& address = connection_.endpoint.address;
  if (std::string handshake = rpc::DescribeHandshakeFailure(status, connection_.endpoint); !handshake.empty()) {
    return Unavailable(handshake);
  }
  if (status.error_code() == grpc::StatusCode::UNAUTHENTICATED) {
    return Unauthenticated("fujid at " + address + " refused the token from " + connection_.token_source + " (" +
                           status.error_message() + "): ask an admin for a new token and run fuji login");
  }
  return StatusFromGrpc(status, address, channel_->GetState(false) == GRPC_CHANNEL_READY);
}

Result<v1::Job> DaemonClient::Submit(const v1::SubmitRequest& request) {
  FUJI_RETURN_IF_ERROR(unusable_);
  grpc::ClientContext context;
  Prepare(&context);
  v1::SubmitResponse response;
  FUJI_RETURN_IF_ERROR(Convert(stub_->Submit(&context, request, &response)));
  return response.job();
}

Result<v1::Job> DaemonClient::GetJob(int64_t id) {
  FUJI_RETURN_IF_ERROR(unusable_);
  grpc::ClientContext context;
  Prepare(&context);
  v1::GetJobRequest request;
  request.set_id(id);
  v1::Job job;
  FUJI_RETURN_IF_ERROR(Convert(stub_->GetJob(&context, request, &job)));
  return job;
}

Result<v1::ListJobsResponse> DaemonClient::ListJobs(const v1::ListJobsRequest& request) {
  FUJI_RETURN_IF_ERROR(unusable_);
  grpc::ClientContext context;
  Prepare(&context);
  v1::ListJobsResponse response;
  FUJI_RETURN_IF_ERROR(Convert(stub_->ListJobs(&context, request, &response)));
  return response;
}

Result<v1::Job> DaemonClient::SetPriority(int64_t id, int32_t priority) {
  FUJI_RETURN_IF_ERROR(unusable_);
  grpc::ClientContext context;
  Prepare(&context);
  v1::SetPriorityRequest request;
  request.set_id(id);
  request.set_priority(priority);
  v1::Job job;
  FUJI_RETURN_IF_ERROR(Convert(stub_->SetPriority(&context, request, &job)));
  return job;
}

Result<v1::Job> DaemonClient::CancelJob(int64_t id) {
  FUJI_RETURN_IF_ERROR(unusable_);
  grpc::ClientContext context;
  Prepare(&context);
  v1::CancelJobRequest request;
  request.set_id(id);
  v1::Job job;
  FUJI_RETURN_IF_ERROR(Convert(stub_->CancelJob(&context, request, &job)));
  return job;
}

Result<std::vector<v1::Timing>> DaemonClient::GetTimings(int64_t id) {
  FUJI_RETURN_IF_ERROR(unusable_);
  grpc::ClientContext context;
  Prepare(&context);
  v1::JobRef request;
  request.set_id(id);
  v1::TimingsResponse response;
  FUJI_RETURN_IF_ERROR(Convert(stub_->GetTimings(&context, request, &response)));
  return std::vector<v1::Timing>(response.timings().begin(), response.timings().end());
}

Result<std::vector<v1::MemorySample>> DaemonClient::GetSamples(int64_t id) {
  FUJI_RETURN_IF_ERROR(unusable_);
  grpc::ClientContext context;
  Prepare(&context);
  v1::JobRef request;
  request.set_id(id);
  v1::SamplesResponse response;
  FUJI_RETURN_IF_ERROR(Convert(stub_->GetSamples(&context, request, &response)));
  return std::vector<v1::MemorySample>(response.samples().begin(), response.samples().end());
}

Result<v1::ResultResponse> DaemonClient::GetResult(int64_t id) {
  FUJI_RETURN_IF_ERROR(unusable_);
  grpc::ClientContext context;
  Prepare(&context);
  v1::JobRef request;
  request.set_id(id);
  v1::ResultResponse response;
  FUJI_RETURN_IF_ERROR(Convert(stub_->GetResult(&context, request, &response)));
  return response;
}

Result<std::vector<v1::LogLine>> DaemonClient::GetLogs(int64_t id, int64_t after_seq) {
  FUJI_RETURN_IF_ERROR(unusable_);
  constexpr int kPage = 1000;
  std::vector<v1::LogLine> lines;
  for (;;) {
    grpc::ClientContext context;
    Prepare(&context);
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
  FUJI_RETURN_IF_ERROR(unusable_);
  constexpr int kPage = 10000;
  std::vector<v1::LossPoint> points;
  v1::GetLossesRequest request;
  request.set_job_id(id);
  request.set_split(split);
  request.set_limit(kPage);
  for (;;) {
    grpc::ClientContext context;
    Prepare(&context);
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
  FUJI_RETURN_IF_ERROR(unusable_);
  grpc::ClientContext context;
  Prepare(&context);
  v1::ListWorkersResponse response;
  FUJI_RETURN_IF_ERROR(Convert(stub_->ListWorkers(&context, v1::ListWorkersRequest(), &response)));
  return std::vector<v1::Worker>(response.workers().begin(), response.workers().end());
}

Status DaemonClient::Watch(int64_t id, int64_t after_log_seq,
                           const std::function<bool(const v1::WatchEvent&)>& on_event, bool tokens) {
  FUJI_RETURN_IF_ERROR(unusable_);
  grpc::ClientContext context;
  rpc::Authorize(&context, connection_.token);
  v1::WatchJobRequest request;
  request.set_id(id);
  request.set_after_log_seq(after_log_seq);
  request.set_tokens(tokens);
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

Status DaemonClient::Backup(const std::function<Status(const v1::BackupChunk&)>& on_chunk) {
  FUJI_RETURN_IF_ERROR(unusable_);
  grpc::ClientContext context;
  rpc::Authorize(&context, connection_.token);
  auto reader = admin_->Backup(&context, v1::BackupRequest());
  v1::BackupChunk chunk;
  Status failed;
  while (reader->Read(&chunk)) {
    failed = on_chunk(chunk);
    if (!failed.ok()) {
      context.TryCancel();
      break;
    }
  }
  const grpc::Status status = reader->Finish();
  FUJI_RETURN_IF_ERROR(failed);
  return Convert(status);
}

Result<v1::HealthResponse> DaemonClient::Health() {
  FUJI_RETURN_IF_ERROR(unusable_);
  grpc::ClientContext context;
  Prepare(&context);
  v1::HealthResponse response;
  FUJI_RETURN_IF_ERROR(Convert(stub_->Health(&context, v1::HealthRequest(), &response)));
  return response;
}

Result<v1::UsageResponse> DaemonClient::Usage(const v1::UsageRequest& request) {
  FUJI_RETURN_IF_ERROR(unusable_);
  grpc::ClientContext context;
  Prepare(&context);
  v1::UsageResponse response;
  FUJI_RETURN_IF_ERROR(Convert(stub_->Usage(&context, request, &response)));
  return response;
}

Result<v1::CreateUserResponse> DaemonClient::CreateUser(const std::string& name, bool admin) {
  FUJI_RETURN_IF_ERROR(unusable_);
  grpc::ClientContext context;
  Prepare(&context);
  v1::CreateUserRequest request;
  request.set_name(name);
  request.set_admin(admin);
  v1::CreateUserResponse response;
  FUJI_RETURN_IF_ERROR(Convert(admin_->CreateUser(&context, request, &response)));
  return response;
}

Result<std::vector<v1::User>> DaemonClient::ListUsers() {
  FUJI_RETURN_IF_ERROR(unusable_);
  grpc::ClientContext context;
  Prepare(&context);
  v1::ListUsersResponse response;
  FUJI_RETURN_IF_ERROR(Convert(admin_->ListUsers(&context, v1::ListUsersRequest(), &response)));
  return std::vector<v1::User>(response.users().begin(), response.users().end());
}

Result<v1::User> DaemonClient::RevokeUser(const std::string& name) {
  FUJI_RETURN_IF_ERROR(unusable_);
  grpc::ClientContext context;
  Prepare(&context);
  v1::RevokeUserRequest request;
  request.set_name(name);
  v1::User user;
  FUJI_RETURN_IF_ERROR(Convert(admin_->RevokeUser(&context, request, &user)));
  return user;
}

Result<v1::CreateJoinTokenResponse> DaemonClient::CreateJoinToken(int64_t ttl_ms) {
  FUJI_RETURN_IF_ERROR(unusable_);
  grpc::ClientContext context;
  Prepare(&context);
  v1::CreateJoinTokenRequest request;
  request.set_ttl_ms(ttl_ms);
  v1::CreateJoinTokenResponse response;
  FUJI_RETURN_IF_ERROR(Convert(admin_->CreateJoinToken(&context, request, &response)));
  return response;
}

Result<std::vector<v1::Agent>> DaemonClient::ListAgents() {
  FUJI_RETURN_IF_ERROR(unusable_);
  grpc::ClientContext context;
  Prepare(&context);
  v1::ListAgentsResponse response;
  FUJI_RETURN_IF_ERROR(Convert(admin_->ListAgents(&context, v1::ListAgentsRequest(), &response)));
  return std::vector<v1::Agent>(response.agents().begin(), response.agents().end());
}

Result<v1::Agent> DaemonClient::RevokeAgent(const std::string& worker_id) {
  FUJI_RETURN_IF_ERROR(unusable_);
  grpc::ClientContext context;
  Prepare(&context);
  v1::RevokeAgentRequest request;
  request.set_worker_id(worker_id);
  v1::Agent agent;
  FUJI_RETURN_IF_ERROR(Convert(admin_->RevokeAgent(&context, request, &agent)));
  return agent;
}

Result<v1::Agent> DaemonClient::DrainAgent(const std::string& worker_id, bool drain, bool requeue) {
  FUJI_RETURN_IF_ERROR(unusable_);
  grpc::ClientContext context;
  Prepare(&context);
  v1::DrainAgentRequest request;
  request.set_worker_id(worker_id);
  request.set_drain(drain);
  request.set_requeue(requeue);
  v1::Agent agent;
  FUJI_RETURN_IF_ERROR(Convert(admin_->DrainAgent(&context, request, &agent)));
  return agent;
}

}  // namespace fuji::client
