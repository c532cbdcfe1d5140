// JobService: queries, cancel, results and telemetry; Submit is in submit.cc, WatchJob in
// watch_job.cc.
#include "daemon/server/job_service.h"

#include <algorithm>
#include <map>
#include <optional>

#include "daemon/server/grpc_status.h"

namespace fuji::daemon {
namespace {


}  // namespace

JobService::JobService(store::JobStore* store, Dispatcher* dispatcher, EventHub* hub, const NodeRates* rates,
                       const Authenticator* auth, const store::Clock* clock, JobServiceOptions options)
    : store_(store),
      auth_(auth),
      dispatcher_(dispatcher),
      hub_(hub),
      rates_(rates),
      clock_(clock),
      options_(options),
      started_ms_(clock->NowMs()) {}

Result<store::JobRecord> JobService::OwnedJob(const Caller& caller, int64_t id) const {
  Result<store::JobRecord> job = store_->Get(id);
  // Another user's job is as missing as one that never was.
  if (job.ok() && !caller.admin && job->owner != caller.name) return NotFound("job " + std::to_string(id) + " not found");
  return job;
}

v1::Job JobService::View(const store::JobRecord& job, bool count_ahead) const {
  v1::Job out = JobToProto(job);
  if (job.state == store::JobState::kQueued) {
    std::string waiting = dispatcher_->WaitingReason(job.id, count_ahead);
    if (!waiting.empty()) out.set_reason(waiting);
  }
  return out;
}

grpc::ServerUnaryReactor* JobService::GetJob(grpc::CallbackServerContext* context,
                                             const v1::GetJobRequest* request,
                                             v1::Job* response) {
  Result<Caller> caller = auth_->User(*context);
  if (!caller.ok()) return Finish(context, caller.status());
  Result<store::JobRecord> job = OwnedJob(*caller, request->id());
  if (job.ok()) {
    *response = View(*job, /*count_ahead=*/true);
    AddProgress(response);
  }
  return Finish(context, job.status());
}

void JobService::AddProgress(v1::Job* job) const {
  v1::Progress progress = dispatcher_->LatestProgress(job->id());
  if (!progress.phase().empty()) *job->mutable_progress() = std::move(progress);
  if (job->kind() != "finetune") return;
  Result<std::optional<store::Loss>> last = store_->LastLoss(job->id());
  if (!last.ok() || !last->has_value()) return;
  *job->mutable_last_loss() = LossToProto(**last);
}

grpc::ServerUnaryReactor* JobService::ListJobs(grpc::CallbackServerContext* context,
                                               const v1::ListJobsRequest* request,
                                               v1::ListJobsResponse* response) {
  Result<Caller> caller = auth_->User(*context);
  if (!caller.ok()) return Finish(context, caller.status());
  store::ListFilter filter;
  if (request->all() && !caller->admin) {
    return Finish(context, PermissionDenied("only admins list every user's jobs"));
  }
  if (!request->owner().empty() && !caller->admin) {
    return Finish(context, PermissionDenied("only admins list another user's jobs"));
  }
  if (!request->owner().empty()) {
    filter.owner = request->owner();
  } else if (!request->all()) {
    filter.owner = caller->name;
  }
  filter.state = request->state();
  filter.kind = request->kind();
  filter.limit = request->limit();
  filter.page_token = request->page_token();
  if (!filter.state.empty()) {
    Result<store::JobState> state = store::ParseJobState(filter.state);
    if (!state.ok()) return Finish(context, state.status());
  }
  Result<store::JobPage> page = store_->List(filter);
  if (page.ok()) {
    for (const store::JobRecord& job : page->jobs) {
      // The page's rows hold a summary of the spec (what View needs of it), never the spec.
      v1::Job* out = response->add_jobs();
      *out = View(job, /*count_ahead=*/false);
      out->clear_spec_json();
    }
    response->set_next_page_token(page->next_page_token);
  }
  return Finish(context, page.status());
}

grpc::ServerUnaryReactor* JobService::CancelJob(grpc::CallbackServerContext* context,
                                                const v1::CancelJobRequest* request,
                                                v1::Job* response) {
  Result<Caller> caller = auth_->User(*context);
  if (!caller.ok()) return Finish(context, caller.status());
  if (Result<store::JobRecord> owned = OwnedJob(*caller, request->id()); !owned.ok()) {
    return Finish(context, owned.status());
  }
  Result<store::JobRecord> job = dispatcher_->Cancel(request->id());
  if (job.ok()) *response = JobToProto(*job);
  return Finish(context, job.status());
}

grpc::ServerUnaryReactor* JobService::SetPriority(grpc::CallbackServerContext* context,
                                                  const v1::SetPriorityRequest* request,
                                                  v1::Job* response) {
  Result<Caller> caller = auth_->User(*context);
  if (!caller.ok()) return Finish(context, caller.status());
  if (Result<store::JobRecord> owned = OwnedJob(*caller, request->id()); !owned.ok()) {
    return Finish(context, owned.status());
  }
  // The row first: once acknowledged, the order holds across restarts.
  if (Status set = store_->SetPriority(request->id(), request->priority()); !set.ok()) {
    return Finish(context, set);
  }
  Result<store::JobRecord> job = store_->Get(request->id());
  if (!job.ok()) return Finish(context, job.status());
  // The dispatcher's queue takes the new priority (a job placed meanwhile leaves it at the pass).
  if (job->state == store::JobState::kQueued) dispatcher_->Enqueued(*job);
  *response = View(*job, /*count_ahead=*/true);
  return Finish(context, Status::Ok());
}

grpc::ServerUnaryReactor* JobService::GetTimings(grpc::CallbackServerContext* context,
                                                 const v1::JobRef* request,
                                                 v1::TimingsResponse* response) {
  Result<Caller> caller = auth_->User(*context);
  if (!caller.ok()) return Finish(context, caller.status());
  Result<store::JobRecord> job = OwnedJob(*caller, request->id());
  if (!job.ok()) return Finish(context, job.status());
  Result<std::vector<store::Timing>> timings = store_->Timings(request->id());
  if (timings.ok()) {
    for (const store::Timing& t : *timings) {
      v1::Timing* out = response->add_timings();
      out->set_attempt(t.attempt);
      out->set_rank(t.rank);
      out->set_phase(t.phase);
      out->set_start_ms(t.start_ms);
      out->set_end_ms(t.end_ms);
    }
  }
  return Finish(context, timings.status());
}

grpc::ServerUnaryReactor* JobService::GetHistory(grpc::CallbackServerContext* context,
                                                 const v1::JobRef* request,
                                                 v1::HistoryResponse* response) {
  Result<Caller> caller = auth_->User(*context);
  if (!caller.ok()) return Finish(context, caller.status());
  Result<store::JobRecord> job = OwnedJob(*caller, request->id());
  if (!job.ok()) return Finish(context, job.status());
  Result<std::vector<store::JobEvent>> events = store_->Events(request->id());
  if (events.ok()) {
    for (const store::JobEvent& e : *events) {
      v1::StateChange* out = response->add_changes();
      out->set_seq(e.seq);
      out->set_at_ms(e.at_ms);
      if (e.from.has_value()) out->set_from_state(store::JobStateName(*e.from));
      out->set_to_state(store::JobStateName(e.to));
      out->set_message(e.message);
    }
  }
  return Finish(context, events.status());
}

grpc::ServerUnaryReactor* JobService::GetSamples(grpc::CallbackServerContext* context,
                                                 const v1::JobRef* request,
                                                 v1::SamplesResponse* response) {
  Result<Caller> caller = auth_->User(*context);
  if (!caller.ok()) return Finish(context, caller.status());
  Result<store::JobRecord> job = OwnedJob(*caller, request->id());
  if (!job.ok()) return Finish(context, job.status());
  Result<std::vector<store::MemorySample>> samples = store_->Samples(request->id());
  if (samples.ok()) {
    for (const store::MemorySample& s : *samples) {
      v1::MemorySample* out = response->add_samples();
      out->set_at_ms(s.at_ms);
      out->set_worker_id(s.worker_id);
      out->set_device_index(s.device_index);
      out->set_device_name(s.device_name);
      out->set_used_mib(s.used_mib);
      out->set_total_mib(s.total_mib);
      out->set_utilization_pct(s.utilization_pct);
      out->set_process_mib(s.process_mib);
      out->set_host_memory(s.host_memory);
    }
  }
  return Finish(context, samples.status());
}

grpc::ServerUnaryReactor* JobService::GetResult(grpc::CallbackServerContext* context,
                                                const v1::JobRef* request,
                                                v1::ResultResponse* response) {
  Result<Caller> caller = auth_->User(*context);
  if (!caller.ok()) return Finish(context, caller.status());
  Result<store::JobRecord> job = OwnedJob(*caller, request->id());
  if (!job.ok()) return Finish(context, job.status());
  Result<std::vector<store::JobResult>> results = store_->Results(request->id());
  if (!results.ok()) return Finish(context, results.status());
  if (results->empty()) {
    return Finish(context, NotFound("job " + std::to_string(request->id()) + " has no result yet (" +
                                  store::JobStateName(job->state) + ")"));
  }
  response->set_attempt(results->back().attempt);
  response->set_result_json(results->back().result);
  return Finish(context, Status::Ok());
}

grpc::ServerUnaryReactor* JobService::GetLogs(grpc::CallbackServerContext* context,
                                              const v1::LogsRequest* request,
                                              v1::LogsResponse* response) {
  Result<Caller> caller = auth_->User(*context);
  if (!caller.ok()) return Finish(context, caller.status());
  Result<store::JobRecord> job = OwnedJob(*caller, request->id());
  if (!job.ok()) return Finish(context, job.status());
  if (request->limit() < 0 || request->after_seq() < 0) {
    return Finish(context, InvalidArgument("limit and after_seq must not be negative"));
  }
  int limit = request->limit() == 0 ? 1000 : std::min(request->limit(), 10000);
  Result<std::vector<store::LogLine>> lines =
      store_->Logs(request->id(), request->after_seq(), limit);
  if (lines.ok()) {
    for (const store::LogLine& line : *lines) {
      v1::LogLine* out = response->add_lines();
      out->set_seq(line.seq);
      out->set_at_ms(line.at_ms);
      out->set_stream(line.stream);
      out->set_line(line.line);
    }
  }
  return Finish(context, lines.status());
}

grpc::ServerUnaryReactor* JobService::GetLosses(grpc::CallbackServerContext* context,
                                                const v1::GetLossesRequest* request,
                                                v1::GetLossesResponse* response) {
  Result<Caller> caller = auth_->User(*context);
  if (!caller.ok()) return Finish(context, caller.status());
  Result<store::JobRecord> job = OwnedJob(*caller, request->job_id());
  if (!job.ok()) return Finish(context, job.status());
  if (request->limit() < 0) return Finish(context, InvalidArgument("limit must not be negative"));
  store::LossQuery query;
  query.split = request->split();
  if (request->has_after_step()) query.after_step = request->after_step();
  query.limit = request->limit() == 0
                    ? 1000
                    : std::min(request->limit(), store::JobStore::kMaxLossPageSize);
  Result<store::LossPage> page = store_->Losses(request->job_id(), query);
  if (page.ok()) {
    for (const store::Loss& l : page->losses) *response->add_losses() = LossToProto(l);
    response->set_more(page->more);
  }
  return Finish(context, page.status());
}

grpc::ServerUnaryReactor* JobService::ListWorkers(grpc::CallbackServerContext* context,
                                                  const v1::ListWorkersRequest* request,
                                                  v1::ListWorkersResponse* response) {
  Result<Caller> caller = auth_->User(*context);
  if (!caller.ok()) return Finish(context, caller.status());
  Result<std::vector<store::WorkerRecord>> workers = store_->ListWorkers();
  if (!workers.ok()) return Finish(context, workers.status());
  Result<std::vector<store::Assignment>> live = store_->ActiveAssignments();
  if (!live.ok()) return Finish(context, live.status());
  std::map<std::string, std::vector<int64_t>> running;
  for (const store::Assignment& a : *live) running[a.worker_id].push_back(a.job_id);
  // A gang's other members run it too.
  Result<std::vector<store::GangMemberRecord>> gangs = store_->ActiveGangMembers();
  if (!gangs.ok()) return Finish(context, gangs.status());
  for (const store::GangMemberRecord& member : *gangs) {
    if (member.first_rank > 0) running[member.worker_id].push_back(member.job_id);
  }
  Result<std::vector<sched::AgentView>> agents = dispatcher_->CurrentAgents();
  if (!agents.ok()) return Finish(context, agents.status());
  std::map<std::string, const sched::AgentView*> views;
  for (const sched::AgentView& agent : *agents) views[agent.worker_id] = &agent;
  for (const store::WorkerRecord& worker : *workers) {
    v1::Worker* out = response->add_workers();
    out->set_id(worker.id);
    out->set_host(worker.host);
    out->set_state(worker.state);
    out->set_last_heartbeat_ms(worker.last_heartbeat_ms);
    out->set_drained_at_ms(worker.drained_at_ms.value_or(0));
    for (v1::WarmModel& w : dispatcher_->Warm(worker.id)) *out->add_warm() = std::move(w);
    const sched::AgentView* view = views.count(worker.id) ? views[worker.id] : nullptr;
    out->set_host_total_mib(worker.host_memory ? worker.host_memory->total_mib : 0);
    out->set_host_free_mib(view && worker.host_memory ? view->host_free_mib : -1);
    for (const store::DeviceRecord& d : worker.devices) {
      v1::Device* device = out->add_devices();
      device->set_index(d.index);
      device->set_name(d.name);
      device->set_total_mib(d.total_mib);
      device->set_kind(d.kind);
      device->set_free_mib(-1);
      if (view && (d.reading || worker.host_memory)) {
        for (const sched::DeviceView& dv : view->devices) {
          if (dv.index == d.index) device->set_free_mib(dv.free_mib);
        }
      }
    }
    for (int64_t job_id : running[worker.id]) out->add_running_jobs(job_id);
  }
  return Finish(context, Status::Ok());
}

grpc::ServerUnaryReactor* JobService::Health(grpc::CallbackServerContext* context,
                                             const v1::HealthRequest* request,
                                             v1::HealthResponse* response) {
  Result<Caller> caller = auth_->User(*context);
  if (!caller.ok()) return Finish(context, caller.status());
  response->set_user(caller->name);
  response->set_admin(caller->admin);
  response->set_version("0.1.0");
  response->set_uptime_ms(clock_->NowMs() - started_ms_);
  const std::string fault = store_->StorageFault();
  response->set_status(fault.empty() ? "SERVING" : "NOT_SERVING");
  response->set_reason(fault);
  return Finish(context, Status::Ok());
}

grpc::ServerUnaryReactor* JobService::Usage(grpc::CallbackServerContext* context,
                                            const v1::UsageRequest* request,
                                            v1::UsageResponse* response) {
  Result<Caller> caller = auth_->User(*context);
  if (!caller.ok()) return Finish(context, caller.status());
  if (request->all() && !caller->admin) {
    return Finish(context, PermissionDenied("only admins see every user's usage"));
  }
  if (request->since_ms() < 0) return Finish(context, InvalidArgument("since_ms must not be negative"));
  store::UsageQuery query;
  query.since_ms = request->since_ms();
  if (request->by().empty() || request->by() == "user") {
    query.by = store::UsageBy::kUser;
  } else if (request->by() == "model") {
    query.by = store::UsageBy::kModel;
  } else if (request->by() == "kind") {
    query.by = store::UsageBy::kKind;
  } else {
    return Finish(context, InvalidArgument("usage by '" + request->by().substr(0, 32) + "': user, model or kind"));
  }
  if (!request->all()) query.owner = caller->name;
  response->set_since_ms(query.since_ms);
  response->set_until_ms(clock_->NowMs());
  Result<std::vector<store::UsageRow>> rows = store_->Usage(query);
  if (rows.ok()) {
    for (const store::UsageRow& row : *rows) {
      v1::UsageRow* out = response->add_rows();
      out->set_key(row.key);
      out->set_jobs(row.jobs);
      out->set_attempts(row.attempts);
      out->set_device_ms(row.device_ms);
      out->set_device_hours(static_cast<double>(row.device_ms) / 3.6e6);
      out->set_tokens(row.tokens);
    }
  }
  return Finish(context, rows.status());
}

}  // namespace fuji::daemon
