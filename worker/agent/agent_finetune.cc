// The agent's side of a fine-tuning job: prepare (refusing bad input before any rank starts), run
// one rank per assigned device as a gang, forward what the ranks say, and complete once. A retry
// needs nothing special: resume "auto" continues from save_to's latest checkpoint.
#include <atomic>
#include <string>

#include "worker/agent/agent_job.h"
#include "worker/agent/samples.h"
#include "lib/common/wall_clock.h"
#include "worker/launcher/finetune_prepare.h"
#include "worker/launcher/gang.h"

namespace fuji::agent {
using std::chrono::milliseconds;

void Agent::SuperviseFinetune(const std::shared_ptr<Job>& job) {
  const fuji::v1::Assignment& a = job->assignment;
  fuji::v1::CompleteRequest complete;
  complete.set_worker_id(config_.worker_id);
  complete.set_job_id(a.job_id());
  complete.set_attempt(a.attempt());
  auto finish = [&](bool succeeded, FailureKind kind, const std::string& message) {
    FinishJob(*job, &complete, succeeded, kind, message);
  };
  auto append = [&](fuji::v1::JobReport part) {
    std::lock_guard<std::mutex> lock(mu_);
    if (!Empty(part)) AppendLocked(*job, std::move(part));
  };

  nlohmann::json j = nlohmann::json::parse(a.spec_json(), nullptr, false);
  auto parsed = FinetuneSpec::FromJson(j);
  if (!parsed.ok()) return finish(false, FailureKind::kBadInput, parsed.status().message());
  FinetuneSpec spec = std::move(parsed).value();
  std::vector<int> devices(a.device_indices().begin(), a.device_indices().end());
  if (devices.empty()) devices.push_back(0);
  const bool cuda = spec.device == "cuda";
  if (cuda && !inventory_.is_cuda()) return finish(false, FailureKind::kBadInput, "device cuda asked of an agent without GPUs");

  // Everything refusable is refused here, before any rank starts.
  launch::PrepareOptions options;
  options.max_ranks = static_cast<int>(devices.size());
  options.devices_what = "assigned devices";
  const int64_t prepare_start = WallClockMs();
  auto prepared = launch::PrepareFinetune(std::move(spec), options);
  if (!prepared.ok()) {
    const bool bad = prepared.status().code() != StatusCode::kInternal &&
                     prepared.status().code() != StatusCode::kResourceExhausted;
    return finish(false, bad ? FailureKind::kBadInput : FailureKind::kInternal, prepared.status().message());
  }
  {
    fuji::v1::JobReport part;
    part.set_started(true);
    auto* t = part.add_timings();
    t->set_attempt(a.attempt());
    t->set_phase("prepare");
    t->set_start_ms(prepare_start);
    t->set_end_ms(WallClockMs());
    append(std::move(part));
  }

  launch::GangOptions gang_options;
  gang_options.executable = config_.rank_executable;
  gang_options.id = std::to_string(a.job_id());
  gang_options.terminate_grace = milliseconds(config_.cancel_grace_ms);
  gang_options.corpus_tokens = static_cast<int64_t>(prepared->num_tokens);
  if (a.timeout_ms() > 0) gang_options.deadline = milliseconds(a.timeout_ms());
  if (cuda) {
    // Every rank sees the assigned GPUs; rank r takes cuda:(r % count), i.e. devices[r].
    std::string visible;
    for (int d : devices) visible += (visible.empty() ? "" : ",") + std::to_string(d);
    gang_options.env["CUDA_VISIBLE_DEVICES"] = visible;
  }
  launch::Gang gang(prepared->spec, gang_options);

  // A watcher: stop requests and memory samples while the gang runs.
  std::atomic<bool> done{false};
  StopReason stop = StopReason::kNone;
  std::thread watcher([&] {
    auto next_sample = Clock::now();
    while (!done) {
      {
        std::lock_guard<std::mutex> lock(mu_);
        if (job->stop != StopReason::kNone && stop == StopReason::kNone) {
          stop = job->stop;
          gang.Stop();
        }
      }
      const std::vector<pid_t> pids = gang.pids();
      if (!pids.empty()) {
        std::lock_guard<std::mutex> lock(mu_);
        job->pids = pids;
      }
      if (!pids.empty() && Clock::now() >= next_sample) {
        fuji::v1::JobReport part;
        const int64_t now = WallClockMs();
        if (inventory_.nvml) {
          for (auto& s : GpuSamples(*inventory_.nvml, devices, pids, config_.worker_id, now)) *part.add_samples() = std::move(s);
        } else {
          *part.add_samples() = HostSample(pids, config_.worker_id, now);
        }
        append(std::move(part));
        next_sample = Clock::now() + milliseconds(config_.sample_interval_ms);
      }
      std::this_thread::sleep_for(milliseconds(20));
    }
  });
  auto result = gang.Run([&](const launch::GangOutput& o) {
    fuji::v1::JobReport part;
    const int64_t now = WallClockMs();
    if (o.output.kind == launch::ChildOutput::Kind::kLog) {
      auto* log = part.add_logs();
      log->set_at_ms(now);
      log->set_stream("rank" + std::to_string(o.rank) + "/stderr");
      log->set_line(o.output.line);
    } else {
      std::optional<nlohmann::json> ignored_result;
      std::optional<RankError> ignored_error;
      try {
        HandleEvent(o.output.event, o.rank, now, &part, &ignored_result, &ignored_error, a.attempt());
        // The daemon shows the time to train the whole corpus at the rate the progress carries.
        for (auto& p : *part.mutable_progress()) {
          if (p.phase() == "train") p.set_corpus_tokens(gang_options.corpus_tokens);
        }
      } catch (const nlohmann::json::exception& ex) {
        auto* log = part.add_logs();
        log->set_at_ms(now);
        log->set_stream("rank" + std::to_string(o.rank) + "/events");
        log->set_line("malformed event (" + std::string(ex.what()) + "): " + o.output.event.dump());
      }
    }
    append(std::move(part));
  });
  done = true;
  watcher.join();

  if (result.ok()) {
    complete.set_result_json(result->dump());
    return finish(true, FailureKind::kInternal, "");
  }
  const launch::GangFailure f = gang.failure().value_or(launch::GangFailure{
      launch::GangFailure::Kind::kStart, -1, FailureKind::kInternal, result.status().message(), {}, ""});
  switch (f.kind) {
    case launch::GangFailure::Kind::kDeadline:
      return finish(false, FailureKind::kTimeout, "timed out after " + std::to_string(a.timeout_ms()) + " ms");
    case launch::GangFailure::Kind::kCancelled:
      if (stop == StopReason::kShutdown) return finish(false, FailureKind::kInternal, "fuji-agent shut down while the job ran");
      if (stop == StopReason::kTimeout) return finish(false, FailureKind::kTimeout, "timed out");
      return finish(false, FailureKind::kCancelled, stop == StopReason::kUnwanted ? "the daemon no longer wants this job" : "cancelled");
    case launch::GangFailure::Kind::kStart:
      return finish(false, FailureKind::kInternal, f.message);
    case launch::GangFailure::Kind::kRankError:
    case launch::GangFailure::Kind::kRankExit:
      break;
  }
  std::optional<RankError> error;
  if (f.kind == launch::GangFailure::Kind::kRankError) error = RankError{f.reason, f.message};
  Failure failure = ClassifyFailure(error, f.exit, false, f.last_stderr, OomKillsSince(job->oom_kills_at_start));
  if (f.kind == launch::GangFailure::Kind::kRankExit) failure.message = f.message;
  complete.set_exit_code(failure.exit_code);
  complete.set_signal(failure.signal);
  finish(false, failure.kind, failure.message);
}

}  // namespace fuji::agent
