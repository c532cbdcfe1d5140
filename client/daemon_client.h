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

#include "fuji/v1/jobs.grpc.pb.h"
#include "lib/common/status.h"

namespace fuji::client {

inline constexpr char kDefaultServer[] = "127.0.0.1:7070";

// --server if given, else $FUJI_SERVER, else 127.0.0.1:7070.
std::string ResolveServerAddress(const std::string& flag);

// A gRPC status as a fuji Status. Not reaching the daemon at all (UNAVAILABLE, or a deadline
// passed while the channel never became ready) becomes UNAVAILABLE "cannot reach fujid at ADDR:
// ..."; otherwise the server's message with INVALID_ARGUMENT, NOT_FOUND and FAILED_PRECONDITION
// kept (exit 2) and every other code mapped to one that exits 1.
Status StatusFromGrpc(const grpc::Status& status, const std::string& address, bool channel_was_ready);

// One daemon connection. Not thread-safe: one command uses it from one thread.
class DaemonClient {
 public:
  // Creates the channel (lazily connected: the first call reports an unreachable daemon).
  explicit DaemonClient(std::string address,
                        std::chrono::milliseconds call_timeout = std::chrono::seconds(15));

  const std::string& address() const { return address_; }

  Result<v1::Job> Submit(const v1::SubmitRequest& request);
  Result<v1::Job> GetJob(int64_t id);
  Result<v1::ListJobsResponse> ListJobs(const v1::ListJobsRequest& request);
  Result<v1::Job> CancelJob(int64_t id);
  Result<std::vector<v1::Timing>> GetTimings(int64_t id);
  Result<std::vector<v1::MemorySample>> GetSamples(int64_t id);
  Result<v1::ResultResponse> GetResult(int64_t id);
  // All log lines after `after_seq`, fetched page by page.
  Result<std::vector<v1::LogLine>> GetLogs(int64_t id, int64_t after_seq);
  // Every loss point of a finetune ("" for both splits, else "train" or "eval"), page by page.
  Result<std::vector<v1::LossPoint>> GetLosses(int64_t id, const std::string& split = "");
  Result<std::vector<v1::Worker>> ListWorkers();

  // Streams WatchJob (no deadline) and calls `on_event` for each event until the daemon ends the
  // stream (the job is terminal) or `on_event` returns false (the call is then cancelled, OK).
  Status Watch(int64_t id, int64_t after_log_seq, const std::function<bool(const v1::WatchEvent&)>& on_event);

 private:
  void SetDeadline(grpc::ClientContext* context) const;
  Status Convert(const grpc::Status& status) const;

  std::string address_;
  std::chrono::milliseconds call_timeout_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::JobService::Stub> stub_;
};

}  // namespace fuji::client
