// The CLI's connection to fujid: a gRPC channel to one address, a deadline per call, and gRPC
// statuses turned into fuji Status values whose messages are ready to print.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "client/profile.h"
#include "fuji/v1/admin.grpc.pb.h"
#include "fuji/v1/jobs.grpc.pb.h"
#include "lib/common/status.h"

namespace fuji::client {

// A gRPC status as a fuji Status. Not reaching the daemon at all (UNAVAILABLE, or a deadline
// passed while the channel never became ready) becomes UNAVAILABLE "cannot reach fujid at ADDR:
// ..."; fujid's own UNAVAILABLE (its messages start "fujid ": its disk is full) is kept as it said
// it; otherwise the server's message with INVALID_ARGUMENT, NOT_FOUND and FAILED_PRECONDITION
// kept (exit 2), UNAUTHENTICATED, PERMISSION_DENIED and ALREADY_EXISTS kept, and every other code
// mapped to one that exits 1.
Status StatusFromGrpc(const grpc::Status& status, const std::string& address, bool channel_was_ready);

// One daemon connection, over TLS verified against the cluster CA and with the user's token on
// every call. Not thread-safe: one command uses it from one thread.
class DaemonClient {
 public:
  // Resolves the connection (ResolveConnection) and creates the channel, lazily connected: the
  // first call reports an unreachable daemon. When the connection cannot be resolved (no token,
  // no CA, a broken profile), every call returns that error and sends nothing.
  explicit DaemonClient(const ServerFlags& flags,
                        std::chrono::milliseconds call_timeout = std::chrono::seconds(15));
  // A known connection (`fuji login` checks one before storing it).
  explicit DaemonClient(Connection connection,
                        std::chrono::milliseconds call_timeout = std::chrono::seconds(15));

  const std::string& address() const { return connection_.endpoint.address; }

  Result<v1::Job> Submit(const v1::SubmitRequest& request);
  Result<v1::Job> GetJob(int64_t id);
  Result<v1::ListJobsResponse> ListJobs(const v1::ListJobsRequest& request);
  Result<v1::Job> CancelJob(int64_t id);
  Result<v1::Job> SetPriority(int64_t id, int32_t priority);
  Result<std::vector<v1::Timing>> GetTimings(int64_t id);
  Result<std::vector<v1::MemorySample>> GetSamples(int64_t id);
  Result<v1::ResultResponse> GetResult(int64_t id);
  // All log lines after `after_seq`, fetched page by page.
  Result<std::vector<v1::LogLine>> GetLogs(int64_t id, int64_t after_seq);
  // Every loss point of a finetune ("" for both splits, else "train" or "eval"), page by page.
  Result<std::vector<v1::LossPoint>> GetLosses(int64_t id, const std::string& split = "");
  Result<std::vector<v1::Worker>> ListWorkers();
  // Who the token speaks for.
  Result<v1::HealthResponse> Health();
  // What jobs used (fuji usage): the caller's, or everyone's for an admin with request.all.
  Result<v1::UsageResponse> Usage(const v1::UsageRequest& request);

  // The admin service (an admin's token; anyone else gets PERMISSION_DENIED).
  Result<v1::CreateUserResponse> CreateUser(const std::string& name, bool admin);
  Result<std::vector<v1::User>> ListUsers();
  Result<v1::User> RevokeUser(const std::string& name);
  Result<v1::CreateJoinTokenResponse> CreateJoinToken(int64_t ttl_ms);
  Result<std::vector<v1::Agent>> ListAgents();
  Result<v1::Agent> RevokeAgent(const std::string& worker_id);
  // requeue (with drain): the agent's fine-tunes checkpoint and go back to the queue (admin.proto).
  Result<v1::Agent> DrainAgent(const std::string& worker_id, bool drain, bool requeue = false);
  // Streams a backup of the database (no deadline: a large one takes a while), calling on_chunk
  // for each chunk in order; its error ends the call.
  Status Backup(const std::function<Status(const v1::BackupChunk&)>& on_chunk);

  // Streams WatchJob (no deadline) and calls `on_event` for each event until the daemon ends the
  // stream (the job is terminal) or `on_event` returns false (the call is then cancelled, OK).
  Status Watch(int64_t id, int64_t after_log_seq, const std::function<bool(const v1::WatchEvent&)>& on_event,
               bool tokens = false);

 private:
  void Open();
  // The deadline and the token of one call.
  void Prepare(grpc::ClientContext* context) const;
  // The gRPC status as a Status a person can act on: a failed TLS handshake and a refused token
  // say so and what to do.
  Status Convert(const grpc::Status& status) const;

  Connection connection_;
  Status unusable_;  // why no call can be made, else OK
  std::chrono::milliseconds call_timeout_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::JobService::Stub> stub_;
  std::unique_ptr<v1::AdminService::Stub> admin_;
};

}  // namespace fuji::client
