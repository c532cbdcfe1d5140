// The agent's one supervisor of a job attempt, for every kind: prepare it (InferLaunch,
// FinetuneLaunch), run its gang while forwarding what the ranks say, sampling memory and heeding
// stop requests, then say how the attempt ended in one Complete.
#include <signal.h>

#include <algorithm>
#include <cstdio>
#include <optional>
#include <string>
#include <utility>

#include "lib/common/json_lines.h"
#include "lib/common/limits.h"
#include "lib/common/proc_stats.h"
#include "lib/common/wall_clock.h"
#include "worker/agent/agent_job.h"
#include "worker/agent/samples.h"
#include "worker/ckpt/zero_checkpoint.h"

namespace fuji::agent {
namespace {

using std::chrono::milliseconds;

void Log(const std::string& line) { std::fprintf(stderr, "fuji-agent: %s\n", line.c_str()); }

}  // namespace

int64_t OomKillsSince(int64_t at_start) {
  const int64_t now = OomKillCount();
  return at_start < 0 || now < 0 ? -1 : now - at_start;
}

// Timing events carry their phase's wall-clock start and end (ms since the epoch, the same host's
// clock); an event with only a duration becomes [now - ms, now]. An event is a rank's own words:
// a field of another type, or a number out of range, reads as absent (IntField, NumberField).
void HandleEvent(const nlohmann::json& e, int32_t rank, int64_t now, fuji::v1::JobReport* part, int32_t attempt) {
  const std::string kind = StringField(e, "event");
  if (kind == "progress") {
    auto* p = part->add_progress();
    p->set_phase(StringField(e, "phase"));
    p->set_done(IntField(e, "done"));
    p->set_total(IntField(e, "total"));
    p->set_rank(rank);
    // A finetune's "train" progress carries rank 0's latest loss and global tokens/s.
    p->set_loss(NumberField(e, "loss"));
    p->set_tokens_per_s(NumberField(e, "tokens_per_s"));
  } else if (kind == "timing") {
    // At most a year: the duration becomes an integer count of ms.
    const double ms = std::clamp(NumberField(e, "ms"), 0.0, 365 * 86400e3);
    auto* t = part->add_timings();
    t->set_attempt(attempt);
    t->set_rank(rank);
    t->set_phase(StringField(e, "phase"));
    if (e.contains("start_ms") && e.contains("end_ms")) {
      t->set_start_ms(IntField(e, "start_ms"));
      t->set_end_ms(IntField(e, "end_ms"));
    } else {
      t->set_start_ms(now - static_cast<int64_t>(ms + 0.5));
      t->set_end_ms(now);
    }
  } else if (kind == "token") {
    // An inference's new tokens (ids and the text they complete), for watchers of the stream.
    auto* t = part->add_tokens();
    t->set_index(IntField(e, "index"));
    t->set_text(limits::CutLine(StringField(e, "text")));
    t->set_attempt(attempt);
    if (auto ids = e.find("ids"); ids != e.end() && ids->is_array()) {
      for (const auto& id : *ids) {
        if (t->ids_size() >= 4096) break;
        if (id.is_number_integer()) t->add_ids(id.get<int32_t>());
      }
    }
  } else if (kind == "loss" && rank == 0) {
    auto* l = part->add_losses();
    l->set_step(IntField(e, "step"));
    l->set_loss(NumberField(e, "loss"));
    l->set_split(StringField(e, "split", "train"));
    l->set_tokens_per_s(NumberField(e, "tokens_per_s"));
    l->set_at_ms(now);
  }
}

launch::GangOptions AttemptGangOptions(const fuji::v1::Assignment& a, const AgentConfig& config) {
  launch::GangOptions options;
  options.executable = config.rank_executable;
  options.op = a.kind();
  options.id = std::to_string(a.job_id());
  options.terminate_grace = milliseconds(config.cancel_grace_ms);
  options.confinement = config.ranks;
  if (a.timeout_ms() > 0) options.deadline = milliseconds(a.timeout_ms());
  // The attempt's fencing token (worker.proto): a fine-tune claims its save directory with it.
  options.env["FUJI_ATTEMPT"] = ckpt::AttemptToken{a.job_id(), a.attempt(), a.lease_epoch()}.ToString();
  return options;
}

void Agent::FinishJob(Job& job, const fuji::v1::CompleteRequest& complete) {
  const std::string name = "job " + std::to_string(job.assignment.job_id());
  Log(name + ": " + (complete.succeeded() ? "succeeded" : complete.failure_kind() + ": " + complete.message()));
  std::lock_guard<std::mutex> lock(mu_);
  job.pids.clear();
  job.completion = complete;
  job.finished = true;
  cv_.notify_all();
}

void Agent::Supervise(const std::shared_ptr<Job>& job) {
  const fuji::v1::Assignment& a = job->assignment;
  fuji::v1::CompleteRequest complete;
  complete.set_worker_id(config_.worker_id);
  complete.set_job_id(a.job_id());
  complete.set_attempt(a.attempt());
  complete.set_lease_epoch(a.lease_epoch());
  auto fail = [&](FailureKind kind, const std::string& message) {
    complete.set_succeeded(false);
    complete.set_failure_kind(std::string(FailureKindName(kind)));
    complete.set_message(message);
    FinishJob(*job, complete);
  };
  auto append = [&](fuji::v1::JobReport part) {
    std::lock_guard<std::mutex> lock(mu_);
    if (!Empty(part)) AppendLocked(*job, std::move(part));
  };

  // Room first: the warm models fujid counted as free for this job are unloaded, and a job that
  // takes its devices whole (a fine-tune) unloads every idle one on them.
  for (const auto& evict : a.evict()) warm_->Evict(evict.key(), evict.device_index());
  if (a.kind() == "finetune") {
    warm_->EvictIdleOn(std::vector<int>(a.device_indices().begin(), a.device_indices().end()));
  }
  // Prepare: what is refused here is the job's fault (bad_input) unless the node's.
  Result<Launch> prepared = a.kind() == "finetune" ? FinetuneLaunch(a, config_, inventory_)
                            : a.kind() == "infer"  ? InferLaunch(a, config_, inventory_, warm_.get())
                                                   : InvalidArgument("unknown job kind '" + a.kind() + "'");
  if (!prepared.ok()) {
    const StatusCode code = prepared.status().code();
    const bool node = code == StatusCode::kInternal || code == StatusCode::kResourceExhausted;
    return fail(node ? FailureKind::kInternal : FailureKind::kBadInput, prepared.status().message());
  }
  Launch& run = *prepared;
  append(std::move(run.prepared));
  launch::Runner& gang = *run.runner;

  // Run: the attempt has started once its ranks are; samples every sample_interval_ms; a stop
  // request ends the gang (its ranks get the cancel grace).
  std::vector<pid_t> pids;
  StopReason stop = StopReason::kNone;
  // Preemption (a drain with requeue): each local rank is signalled once, after it has said
  // something (so its handler is in place: the signal's default would kill it); the ranks agree on
  // the step to stop at among themselves. A "preempted" event says where they stopped.
  std::vector<bool> spoke, signalled;
  std::optional<int64_t> preempted_at;
  int64_t checkpoint_step = 0;
  auto next_sample = Clock::now();
  launch::GangCallbacks callbacks;
  callbacks.started = [&](const std::vector<pid_t>& started) {
    pids = started;
    spoke.assign(pids.size(), false);
    signalled.assign(pids.size(), false);
    fuji::v1::JobReport part;
    part.set_started(true);
    std::lock_guard<std::mutex> lock(mu_);
    job->pids = pids;
    AppendLocked(*job, std::move(part));
  };
  callbacks.tick = [&] {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (job->stop != StopReason::kNone && stop == StopReason::kNone) {
        stop = job->stop;
        gang.Stop();
      }
      if (job->preempt && stop == StopReason::kNone) {
        for (size_t i = 0; i < pids.size(); ++i) {
          if (spoke[i] && !signalled[i]) signalled[i] = ::kill(pids[i], kPreemptSignal) == 0;
        }
      }
    }
    if (Clock::now() < next_sample) return;
    fuji::v1::JobReport part;
    const int64_t now = WallClockMs();
    if (inventory_.nvml) {
      for (auto& s : GpuSamples(*inventory_.nvml, run.devices, pids, config_.worker_id, now)) {
        *part.add_samples() = std::move(s);
      }
    } else {
      *part.add_samples() = HostSample(pids, config_.worker_id, now);
    }
    append(std::move(part));
    next_sample += milliseconds(config_.sample_interval_ms);
    if (next_sample < Clock::now()) next_sample = Clock::now() + milliseconds(config_.sample_interval_ms);
  };
  callbacks.output = [&](const launch::GangOutput& o) {
    fuji::v1::JobReport part;
    const int64_t now = WallClockMs();
    const std::string rank = "rank" + std::to_string(o.rank);
    const int64_t local = static_cast<int64_t>(o.rank) - a.first_rank();
    if (local >= 0 && local < static_cast<int64_t>(spoke.size())) spoke[local] = true;
    if (o.output.kind == launch::ChildOutput::Kind::kEvent && StringField(o.output.event, "event") == "preempted") {
      preempted_at = std::max<int64_t>(0, IntField(o.output.event, "step"));
      checkpoint_step = std::max<int64_t>(0, IntField(o.output.event, "checkpoint_step"));
    }
    if (o.output.kind == launch::ChildOutput::Kind::kLog) {
      auto* log = part.add_logs();
      log->set_at_ms(now);
      log->set_stream(rank + "/stderr");
      log->set_line(limits::CutLine(o.output.line));
    } else {
      try {
        HandleEvent(o.output.event, o.rank, now, &part, a.attempt());
        // The daemon shows the time to train the whole corpus at the rate the progress carries.
        for (auto& p : *part.mutable_progress()) {
          if (p.phase() == "train") p.set_corpus_tokens(run.corpus_tokens);
        }
      } catch (const nlohmann::json::exception& ex) {
        auto* log = part.add_logs();
        log->set_at_ms(now);
        log->set_stream(rank + "/events");
        log->set_line(limits::CutLine("malformed event (" + std::string(ex.what()) + "): " + o.output.event.dump()));
      }
    }
    append(std::move(part));
  };
  Result<nlohmann::json> result = gang.Run(callbacks);

  // How the attempt ended: preempted where the ranks said so; its result; else what it was asked to
  // stop for; else the gang's failure.
  if (preempted_at && stop == StopReason::kNone && result.ok()) {
    complete.set_succeeded(false);
    complete.set_preempted(true);
    complete.set_checkpoint_step(checkpoint_step);
    complete.set_failure_kind("preempted");  // worker.proto: an older fujid retries it as "internal"
    complete.set_message("preempted at step " + std::to_string(*preempted_at) +
                         (checkpoint_step > 0 ? ", checkpointed at step " + std::to_string(checkpoint_step)
                                              : ", without a checkpoint (no --save-to)"));
    return FinishJob(*job, complete);
  }
  if (result.ok()) {
    complete.set_succeeded(true);
    complete.set_result_json(result->dump());
    return FinishJob(*job, complete);
  }
  switch (stop) {
    case StopReason::kCancelled: return fail(FailureKind::kCancelled, "cancelled");
    case StopReason::kUnwanted: return fail(FailureKind::kCancelled, "the daemon no longer wants this job");
    case StopReason::kShutdown: return fail(FailureKind::kInternal, "fuji-agent shut down while the job ran");
    case StopReason::kFenced:
      return fail(FailureKind::kInternal, "stopped by its agent, which lost fujid for a whole lease (self-fencing)");
    case StopReason::kNone: break;
  }
  const launch::GangFailure f = gang.failure().value_or(launch::GangFailure{
      launch::GangFailure::Kind::kStart, -1, FailureKind::kInternal, result.status().message(), {}, ""});
  switch (f.kind) {
    case launch::GangFailure::Kind::kDeadline:
      return fail(FailureKind::kTimeout, "timed out after " + std::to_string(a.timeout_ms()) + " ms");
    case launch::GangFailure::Kind::kCancelled:
      return fail(FailureKind::kCancelled, "cancelled");
    case launch::GangFailure::Kind::kStart:
      return fail(FailureKind::kInternal, f.message);
    case launch::GangFailure::Kind::kRankError:
    case launch::GangFailure::Kind::kRankExit:
      break;
  }
  std::optional<RankError> error;
  if (f.kind == launch::GangFailure::Kind::kRankError) error = RankError{f.reason, f.message};
  Failure failure = ClassifyFailure(error, f.exit, false, f.last_stderr, OomKillsSince(job->oom_kills_at_start));
  // Among peers the gang's message names the rank that failed.
  if (f.kind == launch::GangFailure::Kind::kRankExit && gang.has_peers()) failure.message = f.message;
  complete.set_exit_code(failure.exit_code);
  complete.set_signal(failure.signal);
  fail(failure.kind, failure.message);
}

}  // namespace fuji::agent
