// ReportIngest: agents' reports and completions; see report_ingest.h.
#include "daemon/server/report_ingest.h"

#include <algorithm>
#include <cmath>
#include <utility>

#include <nlohmann/json.hpp>

#include "daemon/server/grpc_status.h"
#include "daemon/server/job_plans.h"
#include "daemon/server/metrics.h"
#include "lib/common/failure_kind.h"
#include "lib/common/log.h"

namespace fuji::daemon {

using store::JobState;

namespace {

// "exit code 3", "killed by signal 9", "cuda_oom: CUDA out of memory. ..."; a kind this daemon
// does not know is shown in the agent's words.
std::string FailureReason(const v1::CompleteRequest& request) {
  const FailureKind kind = ParseFailureKind(request.failure_kind());
  std::string reason;
  if (kind == FailureKind::kExitCode) {
    reason = "exit code " + std::to_string(request.exit_code());
  } else if (kind == FailureKind::kSignal) {
    reason = "killed by signal " + std::to_string(request.signal());
  } else {
    reason = request.failure_kind().empty() ? "internal" : request.failure_kind();
  }
  if (!request.message().empty()) reason += ": " + request.message();
  return reason;
}

// Whether a failed attempt may be retried: bad input and timeouts would fail again anywhere; the
// rest may be the node's fault (an unknown kind parses as kInternal, so it is retried).
bool Retryable(FailureKind kind) {
  switch (kind) {
    case FailureKind::kBadInput:
    case FailureKind::kTimeout:
      return false;
    case FailureKind::kInternal:
    case FailureKind::kExitCode:
    case FailureKind::kSignal:
    case FailureKind::kHostOom:
    case FailureKind::kCudaOom:
    case FailureKind::kCancelled:
    case FailureKind::kCollectiveTimeout:
      return true;
  }
  return true;
}

// The history line of a preempted attempt: who drained it and where the next attempt resumes.
std::string PreemptionReason(const v1::CompleteRequest& request, const std::string& drained_agent) {
  std::string reason = drained_agent.empty()
                           ? "requeued: agent " + request.worker_id() + " stopped it at a step boundary"
                           : "requeued: agent " + drained_agent + " drained";
  if (request.checkpoint_step() > 0) {
    return reason + " (checkpointed at step " + std::to_string(request.checkpoint_step()) + ")";
  }
  return reason + " (no checkpoint: it has no --save-to, so it starts again from the beginning)";
}

}  // namespace

// Why a report or completion is not taken, for fujid's log.
std::string NotLeased(const char* what, const store::JobRecord& job, const std::string& worker_id, int attempt,
                      int64_t lease_epoch) {
  return std::string(what) + " of job " + std::to_string(job.id) + " attempt " + std::to_string(attempt) +
         " (lease epoch " + std::to_string(lease_epoch) + ") from worker " + worker_id +
         " not taken: that attempt is not leased to it";
}

bool HoldsPart(const store::JobRecord& job, const std::string& worker_id) {
  if (job.worker_id == worker_id) return true;
  for (const store::GangMemberRecord& member : job.gang) {
    if (member.attempt == job.attempts && member.worker_id == worker_id) return true;
  }
  return false;
}

std::string RequeueDrainedAgent(const store::JobRecord& job, const std::set<std::string>& requeue_drained) {
  if (job.kind != store::JobKind::kFinetune || requeue_drained.empty()) return "";
  if (requeue_drained.count(job.worker_id) > 0) return job.worker_id;
  for (const store::GangMemberRecord& member : job.gang) {
    if (member.attempt == job.attempts && requeue_drained.count(member.worker_id) > 0) return member.worker_id;
  }
  return "";
}

bool HoldsAttempt(const store::JobRecord& job, const std::string& worker_id, int attempt, int64_t lease_epoch) {
  return (job.state == JobState::kAssigned || job.state == JobState::kRunning) && !worker_id.empty() &&
         HoldsPart(job, worker_id) && job.attempts == attempt && job.lease_epoch == lease_epoch;
}

std::vector<store::MemorySample> SamplesOf(
    const google::protobuf::RepeatedPtrField<v1::MemorySample>& in, const std::string& worker_id,
    std::optional<int64_t> job_id) {
  std::vector<store::MemorySample> samples;
  for (const v1::MemorySample& s : in) {
    store::MemorySample sample;
    sample.job_id = job_id;
    sample.worker_id = worker_id;
    sample.device_index = s.device_index();
    sample.device_name = s.device_name();
    sample.used_mib = s.used_mib();
    sample.total_mib = s.total_mib();
    sample.utilization_pct = s.utilization_pct();
    sample.process_mib = s.process_mib();
    sample.at_ms = s.at_ms();
    sample.host_memory = s.host_memory();
    // fuji_device_utilization_ratio: the latest sample of each device.
    if (!sample.host_memory && sample.device_index >= 0 && sample.utilization_pct >= 0 &&
        sample.utilization_pct <= 100) {
      metrics::Registry::Default().Set("fuji_device_utilization_ratio",
                                       {worker_id, std::to_string(sample.device_index)},
                                       sample.utilization_pct / 100.0);
    }
    samples.push_back(sample);
  }
  return samples;
}

ReportIngest::ReportIngest(store::JobStore* store, const store::Clock* clock, EventHub* hub,
                           Lifecycle* lifecycle)
    : store_(store), clock_(clock), hub_(hub), lifecycle_(lifecycle) {}

Result<bool> ReportIngest::Report(const v1::JobReport& report) {
  const int64_t job_id = report.job_id();
  FUJI_ASSIGN_OR_RETURN(store::JobRecord job, store_->Get(job_id));
  if (!HoldsAttempt(job, report.worker_id(), report.attempt(), report.lease_epoch())) {
    // Not this run: the agent is told to stop it, and nothing of the report is kept.
    log::Warn(NotLeased("report", job, report.worker_id(), report.attempt(), report.lease_epoch()));
    return true;
  }
  if (report.started() && job.state == JobState::kAssigned) {
    lifecycle_->Move(job_id, JobState::kAssigned, JobState::kRunning, "");
  }
  if (report.logs_size() > 0) {
    std::vector<store::LogLine> lines;
    for (const v1::LogLine& line : report.logs()) {
      lines.push_back({job_id, 0, line.at_ms(), line.stream(), line.line()});
    }
    FUJI_RETURN_IF_ERROR(AppendLogs(job_id, lines));
  }
  if (report.timings_size() > 0) {
    std::vector<store::Timing> timings;
    for (const v1::Timing& t : report.timings()) {
      timings.push_back({job_id, report.attempt(), t.rank(), t.phase(), t.start_ms(), t.end_ms()});
    }
    FUJI_RETURN_IF_ERROR(store_->RecordTimings(timings));
  }
  if (report.samples_size() > 0) {
    FUJI_RETURN_IF_ERROR(
        store_->InsertSamples(SamplesOf(report.samples(), report.worker_id(), job_id)));
  }
  std::string dropped;
  std::vector<store::Loss> losses = AcceptLosses(report, &dropped);
  if (!dropped.empty()) {
    FUJI_RETURN_IF_ERROR(AppendLogs(job_id, {{job_id, 0, clock_->NowMs(), "fujid", dropped}}));
  }
  FUJI_RETURN_IF_ERROR(store_->RecordLosses(losses));
  if (report.tokens_size() > 0) {
    // In order, each run once: a report the agent sent again (its answer was lost) repeats runs.
    std::vector<v1::TokenDelta> fresh;
    {
      std::lock_guard<std::mutex> lock(mu_);
      TokenLog& log = tokens_[job_id];
      if (log.attempt != report.attempt()) log = TokenLog{report.attempt(), {}, 0, 0};
      for (const v1::TokenDelta& run : report.tokens()) {
        if (run.index() != log.next_index || run.ids_size() == 0) continue;
        log.next_index += run.ids_size();
        v1::TokenDelta& kept = fresh.emplace_back(run);
        kept.set_attempt(report.attempt());
        if (log.runs.size() < kMaxTokenRuns && log.bytes + run.text().size() <= kMaxTokenBytes) {
          log.bytes += run.text().size();
          log.runs.push_back(kept);
        }
      }
    }
    for (v1::TokenDelta& run : fresh) {
      EventHub::Event event;
      *event.event.mutable_tokens() = std::move(run);
      hub_->Publish(job_id, event);
    }
  }
  std::vector<v1::Progress> progress = TakeProgress(report, job, losses);
  if (!progress.empty() && hub_->HasSubscribers(job_id)) {
    Result<store::JobRecord> now = store_->Get(job_id);
    for (const v1::Progress& p : progress) {
      EventHub::Event event;
      if (now.ok()) *event.event.mutable_job() = JobToProto(*now);
      *event.event.mutable_progress() = p;
      hub_->Publish(job_id, event);
    }
  }
  return lifecycle_->CancelRequested(job_id);
}

std::vector<store::Loss> ReportIngest::AcceptLosses(const v1::JobReport& report,
                                                    std::string* dropped) const {
  const int64_t now_ms = clock_->NowMs();
  // Only the last points when there are too many: the newest are what a watcher wants.
  const int total = report.losses_size();
  const int first = std::max(0, total - static_cast<int>(store::JobStore::kMaxLossesPerCall));
  std::vector<store::Loss> losses;
  losses.reserve(total - first);
  int refused = 0;
  std::string first_reason;
  for (int i = first; i < total; ++i) {
    const v1::LossPoint& point = report.losses(i);
    store::Loss l;
    l.job_id = report.job_id();
    l.attempt = report.attempt();
    l.step = point.step();
    l.split = point.split().empty() ? "train" : point.split();
    l.loss = point.loss();
    l.tokens_per_s =
        std::isfinite(point.tokens_per_s()) && point.tokens_per_s() > 0 ? point.tokens_per_s() : 0;
    l.at_ms = point.at_ms() > 0 ? point.at_ms() : now_ms;
    if (std::string why = store::JobStore::CheckLoss(l); !why.empty()) {
      if (refused++ == 0) first_reason = why;
      continue;
    }
    losses.push_back(std::move(l));
  }
  if (first > 0 || refused > 0) {
    *dropped = "dropped " + std::to_string(first + refused) + " of " + std::to_string(total) +
               " reported loss points";
    if (first > 0) {
      *dropped += " (" + std::to_string(first) + " beyond the last " +
                  std::to_string(store::JobStore::kMaxLossesPerCall) + " of one report)";
    }
    if (refused > 0) *dropped += " (" + std::to_string(refused) + " invalid: " + first_reason + ")";
  }
  return losses;
}

std::vector<v1::Progress> ReportIngest::TakeProgress(const v1::JobReport& report,
                                                     const store::JobRecord& job,
                                                     const std::vector<store::Loss>& losses) {
  const int64_t now_ms = clock_->NowMs();
  std::vector<v1::Progress> progress(report.progress().begin(), report.progress().end());
  const bool has_train = std::any_of(progress.begin(), progress.end(),
                                     [](const v1::Progress& p) { return p.phase() == "train"; });
  const store::Loss* latest = nullptr;
  for (const store::Loss& l : losses) {
    if (l.split == "train" && (!latest || l.step >= latest->step)) latest = &l;
  }
  if (!has_train && latest != nullptr) {
    v1::Progress p;
    p.set_phase("train");
    p.set_done(latest->step);
    nlohmann::json spec = nlohmann::json::parse(job.spec, nullptr, /*allow_exceptions=*/false);
    if (spec.is_object() && spec.contains("steps") && spec["steps"].is_number_integer()) {
      p.set_total(spec["steps"].get<int64_t>());
    }
    p.set_loss(latest->loss);
    p.set_tokens_per_s(latest->tokens_per_s);
    p.set_at_ms(latest->at_ms);
    progress.push_back(std::move(p));
  }
  for (v1::Progress& p : progress) {
    // An agent that passes on only done/total: the loss and rate come from the report's losses.
    if (p.phase() == "train" && p.loss() == 0 && latest != nullptr && latest->step <= p.done()) {
      p.set_loss(latest->loss);
      if (p.tokens_per_s() == 0) p.set_tokens_per_s(latest->tokens_per_s);
    }
    if (p.at_ms() <= 0) p.set_at_ms(now_ms);
    if (!std::isfinite(p.tokens_per_s()) || p.tokens_per_s() < 0) p.set_tokens_per_s(0);
  }
  if (!progress.empty()) {
    std::lock_guard<std::mutex> lock(mu_);
    // A train progress made from losses alone keeps the corpus size the agent reported before.
    auto before = progress_.find(report.job_id());
    if (before != progress_.end() && progress.back().phase() == "train" &&
        progress.back().corpus_tokens() == 0) {
      progress.back().set_corpus_tokens(before->second.corpus_tokens());
    }
    progress_[report.job_id()] = progress.back();
  }
  return progress;
}

v1::Progress ReportIngest::LatestProgress(int64_t job_id) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = progress_.find(job_id);
  return it == progress_.end() ? v1::Progress() : it->second;
}

void ReportIngest::Forget(int64_t job_id) {
  std::lock_guard<std::mutex> lock(mu_);
  progress_.erase(job_id);
  tokens_.erase(job_id);
}

std::vector<v1::TokenDelta> ReportIngest::Tokens(int64_t job_id) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = tokens_.find(job_id);
  return it == tokens_.end() ? std::vector<v1::TokenDelta>() : it->second.runs;
}

Status ReportIngest::AppendLogs(int64_t job_id, const std::vector<store::LogLine>& lines) {
  FUJI_RETURN_IF_ERROR(store_->AppendLogs(job_id, lines));
  EventHub::Event event;
  event.logs_appended = true;
  hub_->Publish(job_id, event);
  return Status::Ok();
}

Status ReportIngest::Complete(const v1::CompleteRequest& request) {
  const int64_t job_id = request.job_id();
  FUJI_ASSIGN_OR_RETURN(store::JobRecord job, store_->Get(job_id));
  // A completion for an attempt that is no longer current (requeued, cancelled, sent twice) is
  // answered OK and changes nothing; one for a job another worker holds now is refused.
  if (!HoldsAttempt(job, request.worker_id(), request.attempt(), request.lease_epoch())) {
    const std::string refusal =
        NotLeased("completion", job, request.worker_id(), request.attempt(), request.lease_epoch());
    log::Warn(refusal);
    if (!job.worker_id.empty() && !HoldsPart(job, request.worker_id())) return FailedPrecondition(refusal);
    return Status::Ok();
  }
  if (request.succeeded() && job.worker_id != request.worker_id()) {
    // A gang's member other than rank 0's agent: its part is done; the job's result and its
    // success are rank 0's.
    return store_->ReleaseGangMember(job_id, request.attempt(), request.worker_id());
  }
  if (request.succeeded()) {
    if (job.state == JobState::kAssigned) {
      // It finished before its first report arrived: it did run.
      if (lifecycle_->Move(job_id, JobState::kAssigned, JobState::kRunning, "")) {
        job.state = JobState::kRunning;
      }
    }
    Status saved = store_->SaveResult(job_id, request.attempt(), request.result_json());
    if (!saved.ok() && saved.code() != StatusCode::kFailedPrecondition) return saved;
    if (!lifecycle_->Move(job_id, job.state, JobState::kSucceeded, "")) FUJI_RETURN_IF_ERROR(Unrecorded(job));
    lifecycle_->Ended(job_id);
    return Status::Ok();
  }
  if (request.preempted()) {
    // Every member's ranks stopped at the same step: a member's part is over, and rank 0's
    // agent's completion queues the job again.
    if (job.worker_id != request.worker_id()) {
      return store_->ReleaseGangMember(job_id, request.attempt(), request.worker_id());
    }
    Result<std::set<std::string>> drained = store_->RequeueDrainedWorkers();
    lifecycle_->Preempted(job, PreemptionReason(request, drained.ok() ? RequeueDrainedAgent(job, *drained) : ""));
    return Unrecorded(job);
  }
  const FailureKind kind = ParseFailureKind(request.failure_kind());
  if (kind == FailureKind::kCancelled) {
    if (!lifecycle_->CancelRequested(job_id)) {
      // The agent stopped it because the daemon said this run was not current: nobody asked
      // for a cancel, so the job goes on elsewhere.
      lifecycle_->Abandoned(job, "agent " + request.worker_id() + " stopped it");
      return Status::Ok();
    }
    if (!lifecycle_->Move(job_id, job.state, JobState::kCancelled, "cancelled by request")) {
      FUJI_RETURN_IF_ERROR(Unrecorded(job));
    }
    lifecycle_->Ended(job_id);
    return Status::Ok();
  }
  // Out of memory with the plan it was given: the retry chooses among the plans that need less
  // of the memory that ran out (the planner under-predicted this one), and with none left the
  // job fails rather than run out again.
  if ((kind == FailureKind::kCudaOom || kind == FailureKind::kHostOom) && !job.plan.empty() &&
      !lifecycle_->CancelRequested(job_id)) {
    const std::string narrowed = PlansAfterOom(job.plans, job.plan, kind == FailureKind::kCudaOom);
    if (narrowed.empty()) {
      lifecycle_->EndAttempt(job,
                             FailureReason(request) + "; no plan needs less memory than this one",
                             /*retryable=*/false);
      return Unrecorded(job);
    }
    if (narrowed != job.plans) FUJI_RETURN_IF_ERROR(store_->SetPlans(job_id, narrowed));
  }
  lifecycle_->EndAttempt(job, FailureReason(request), Retryable(kind));
  return Unrecorded(job);
}

Status ReportIngest::Unrecorded(const store::JobRecord& job) {
  Result<store::JobRecord> now = store_->Get(job.id);
  if (!now.ok() || now->state != job.state || now->lease_epoch != job.lease_epoch) return Status::Ok();
  const std::string fault = store_->StorageFault();
  if (fault.empty()) return Status::Ok();
  return Unavailable("fujid could not record the end of job " + std::to_string(job.id) + " (" + fault +
                     "); send it again");
}

}  // namespace fuji::daemon
