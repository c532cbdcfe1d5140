// The agent's loops: register/heartbeat, long-poll and report; each job's supervisor is supervisor.cc.
#include "worker/agent/agent.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <optional>

#include <nlohmann/json.hpp>

#include "fuji/v1/worker_contract.h"
#include "worker/agent/agent_job.h"
#include "worker/agent/samples.h"
#include "lib/common/limits.h"
#include "lib/common/proc_stats.h"
#include "lib/common/wall_clock.h"
#include "worker/launcher/node_rates.h"

namespace fuji::agent {
namespace {

using std::chrono::milliseconds;

// How long generated tokens may wait before a report carries them (report_interval_ms is for the
// rest): a stream's latency, traded against one Report per token.
constexpr int64_t kStreamIntervalMs = 15;

void Log(const std::string& line) { std::fprintf(stderr, "fuji-agent: %s\n", line.c_str()); }

std::chrono::system_clock::time_point Deadline(int64_t ms) {
  return std::chrono::system_clock::now() + milliseconds(ms);
}

// Whether a failed call may succeed if sent again as it is. RESOURCE_EXHAUSTED may not: fujid says
// so of a message it will never take (a line or a batch over its limits), and retrying it would
// hold the job's reports and its Complete back forever.
bool Retryable(const grpc::Status& s) {
  return s.error_code() == grpc::StatusCode::UNAVAILABLE || s.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED ||
         s.error_code() == grpc::StatusCode::CANCELLED || s.error_code() == grpc::StatusCode::UNKNOWN ||
         s.error_code() == grpc::StatusCode::INTERNAL;
}

template <typename T>
void KeepLast(google::protobuf::RepeatedPtrField<T>* field, size_t max) {
  const int excess = field->size() - static_cast<int>(max);
  if (excess > 0) field->DeleteSubrange(0, excess);
}

// Moves the oldest entries of `from` to `to`: at most limits::kMaxReportEntries, and no more once
// *bytes reaches limits::kMaxReportBytes (one entry always goes, so a report is never empty).
template <typename T>
void MoveFront(google::protobuf::RepeatedPtrField<T>* from, google::protobuf::RepeatedPtrField<T>* to,
               size_t* bytes) {
  int n = 0;
  while (n < from->size() && n < limits::kMaxReportEntries &&
         (*bytes < limits::kMaxReportBytes || (n == 0 && to->empty()))) {
    *bytes += from->Get(n).ByteSizeLong();
    ++n;
  }
  for (int i = 0; i < n; ++i) *to->Add() = std::move(*from->Mutable(i));
  from->DeleteSubrange(0, n);
}

}  // namespace

fuji::v1::JobReport TakeReport(fuji::v1::JobReport* pending) {
  fuji::v1::JobReport report;
  report.set_started(pending->started());
  pending->set_started(false);
  size_t bytes = 0;
  // Losses and progress are small and bounded where they are buffered; logs, samples and timings
  // are sent in reports of bounded size, oldest first.
  report.mutable_losses()->Swap(pending->mutable_losses());
  report.mutable_progress()->Swap(pending->mutable_progress());
  report.mutable_tokens()->Swap(pending->mutable_tokens());  // bounded by the job's max_new_tokens
  bytes += report.ByteSizeLong();
  MoveFront(pending->mutable_logs(), report.mutable_logs(), &bytes);
  MoveFront(pending->mutable_timings(), report.mutable_timings(), &bytes);
  MoveFront(pending->mutable_samples(), report.mutable_samples(), &bytes);
  return report;
}

bool Empty(const fuji::v1::JobReport& r) {
  return !r.started() && r.progress_size() == 0 && r.logs_size() == 0 && r.timings_size() == 0 &&
         r.samples_size() == 0 && r.losses_size() == 0 && r.tokens_size() == 0;
}

Result<std::shared_ptr<grpc::Channel>> MakeChannel(const rpc::Endpoint& endpoint) {
  grpc::ChannelArguments args;
  // Reconnects start 100 ms apart and back off to the ceiling. GRPC_ARG_MIN_RECONNECT_BACKOFF_MS
  // is left at gRPC's default: it is also the shortest time a connection attempt is given, and at
  // 100 ms no attempt (TCP, then TLS) ever finished on a busy machine after fujid restarted.
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, static_cast<int>(fuji::v1::kAgentReconnectCeilingMs));
  // What fujid may send (a poll answer of limits::kMaxPollBatchBytes) the agent can receive.
  args.SetMaxReceiveMessageSize(limits::kMaxMessageBytes);
  args.SetMaxSendMessageSize(limits::kMaxMessageBytes);
  return rpc::MakeChannel(endpoint, args);
}

Agent::Agent(AgentConfig config, DeviceInventory inventory, std::shared_ptr<grpc::Channel> channel,
             std::string credential)
    : config_(std::move(config)), inventory_(std::move(inventory)), credential_(std::move(credential)),
      stub_(fuji::v1::WorkerService::NewStub(std::move(channel))) {
  WarmPoolOptions warm;
  warm.executable = config_.rank_executable;
  warm.confinement = config_.ranks;
  warm.cuda = inventory_.is_cuda();
  warm.keep_warm = milliseconds(config_.keep_warm_ms);
  warm.terminate_grace = milliseconds(config_.cancel_grace_ms);
  warm_ = std::make_unique<WarmPool>(std::move(warm));
}

Agent::~Agent() {
  Stop();
  std::vector<std::shared_ptr<Job>> jobs;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto& [id, job] : jobs_) jobs.push_back(job);
  }
  for (auto& job : jobs) RequestStop(job->assignment.job_id(), StopReason::kShutdown);
  for (auto& job : jobs) JoinSupervisor(*job);
}

void Agent::JoinSupervisor(Job& job) {
  std::thread supervisor;
  {
    std::lock_guard<std::mutex> lock(mu_);
    supervisor = std::move(job.supervisor);  // whoever takes it joins it
  }
  if (supervisor.joinable() && supervisor.get_id() != std::this_thread::get_id()) supervisor.join();
  if (supervisor.joinable()) supervisor.detach();
}

void Agent::Stop() {
  std::lock_guard<std::mutex> lock(mu_);
  stopping_ = true;
  calibration_stop_ = true;
  if (poll_context_ != nullptr) poll_context_->TryCancel();
  cv_.notify_all();
}

std::vector<pid_t> Agent::RankPids(int64_t job_id) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = jobs_.find(job_id);
  return it == jobs_.end() ? std::vector<pid_t>{} : it->second->pids;
}

bool Agent::SleepFor(int64_t ms) {
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait_for(lock, milliseconds(ms), [&] { return stopping_; });
  return !stopping_;
}

void Agent::MarkUnreachable(const grpc::Status& status, const char* call) {
  std::lock_guard<std::mutex> lock(mu_);
  if (!unreachable_logged_) {
    Log(std::string(call) + " failed (" + status.error_message() + "): retrying; ranks keep running");
    unreachable_logged_ = true;
  }
  registered_ = false;
  cv_.notify_all();
}

// ---------------------------------------------------------------------------------------------
// Run: register and heartbeat on this thread; polling and reporting on their own.

Status Agent::Run() {
  std::thread calibrator([this] { Calibrate(); });
  std::thread poller([this] { PollLoop(); });
  std::thread reporter([this] { ReportLoop(); });
  // Its own thread: the control loop's calls block up to their deadline while fujid is away.
  std::thread fencer([this] {
    while (SleepFor(FenceIfSilent())) {
    }
  });
  ControlLoop();
  if (fencer.joinable()) fencer.join();
  if (poller.joinable()) poller.join();
  if (calibrator.joinable()) calibrator.join();
  // Terminate what still runs; the reporter flushes what they said last, then ends.
  std::vector<std::shared_ptr<Job>> jobs;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto& [id, job] : jobs_) jobs.push_back(job);
  }
  for (auto& job : jobs) RequestStop(job->assignment.job_id(), StopReason::kShutdown);
  for (auto& job : jobs) JoinSupervisor(*job);
  if (reporter.joinable()) reporter.join();
  return Status::Ok();
}

void Agent::Calibrate() {
  if (!config_.calibrate) {
    std::lock_guard<std::mutex> lock(mu_);
    calibrated_ = true;
    cv_.notify_all();
    return;
  }
  std::string executable = config_.rank_executable;
  if (executable.empty()) {
    Result<std::string> found = launch::FindRankExecutable();
    if (!found.ok()) {
      Log("no calibration: " + found.status().message() + "; the planner uses its default rates");
      std::lock_guard<std::mutex> lock(mu_);
      calibrated_ = true;
      cv_.notify_all();
      return;
    }
    executable = *found;
  }
  Result<nlohmann::json> rates =
      launch::MeasureNodeRates(executable, std::chrono::seconds(30), &calibration_stop_, config_.ranks);
  std::lock_guard<std::mutex> lock(mu_);
  calibrated_ = true;
  cv_.notify_all();
  if (!rates.ok()) {
    if (!calibration_stop_) Log("no calibration: " + rates.status().message() + "; the planner uses its default rates");
    return;
  }
  Log("calibrated: " + rates->dump());
  rates_json_ = rates->dump();
}

void Agent::ControlLoop() {
  int64_t backoff_ms = 100;
  for (;;) {
    bool is_registered;
    int64_t interval;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (stopping_) return;
      is_registered = registered_;
      interval = heartbeat_interval_ms_;
    }
    if (!is_registered) {
      if (RegisterOnce().ok()) {
        backoff_ms = 100;
        continue;
      }
      if (!SleepFor(backoff_ms)) return;
      backoff_ms = std::min<int64_t>(backoff_ms * 2, fuji::v1::kAgentReconnectCeilingMs);
      continue;
    }
    if (!SleepFor(interval)) return;
    warm_->Reap();
    (void)HeartbeatOnce();
  }
}

int64_t Agent::FenceIfSilent() {
  std::vector<int64_t> fence;
  int64_t silent_ms = 0, ttl_ms = 0, next_ms = 1000;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (lease_ttl_ms_ <= 0) return next_ms;
    ttl_ms = lease_ttl_ms_;
    silent_ms = std::chrono::duration_cast<milliseconds>(std::chrono::steady_clock::now() - last_contact_).count();
    next_ms = std::max<int64_t>(ttl_ms - silent_ms, 10);
    if (silent_ms < ttl_ms) return next_ms;
    for (const auto& [id, job] : jobs_) {
      if (!job->finished && job->stop == StopReason::kNone) fence.push_back(id);
    }
  }
  for (int64_t id : fence) {
    Log("job " + std::to_string(id) + ": no contact with fujid for " + std::to_string(silent_ms) +
        " ms (its lease is " + std::to_string(ttl_ms) + " ms): stopping its ranks before fujid places it elsewhere");
    RequestStop(id, StopReason::kFenced);
  }
  return 100;
}

std::vector<fuji::v1::RunningJob> Agent::RunningJobsLocked() const {
  std::vector<fuji::v1::RunningJob> running;
  for (const auto& [id, job] : jobs_) {
    if (!job->send_complete) continue;  // being dropped
    fuji::v1::RunningJob r;
    r.set_job_id(id);
    r.set_attempt(job->assignment.attempt());
    r.set_lease_epoch(job->assignment.lease_epoch());
    for (pid_t pid : job->pids) r.add_pids(pid);  // empty: ended, its Complete still to come
    running.push_back(std::move(r));
  }
  // Placements that start once the job's previous attempt here has ended: held, not forgotten.
  for (const auto& [id, assignment] : deferred_) {
    auto it = jobs_.find(id);
    if (it != jobs_.end() && it->second->send_complete) continue;  // the running one is listed
    fuji::v1::RunningJob r;
    r.set_job_id(id);
    r.set_attempt(assignment.attempt());
    r.set_lease_epoch(assignment.lease_epoch());
    running.push_back(std::move(r));
  }
  return running;
}

void Agent::NodeState(google::protobuf::RepeatedPtrField<fuji::v1::RunningJob>* running,
                      google::protobuf::RepeatedPtrField<fuji::v1::MemorySample>* samples,
                      google::protobuf::RepeatedPtrField<fuji::v1::WarmModel>* warm) const {
  // Warm ranks are the node's too: their memory is fuji's in the readings. A rank serving several
  // inference jobs is counted once.
  std::vector<pid_t> pids = warm_->Pids();
  for (auto& w : warm_->Snapshot()) *warm->Add() = std::move(w);
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto& r : RunningJobsLocked()) {
      pids.insert(pids.end(), r.pids().begin(), r.pids().end());
      *running->Add() = std::move(r);
    }
  }
  std::sort(pids.begin(), pids.end());
  pids.erase(std::unique(pids.begin(), pids.end()), pids.end());
  for (auto& s : NodeSamples(inventory_.nvml.get(), inventory_.devices, pids, config_.worker_id, WallClockMs())) {
    *samples->Add() = std::move(s);
  }
}

Status Agent::RegisterOnce() {
  fuji::v1::RegisterRequest request;
  request.set_worker_id(config_.worker_id);
  request.set_host(config_.host);
  request.set_advertise_addr(config_.advertise_addr);
  request.set_gang_port_lo(config_.gang_port_lo);
  request.set_gang_port_hi(config_.gang_port_hi);
  for (const auto& d : inventory_.devices) *request.add_devices() = d;
  NodeState(request.mutable_running(), request.mutable_samples(), request.mutable_warm());
  {
    std::lock_guard<std::mutex> lock(mu_);
    request.set_rates_json(rates_json_);
  }
  grpc::ClientContext context;
  rpc::Authorize(&context, credential_);
  context.set_deadline(Deadline(config_.rpc_timeout_ms));
  // Waits for the connection (driving it) until the deadline, instead of failing at once while
  // the channel is reconnecting: nothing else polls it then.
  context.set_wait_for_ready(true);
  fuji::v1::RegisterResponse response;
  const auto sent = std::chrono::steady_clock::now();
  const grpc::Status s = stub_->Register(&context, request, &response);
  if (!s.ok()) {
    MarkUnreachable(s, "Register");
    return Unavailable("Register: " + s.error_message());
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    registered_ = true;
    unreachable_logged_ = false;
    heartbeat_interval_ms_ = response.heartbeat_interval_ms() > 0 ? response.heartbeat_interval_ms() : 1000;
    lease_ttl_ms_ = response.lease_ttl_ms();
    last_contact_ = sent;
    cv_.notify_all();
  }
  Log("registered as " + config_.worker_id + " with " + std::to_string(request.devices_size()) + " device(s), " +
      std::to_string(request.running_size()) + " running job(s)");
  for (int64_t id : response.stop_job_ids()) RequestStop(id, StopReason::kUnwanted);
  return Status::Ok();
}

Status Agent::HeartbeatOnce() {
  fuji::v1::HeartbeatRequest request;
  request.set_worker_id(config_.worker_id);
  NodeState(request.mutable_running(), request.mutable_samples(), request.mutable_warm());
  {
    std::lock_guard<std::mutex> lock(mu_);
    request.set_rates_json(rates_json_);
  }
  grpc::ClientContext context;
  rpc::Authorize(&context, credential_);
  context.set_deadline(Deadline(config_.rpc_timeout_ms));
  context.set_wait_for_ready(true);  // as Register's
  fuji::v1::HeartbeatResponse response;
  const auto sent = std::chrono::steady_clock::now();
  const grpc::Status s = stub_->Heartbeat(&context, request, &response);
  if (!s.ok()) {
    MarkUnreachable(s, "Heartbeat");
    return Unavailable("Heartbeat: " + s.error_message());
  }
  if (!response.reregister()) {
    std::lock_guard<std::mutex> lock(mu_);
    last_contact_ = sent;
  }
  for (int64_t id : response.cancel_job_ids()) RequestStop(id, StopReason::kCancelled);
  for (int64_t id : response.preempt_job_ids()) RequestPreempt(id);
  if (response.reregister()) {
    std::lock_guard<std::mutex> lock(mu_);
    registered_ = false;
  }
  return Status::Ok();
}

// ---------------------------------------------------------------------------------------------
// Polling for assignments.

void Agent::PollLoop() {
  for (;;) {
    grpc::ClientContext context;
    rpc::Authorize(&context, credential_);
    {
      std::unique_lock<std::mutex> lock(mu_);
      // Work is taken once the node is measured: a job beside the calibration would slow both and
      // skew the rates.
      cv_.wait(lock, [&] { return stopping_ || (registered_ && calibrated_); });
      if (stopping_) return;
      poll_context_ = &context;
    }
    context.set_deadline(Deadline(config_.poll_wait_ms + config_.rpc_timeout_ms));
    fuji::v1::PollAssignmentsRequest request;
    request.set_worker_id(config_.worker_id);
    request.set_wait_ms(config_.poll_wait_ms);
    fuji::v1::PollAssignmentsResponse response;
    const grpc::Status s = stub_->PollAssignments(&context, request, &response);
    {
      std::lock_guard<std::mutex> lock(mu_);
      poll_context_ = nullptr;
      if (stopping_) return;
    }
    if (!s.ok()) {
      if (s.error_code() == grpc::StatusCode::UNAVAILABLE) {
        MarkUnreachable(s, "PollAssignments");
      } else if (s.error_code() != grpc::StatusCode::DEADLINE_EXCEEDED &&
                 s.error_code() != grpc::StatusCode::CANCELLED) {
        // Not a connection that comes back by itself: said once per kind of error, so that a
        // refused poll (a credential revoked, an answer too large) is never silent.
        std::lock_guard<std::mutex> lock(mu_);
        if (s.error_code() != last_poll_error_) {
          Log("PollAssignments refused (" + s.error_message() + "); retrying");
          last_poll_error_ = s.error_code();
        }
      }
      if (!SleepFor(s.error_code() == grpc::StatusCode::UNAVAILABLE ? 200 : 2000)) return;
      continue;
    }
    {
      std::lock_guard<std::mutex> lock(mu_);
      last_poll_error_ = grpc::StatusCode::OK;
    }
    for (const auto& assignment : response.assignments()) StartJob(assignment);
  }
}

void Agent::StartJob(const fuji::v1::Assignment& assignment) {
  std::lock_guard<std::mutex> lock(mu_);
  if (stopping_) return;
  auto it = jobs_.find(assignment.job_id());
  // A placement is known by its fencing token: the same attempt placed again (it went back to the
  // queue unstarted) has a newer lease epoch.
  if (it != jobs_.end() && it->second->assignment.attempt() == assignment.attempt() &&
      it->second->assignment.lease_epoch() == assignment.lease_epoch()) {
    return;  // a repeat
  }
  if (it != jobs_.end() && it->second->finished) {
    deferred_[assignment.job_id()] = assignment;  // the ended attempt's Complete is on its way
    return;
  }
  if (it != jobs_.end()) {
    const fuji::v1::Assignment& old = it->second->assignment;
    if (assignment.attempt() < old.attempt() ||
        (assignment.attempt() == old.attempt() && assignment.lease_epoch() <= old.lease_epoch())) {
      Log("job " + std::to_string(assignment.job_id()) + ": an older placement than the one running here; ignored");
      return;
    }
    // fujid placed the job anew (say a gang whose other agent failed, before this agent heard the
    // cancel): the old attempt is no longer wanted; the new one starts once it has ended.
    Log("job " + std::to_string(assignment.job_id()) + ": attempt " + std::to_string(assignment.attempt()) +
        " placed while attempt " + std::to_string(old.attempt()) + " still ends here; it starts after");
    Job& running = *it->second;
    running.send_complete = false;
    if (!running.finished && running.stop == StopReason::kNone) running.stop = StopReason::kUnwanted;
    deferred_[assignment.job_id()] = assignment;
    return;
  }
  auto job = std::make_shared<Job>();
  job->assignment = assignment;
  job->oom_kills_at_start = OomKillCount();
  jobs_[assignment.job_id()] = job;
  Log("job " + std::to_string(assignment.job_id()) + " attempt " + std::to_string(assignment.attempt()) + ": " +
      assignment.kind());
  job->supervisor = std::thread([this, job] { Supervise(job); });
}

void Agent::RequestStop(int64_t job_id, StopReason why) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = jobs_.find(job_id);
  if (it == jobs_.end()) return;
  Job& job = *it->second;
  if (why == StopReason::kUnwanted) job.send_complete = false;
  if (job.finished) return;  // already ended: its Complete (if wanted) stands
  if (job.stop == StopReason::kNone) job.stop = why;
  if (why == StopReason::kShutdown) job.send_complete = false;
}

void Agent::RequestPreempt(int64_t job_id) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = jobs_.find(job_id);
  if (it == jobs_.end() || it->second->finished || it->second->assignment.kind() != "finetune") return;
  if (!it->second->preempt) Log("job " + std::to_string(job_id) + ": preempted by fujid; checkpointing at the next step");
  it->second->preempt = true;
}

// ---------------------------------------------------------------------------------------------
// Reporting: batches every report_interval_ms per job, kept while the daemon is unreachable.

void Agent::AppendLocked(Job& job, fuji::v1::JobReport part) {
  fuji::v1::JobReport& p = job.pending;
  if (part.started()) p.set_started(true);
  for (auto& x : *part.mutable_progress()) *p.add_progress() = std::move(x);
  for (auto& x : *part.mutable_logs()) *p.add_logs() = std::move(x);
  for (auto& x : *part.mutable_timings()) *p.add_timings() = std::move(x);
  for (auto& x : *part.mutable_samples()) *p.add_samples() = std::move(x);
  for (auto& x : *part.mutable_losses()) *p.add_losses() = std::move(x);
  for (auto& x : *part.mutable_tokens()) *p.add_tokens() = std::move(x);
  KeepLast(p.mutable_progress(), 1000);
  KeepLast(p.mutable_losses(), 100000);  // what one Report may carry (fujid keeps the last 100,000)
  KeepLast(p.mutable_logs(), config_.max_buffered_logs);
  KeepLast(p.mutable_samples(), config_.max_buffered_samples);
  cv_.notify_all();
}

void Agent::ReportLoop() {
  for (;;) {
    bool stopping;
    std::vector<std::shared_ptr<Job>> jobs;
    {
      std::unique_lock<std::mutex> lock(mu_);
      const bool streaming = std::any_of(jobs_.begin(), jobs_.end(),
                                         [](const auto& j) { return j.second->pending.tokens_size() > 0; });
      cv_.wait_for(lock, milliseconds(streaming ? kStreamIntervalMs : 50));
      stopping = stopping_;
      for (auto& [id, job] : jobs_) jobs.push_back(job);
      if (!registered_) {
        if (stopping) return;  // nobody to tell
        continue;
      }
    }
    if (stopping) {
      // Run() joins the supervisors before it joins this thread: wait until all have finished.
      bool all_finished = true;
      {
        std::lock_guard<std::mutex> lock(mu_);
        for (auto& job : jobs) all_finished = all_finished && job->finished;
      }
      if (!all_finished) continue;
      for (auto& job : jobs) FlushJob(job, true);
      return;
    }
    for (auto& job : jobs) FlushJob(job, false);
  }
}

void Agent::FlushJob(const std::shared_ptr<Job>& job, bool final_pass) {
  const int64_t id = job->assignment.job_id();
  fuji::v1::JobReport report;
  bool send_report = false, send_complete = false, forget = false;
  fuji::v1::CompleteRequest complete;
  {
    std::lock_guard<std::mutex> lock(mu_);
    // Generated tokens are a stream someone may be reading: they go out within kStreamIntervalMs.
    const auto since = Clock::now() - job->last_report;
    const bool due = since >= milliseconds(config_.report_interval_ms) ||
                     (job->pending.tokens_size() > 0 && since >= milliseconds(kStreamIntervalMs));
    if (!Empty(job->pending) && (due || job->finished || final_pass)) {
      report = TakeReport(&job->pending);
      // A backlog (after fujid was away) goes out report after report, not one per interval.
      if (Empty(job->pending)) job->last_report = Clock::now();
      send_report = true;
    }
    if (job->finished && !job->send_complete && !send_report) forget = true;
    if (job->finished && job->send_complete && job->completion) {
      complete = *job->completion;
      send_complete = true;
    }
  }
  if (send_report) {
    report.set_worker_id(config_.worker_id);
    report.set_job_id(id);
    report.set_attempt(job->assignment.attempt());
    report.set_lease_epoch(job->assignment.lease_epoch());
    grpc::ClientContext context;
    rpc::Authorize(&context, credential_);
    context.set_deadline(Deadline(config_.rpc_timeout_ms));
    fuji::v1::ReportResponse response;
    const grpc::Status s = stub_->Report(&context, report, &response);
    if (!s.ok() && Retryable(s)) {
      // Put it back in front of what arrived meanwhile and try again later.
      std::lock_guard<std::mutex> lock(mu_);
      fuji::v1::JobReport later = std::move(job->pending);
      job->pending = std::move(report);
      AppendLocked(*job, std::move(later));
      if (s.error_code() == grpc::StatusCode::UNAVAILABLE) registered_ = false;
      return;
    }
    if (!s.ok()) {
      Log("job " + std::to_string(id) + ": Report refused (" + s.error_message() + "); batch dropped");
    } else if (response.cancel()) {
      RequestStop(id, StopReason::kCancelled);
    }
    std::lock_guard<std::mutex> lock(mu_);
    if (job->finished && !Empty(job->pending)) return;  // more to say before Complete
    if (job->finished && !job->send_complete) forget = true;
  }
  if (send_complete) {
    grpc::ClientContext context;
    rpc::Authorize(&context, credential_);
    context.set_deadline(Deadline(config_.rpc_timeout_ms));
    fuji::v1::CompleteResponse response;
    const grpc::Status s = stub_->Complete(&context, complete, &response);
    if (!s.ok() && Retryable(s)) {
      if (s.error_code() == grpc::StatusCode::UNAVAILABLE) {
        std::lock_guard<std::mutex> lock(mu_);
        registered_ = false;
      }
      return;
    }
    if (!s.ok()) Log("job " + std::to_string(id) + ": Complete refused (" + s.error_message() + ")");
    forget = true;
  }
  if (!forget) return;
  std::optional<fuji::v1::Assignment> next;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = jobs_.find(id);
    if (it != jobs_.end() && it->second == job) jobs_.erase(it);
    auto d = deferred_.find(id);
    if (d != deferred_.end() && jobs_.count(id) == 0) {
      next = std::move(d->second);
      deferred_.erase(d);
    }
  }
  JoinSupervisor(*job);
  if (next) StartJob(*next);
}

}  // namespace fuji::agent
