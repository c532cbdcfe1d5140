// JobService: the users' API (submit, query, watch, cancel; results, timings, samples, logs,
// workers), over the job store and the dispatcher.
#pragma once

#include <cstdint>

#include "daemon/server/auth.h"
#include "daemon/server/dispatcher.h"
#include "daemon/server/event_hub.h"
#include "daemon/server/node_rates.h"
#include "daemon/server/notifier.h"
#include "daemon/store/clock.h"
#include "daemon/store/job_store.h"
#include "fuji/v1/jobs.grpc.pb.h"
#include "lib/common/path_policy.h"

namespace fuji::daemon {

struct JobServiceOptions {
  int default_max_attempts = 3;  // when a submit says 0
  // What fujid itself may read of the paths a submit names (the model's config, the data's
  // existence): fujid --allow-read. The agents check every path again against their own roots.
  PathPolicy read_policy;
  // Which hosts a submit's notify_url may name (fujid --notify-allow); none: --notify is refused.
  NotifyPolicy notify_policy;
};

// Thread-safe (gRPC calls it from its threads). store, dispatcher, hub and clock are not owned
// and must outlive the gRPC server that serves this.
class JobService final : public v1::JobService::CallbackService {
 public:
  // Nothing is owned; everything must outlive the service. Submits are planned with `rates`;
  // every call's caller is asked of `auth`.
  JobService(store::JobStore* store, Dispatcher* dispatcher, EventHub* hub, const NodeRates* rates,
             const Authenticator* auth, const store::Clock* clock, JobServiceOptions options);

  grpc::ServerUnaryReactor* Submit(grpc::CallbackServerContext* context,
                                   const v1::SubmitRequest* request,
                                   v1::SubmitResponse* response) override;
  grpc::ServerUnaryReactor* GetJob(grpc::CallbackServerContext* context,
                                   const v1::GetJobRequest* request, v1::Job* response) override;
  grpc::ServerUnaryReactor* ListJobs(grpc::CallbackServerContext* context,
                                     const v1::ListJobsRequest* request,
                                     v1::ListJobsResponse* response) override;
  grpc::ServerUnaryReactor* CancelJob(grpc::CallbackServerContext* context,
                                      const v1::CancelJobRequest* request,
                                      v1::Job* response) override;
  grpc::ServerUnaryReactor* SetPriority(grpc::CallbackServerContext* context,
                                        const v1::SetPriorityRequest* request,
                                        v1::Job* response) override;
  grpc::ServerWriteReactor<v1::WatchEvent>* WatchJob(grpc::CallbackServerContext* context,
                                                     const v1::WatchJobRequest* request) override;
  grpc::ServerUnaryReactor* Usage(grpc::CallbackServerContext* context, const v1::UsageRequest* request,
                                  v1::UsageResponse* response) override;
  grpc::ServerUnaryReactor* GetTimings(grpc::CallbackServerContext* context,
                                       const v1::JobRef* request,
                                       v1::TimingsResponse* response) override;
  grpc::ServerUnaryReactor* GetHistory(grpc::CallbackServerContext* context,
                                       const v1::JobRef* request,
                                       v1::HistoryResponse* response) override;
  grpc::ServerUnaryReactor* GetSamples(grpc::CallbackServerContext* context,
                                       const v1::JobRef* request,
                                       v1::SamplesResponse* response) override;
  grpc::ServerUnaryReactor* GetResult(grpc::CallbackServerContext* context,
                                      const v1::JobRef* request,
                                      v1::ResultResponse* response) override;
  grpc::ServerUnaryReactor* GetLogs(grpc::CallbackServerContext* context,
                                    const v1::LogsRequest* request,
                                    v1::LogsResponse* response) override;
  grpc::ServerUnaryReactor* GetLosses(grpc::CallbackServerContext* context,
                                      const v1::GetLossesRequest* request,
                                      v1::GetLossesResponse* response) override;
  grpc::ServerUnaryReactor* ListWorkers(grpc::CallbackServerContext* context,
                                        const v1::ListWorkersRequest* request,
                                        v1::ListWorkersResponse* response) override;
  grpc::ServerUnaryReactor* Health(grpc::CallbackServerContext* context,
                                   const v1::HealthRequest* request,
                                   v1::HealthResponse* response) override;

 private:
  // The job as users see it: a QUEUED job's reason is the latest pass's waiting reason
  // (count_ahead: see Dispatcher::WaitingReason).
  v1::Job View(const store::JobRecord& job, bool count_ahead) const;
  // The job, if the caller may see it (theirs, or any for an admin); NOT_FOUND otherwise, the
  // same answer as for a job that does not exist.
  Result<store::JobRecord> OwnedJob(const Caller& caller, int64_t id) const;
  // Adds what GetJob and WatchJob show beyond the row: the latest progress, and a finetune's last
  // train loss.
  void AddProgress(v1::Job* job) const;

  store::JobStore* store_;
  const Authenticator* auth_;
  Dispatcher* dispatcher_;
  EventHub* hub_;
  const NodeRates* rates_;
  const store::Clock* clock_;
  const JobServiceOptions options_;
  const int64_t started_ms_;
};

}  // namespace fuji::daemon
