// The agent: registers this node's devices with fujid, long-polls for assignments, runs each job's
// ranks through the launcher, forwards what they do in batched Reports, samples memory, and ends
// every attempt with exactly one Complete -- across daemon restarts, which it rides out by
// retrying with backoff while its ranks keep running and their reports wait in a bounded buffer.
//
// Threads: Run()'s caller registers and heartbeats (and unloads warm models idle past
// --keep-warm); one thread long-polls; one thread sends
// Reports and Completes; one thread fences (stops the jobs once fujid has been away for a lease);
// one supervisor thread per running job owns that job's rank processes.
// Everything they share sits behind one mutex.
#pragma once

#include <grpcpp/grpcpp.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <csignal>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "fuji/v1/worker.grpc.pb.h"
#include "worker/agent/agent_config.h"
#include "worker/agent/devices.h"
#include "worker/agent/warm_pool.h"
#include "lib/common/status.h"
#include "lib/rpc/connection.h"

namespace fuji::agent {

// A channel to fujid that reconnects quickly (100 ms, backing off to v1::kAgentReconnectCeilingMs)
// after the daemon restarts.
Result<std::shared_ptr<grpc::Channel>> MakeChannel(const rpc::Endpoint& endpoint);

class Agent {
 public:
  // Every call carries `credential` (enroll.h).
  Agent(AgentConfig config, DeviceInventory inventory, std::shared_ptr<grpc::Channel> channel,
        std::string credential);
  // Stops and joins everything still running.
  ~Agent();
  Agent(const Agent&) = delete;
  Agent& operator=(const Agent&) = delete;

  // Blocks until Stop(): registers (retrying while the daemon is unreachable), heartbeats, polls
  // and supervises. On stop, polling ends, running ranks are terminated (their jobs get no
  // Complete: the daemon's lease runs out and it requeues them) and pending reports are flushed.
  Status Run();
  // Thread-safe; returns at once. Not async-signal-safe: call it from a signal-waiting thread.
  void Stop();

  // Thread-safe: the pids of a running job's ranks (empty once they ended or for an unknown job).
  std::vector<pid_t> RankPids(int64_t job_id) const;

 private:
  struct Job;
  // kFenced: the agent lost fujid for a whole lease and stops the job itself (FenceIfSilent).
  enum class StopReason { kNone, kCancelled, kUnwanted, kShutdown, kFenced };

  void ControlLoop();
  // Measures the node's rates with a fuji-rank once (launch::MeasureNodeRates) into rates_json_,
  // which Register and Heartbeat carry from then on; assignments are polled only after it.
  void Calibrate();
  Status RegisterOnce();
  Status HeartbeatOnce();
  void PollLoop();
  void ReportLoop();
  void FlushJob(const std::shared_ptr<Job>& job, bool final_pass);
  void StartJob(const fuji::v1::Assignment& assignment);
  // Runs one attempt on its supervisor thread, any kind (supervisor.cc): prepares it as its kind
  // says, runs its ranks as a launch::Gang, and records its Complete.
  void Supervise(const std::shared_ptr<Job>& job);
  // Records a job's Complete (its result, or its failure kind and message) and logs it.
  void FinishJob(Job& job, const fuji::v1::CompleteRequest& complete);
  void JoinSupervisor(Job& job);
  // Asks a job's supervisor to end its ranks; kUnwanted and kShutdown send no Complete.
  void RequestStop(int64_t job_id, StopReason why);
  // The signal that asks a fine-tuning rank to checkpoint at its next step boundary and stop
  // (fuji-rank's protocol, worker/rank/rank_service.h).
  static constexpr int kPreemptSignal = SIGUSR1;
  // Asks a fine-tune's ranks to checkpoint at their next step boundary and stop (fujid's
  // HeartbeatResponse.preempt_job_ids, a drain with requeue): the supervisor signals each rank
  // that has started speaking with kPreemptSignal, and the attempt ends as preempted. Idempotent;
  // ignored for an inference job, which runs to its end.
  void RequestPreempt(int64_t job_id);
  std::vector<fuji::v1::RunningJob> RunningJobsLocked() const;
  // What Register and Heartbeat tell the daemon: the running jobs, the node's memory now
  // (NodeSamples over every rank's pid) and the warm models. Takes mu_.
  void NodeState(google::protobuf::RepeatedPtrField<fuji::v1::RunningJob>* running,
                 google::protobuf::RepeatedPtrField<fuji::v1::MemorySample>* samples,
                 google::protobuf::RepeatedPtrField<fuji::v1::WarmModel>* warm) const;
  void AppendLocked(Job& job, fuji::v1::JobReport part);
  void MarkUnreachable(const grpc::Status& status, const char* call);
  // Self-fencing: once no Register or Heartbeat has succeeded for the lease fujid gave (counted
  // from when the last successful one was sent, so never later than fujid counts it), fujid may
  // place the agent's jobs elsewhere after its margin (v1::kFenceMarginMs): every running job is
  // stopped here first. Returns how long until the next check is due (ms).
  int64_t FenceIfSilent();
  // Waits on cv_ up to ms or until stopping; returns false once stopping.
  bool SleepFor(int64_t ms);

  const AgentConfig config_;
  const DeviceInventory inventory_;
  const std::string credential_;
  std::unique_ptr<fuji::v1::WorkerService::Stub> stub_;

  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool stopping_ = false;
  bool registered_ = false;
  bool unreachable_logged_ = false;
  int64_t heartbeat_interval_ms_ = 1000;
  int64_t lease_ttl_ms_ = 0;               // fujid's lease; 0 until the first registration
  std::chrono::steady_clock::time_point last_contact_{};  // sending of the last successful Register/Heartbeat
  grpc::StatusCode last_poll_error_ = grpc::StatusCode::OK;  // said once until a poll succeeds
  std::string rates_json_;                 // the node's measured rates; "" until measured
  bool calibrated_ = false;                // measured, or given up: assignments are polled from then
  std::atomic<bool> calibration_stop_{false};
  grpc::ClientContext* poll_context_ = nullptr;  // the long-poll in flight, cancelled by Stop()
  std::map<int64_t, std::shared_ptr<Job>> jobs_;  // running, or finished with reports/Complete to send
  // A job's next attempt that came while its ended attempt was still here (the daemon can hand it
  // out before the Complete's answer arrives): started once that one is forgotten.
  std::map<int64_t, fuji::v1::Assignment> deferred_;
  // The ranks that keep models loaded between inference jobs; every inference runs in one.
  std::unique_ptr<WarmPool> warm_;
};

}  // namespace fuji::agent
