// The job commands that talk to fujid: `submit infer|finetune`, `jobs`, `show`, `watch`,
// `cancel` and `priority`.
#include <unistd.h>

#include <functional>
#include <memory>

#include "client/cli.h"
#include "client/daemon_client.h"
#include "client/daemon_commands.h"
#include "client/finetune_flags.h"
#include "client/format_jobs.h"
#include "client/format_text.h"
#include "client/infer_flags.h"
#include "client/job_watch.h"
#include "client/local_plan.h"
#include "lib/common/limits.h"
#include "lib/spec/plan_fields.h"

namespace fuji::client {
namespace {

// The flags every `submit KIND` has beside the kind's own.
struct SubmitFlags {
  ServerFlags server;
  std::string timeout;
  std::string notify;  // a URL fujid POSTs the job's final state to
  bool wait = false, share = false;
  bool stream = false;  // infer: print the text as it is generated
  int32_t priority = 0, max_attempts = 0;
};

void AddSubmitFlags(CLI::App* cmd, SubmitFlags* f) {
  AddServerOption(cmd, &f->server);
  cmd->add_flag("--wait", f->wait, "Wait for the job and print its result");
  cmd->add_option("--priority", f->priority, "Higher runs first (default 0)")
      ->check(CLI::Range(limits::kMinPriority, limits::kMaxPriority));
  cmd->add_option("--timeout", f->timeout, "Fail the job after this long: 30s, 5m, 1h or 250ms");
  cmd->add_option("--max-attempts", f->max_attempts, "Attempts at most (default: the daemon's)")
      ->check(CLI::Range(0, limits::kMaxAttempts));
  cmd->add_flag("--share", f->share,
                "May share devices with other jobs submitted with --share, while their plans fit the "
                "devices' free memory together");
  cmd->add_option("--notify", f->notify,
                  "When the job ends, fujid POSTs its final state as JSON to this http(s) URL (a few tries "
                  "with backoff; the hosts allowed are fujid's --notify-allow)");
}

// `submit infer --stream`: the text on stdout as the tokens come, then a newline; the timings on
// stderr. A retry starts the text again (said on stderr). The result's text is the truth: what the
// stream did not carry (runs beyond fujid's bound) is printed from it at the end.
int StreamInference(DaemonClient& client, int64_t id) {
  std::string streamed;
  int32_t attempt = 0;
  WatchDisplay display;  // nothing on stderr while the text comes
  display.on_tokens = [&](const v1::TokenDelta& run) {
    if (run.attempt() != attempt) {
      attempt = run.attempt();
      streamed.clear();
      std::fprintf(stderr, "\n(attempt %d starts again)\n", attempt + 1);
    }
    streamed += run.text();
    std::fwrite(run.text().data(), 1, run.text().size(), stdout);
    std::fflush(stdout);
  };
  auto final_job = FollowJob(client, id, display);
  if (!final_job.ok()) return ReportStatus(final_job.status());
  if (final_job->state() != v1::SUCCEEDED) {
    if (!streamed.empty()) std::printf("\n");
    return ReportJobOutcome(*final_job);
  }
  auto result = FetchJobResult(client, id);
  if (!result.ok()) return ReportStatus(result.status());
  const std::string text = result->value("text", "");
  if (text.compare(0, streamed.size(), streamed) == 0) std::printf("%s", text.substr(streamed.size()).c_str());
  std::printf("\n");
  std::fflush(stdout);  // the text before the timings, also where both go to one file
  const nlohmann::json t = result->value("timings", nlohmann::json::object());
  std::fprintf(stderr, "job %lld: load %.0f ms, first token %.0f ms, decode %.1f tokens/s, total %.0f ms\n",
               static_cast<long long>(id), t.value("load_ms", 0.0), t.value("prefill_ms", 0.0),
               t.value("decode_tokens_per_s", 0.0), t.value("total_ms", 0.0));
  return 0;
}

// Submits a checked spec; with --wait follows the job (progress on a terminal's stderr) and
// prints its result with print_result(result), or as JSON with --output json.
int Submit(const std::string& kind, const nlohmann::json& spec, const SubmitFlags& f,
           const std::string& output, const std::function<void(const nlohmann::json&)>& print_result) {
  v1::SubmitRequest request;
  request.set_kind(kind);
  request.set_spec_json(ApplyCpuOffloadRule(spec, false).dump());
  request.set_priority(f.priority);
  request.set_max_attempts(f.max_attempts);
  request.set_shareable(f.share);
  request.set_notify_url(f.notify);
  if (f.max_attempts < 0) return ReportStatus(InvalidArgument("--max-attempts must be at least 0"));
  if (!f.timeout.empty()) {
    auto ms = ParseDurationMs(f.timeout);
    if (!ms.ok()) return ReportStatus(ms.status().WithContext("--timeout"));
    request.set_timeout_ms(*ms);
  }
  DaemonClient client(f.server);
  auto job = client.Submit(request);
  if (!job.ok()) return ReportStatus(job.status());
  if (f.stream && output != "json") return StreamInference(client, job->id());
  if (!f.wait) {
    if (output == "json") PrintJson(JobToJson(*job));
    else std::printf("%lld\n", static_cast<long long>(job->id()));
    return 0;
  }
  WatchDisplay display;
  display.mode = ::isatty(2) ? WatchDisplay::Mode::kTerminal : WatchDisplay::Mode::kNone;
  display.show_logs = false;
  display.out = stderr;
  auto final_job = FollowJob(client, job->id(), display);
  if (!final_job.ok()) return ReportStatus(final_job.status());
  if (final_job->state() != v1::SUCCEEDED) return ReportJobOutcome(*final_job);
  auto result = FetchJobResult(client, job->id());
  if (!result.ok()) return ReportStatus(result.status());
  if (output == "json") PrintJson(JobResultJson(*final_job, *result));
  else print_result(*result);
  return 0;
}

void RegisterSubmit(CLI::App& app, CliState* state) {
  CLI::App* submit = app.add_subcommand("submit", "Queue a job on fujid");
  submit->require_subcommand(1);

  struct InferSubmit {
    InferFlags infer;
    SubmitFlags submit;
  };
  auto fi = std::make_shared<InferSubmit>();
  fi->infer.offload = kAuto;
  CLI::App* infer = submit->add_subcommand("infer", "Generate text from a prompt (the `run infer` flags)");
  AddInferFlags(infer, &fi->infer);
  AddSubmitFlags(infer, &fi->submit);
  infer->add_flag("--stream", fi->submit.stream,
                  "Print the text as it is generated (implies --wait; not with --output json)");
  infer->callback([state, fi, infer] {
    auto spec = InferSubmitSpec(infer, fi->infer);
    state->exit_code = !spec.ok() ? ReportStatus(spec.status())
                                  : Submit("infer", *spec, fi->submit, fi->infer.output,
                                           [](const nlohmann::json& r) { PrintInferResult(r, "text"); });
  });

  struct FinetuneSubmit {
    FinetuneFlags finetune;
    SubmitFlags submit;
  };
  auto ff = std::make_shared<FinetuneSubmit>();
  ff->finetune.zero = ff->finetune.offload = kAuto;
  CLI::App* finetune = submit->add_subcommand(
      "finetune", "Fine-tune with N ranks on one agent (the `run finetune` flags)");
  AddFinetuneFlags(finetune, &ff->finetune);
  AddSubmitFlags(finetune, &ff->submit);
  finetune->callback([state, ff] {
    auto spec = FinetuneSubmitSpec(ff->finetune);
    state->exit_code = !spec.ok() ? ReportStatus(spec.status())
                                  : Submit("finetune", *spec, ff->submit, ff->finetune.output,
                                           [](const nlohmann::json& r) { PrintText(FormatFinetuneSummary(r)); });
  });
}

void RegisterJobs(CLI::App& app, CliState* state) {
  struct Flags {
    ServerFlags server;
    std::string state, kind, output = "table";
    bool all = false;
    int32_t limit = 0;
    int64_t page_token = 0;
  };
  auto f = std::make_shared<Flags>();
  CLI::App* cmd = app.add_subcommand("jobs", "List jobs, newest first");
  AddServerOption(cmd, &f->server);
  cmd->add_option("--state", f->state, "Only jobs in this state (QUEUED, RUNNING, FAILED, ...)");
  cmd->add_option("--kind", f->kind, "Only jobs of this kind (infer, finetune)");
  cmd->add_option("--limit", f->limit, "At most this many (default 100, at most 1000)");
  cmd->add_option("--page-token", f->page_token, "The next page: the token the previous page ended with");
  cmd->add_option("--output", f->output, "table or json")->check(CLI::IsMember({"table", "json"}));
  cmd->add_flag("--all", f->all, "Every user's jobs, with their owners (admins only)");
  cmd->callback([state, f] {
    v1::ListJobsRequest request;
    request.set_all(f->all);
    if (!f->state.empty()) {
      auto s = ParseJobState(f->state);
      if (!s.ok()) {
        state->exit_code = ReportStatus(s.status());
        return;
      }
      request.set_state(JobStateName(*s));
    }
    if (f->limit < 0) {
      state->exit_code = ReportStatus(InvalidArgument("--limit must be at least 0"));
      return;
    }
    request.set_kind(f->kind);
    request.set_limit(f->limit);
    request.set_page_token(f->page_token);
    DaemonClient client(f->server);
    auto response = client.ListJobs(request);
    if (!response.ok()) {
      state->exit_code = ReportStatus(response.status());
      return;
    }
    std::vector<v1::Job> jobs(response->jobs().begin(), response->jobs().end());
    if (f->output == "json") {
      nlohmann::json list = nlohmann::json::array();
      for (const auto& job : jobs) list.push_back(JobToJson(job));
      PrintJson({{"jobs", list}, {"next_page_token", response->next_page_token()}});
    } else {
      PrintText(JobsTable(jobs, WallClockMs(), f->all));
      if (response->next_page_token() != 0) {
        std::fprintf(stderr, "more jobs: fuji jobs --page-token %lld\n",
                     static_cast<long long>(response->next_page_token()));
      }
    }
  });
}

void RegisterShow(CLI::App& app, CliState* state) {
  struct Flags {
    ServerFlags server;
    std::string output = "text";
    int64_t id = 0;
  };
  auto f = std::make_shared<Flags>();
  CLI::App* cmd = app.add_subcommand("show", "Every field of a job");
  cmd->add_option("id", f->id, "Job id")->required();
  AddServerOption(cmd, &f->server);
  cmd->add_option("--output", f->output, "text or json")->check(CLI::IsMember({"text", "json"}));
  cmd->callback([state, f] {
    DaemonClient client(f->server);
    auto job = client.GetJob(f->id);
    if (!job.ok()) {
      state->exit_code = ReportStatus(job.status());
      return;
    }
    if (f->output == "json") PrintJson(JobToJson(*job));
    else PrintText(JobText(*job, WallClockMs()));
  });
}

void RegisterWatch(CLI::App& app, CliState* state) {
  struct Flags {
    ServerFlags server;
    int64_t id = 0;
  };
  auto f = std::make_shared<Flags>();
  CLI::App* cmd = app.add_subcommand("watch", "Follow a job until it ends; exit 0 if it succeeded");
  cmd->add_option("id", f->id, "Job id")->required();
  AddServerOption(cmd, &f->server);
  cmd->callback([state, f] {
    DaemonClient client(f->server);
    WatchDisplay display;
    display.mode = ::isatty(1) ? WatchDisplay::Mode::kTerminal : WatchDisplay::Mode::kLines;
    display.out = stdout;
    auto job = FollowJob(client, f->id, display);
    if (!job.ok()) {
      state->exit_code = ReportStatus(job.status());
      return;
    }
    if (display.mode == WatchDisplay::Mode::kTerminal) std::printf("%s\n", JobOutcome(*job).c_str());
    std::fflush(stdout);
    state->exit_code = ReportJobOutcome(*job);
  });
}

void RegisterCancel(CLI::App& app, CliState* state) {
  struct Flags {
    ServerFlags server;
    std::string output = "text";
    int64_t id = 0;
  };
  auto f = std::make_shared<Flags>();
  CLI::App* cmd = app.add_subcommand("cancel", "Cancel a job (its processes are killed)");
  cmd->add_option("id", f->id, "Job id")->required();
  AddServerOption(cmd, &f->server);
  cmd->add_option("--output", f->output, "text or json")->check(CLI::IsMember({"text", "json"}));
  cmd->callback([state, f] {
    DaemonClient client(f->server);
    auto job = client.CancelJob(f->id);
    if (!job.ok()) {
      state->exit_code = ReportStatus(job.status());
      return;
    }
    if (f->output == "json") PrintJson(JobToJson(*job));
    else std::printf("%s\n", JobOutcome(*job).c_str());
  });
}

void RegisterPriority(CLI::App& app, CliState* state) {
  struct Flags {
    ServerFlags server;
    std::string output = "text";
    int64_t id = 0;
    int32_t priority = 0;
  };
  auto f = std::make_shared<Flags>();
  CLI::App* cmd = app.add_subcommand("priority", "Change a queued job's priority (higher runs first)");
  cmd->add_option("id", f->id, "Job id")->required();
  cmd->add_option("priority", f->priority, "The new priority")
      ->required()
      ->check(CLI::Range(limits::kMinPriority, limits::kMaxPriority));
  AddServerOption(cmd, &f->server);
  cmd->add_option("--output", f->output, "text or json")->check(CLI::IsMember({"text", "json"}));
  cmd->callback([state, f] {
    DaemonClient client(f->server);
    auto job = client.SetPriority(f->id, f->priority);
    if (!job.ok()) {
      state->exit_code = ReportStatus(job.status());
      return;
    }
    if (f->output == "json") PrintJson(JobToJson(*job));
    else std::printf("job %lld: priority %d\n", static_cast<long long>(job->id()), job->priority());
  });
}

}  // namespace

void RegisterJobCommands(CLI::App& app, CliState* state) {
  RegisterSubmit(app, state);
  RegisterJobs(app, state);
  RegisterShow(app, state);
  RegisterWatch(app, state);
  RegisterCancel(app, state);
  RegisterPriority(app, state);
}

Result<nlohmann::json> FetchJobResult(DaemonClient& client, int64_t id) {
  FUJI_ASSIGN_OR_RETURN(v1::ResultResponse response, client.GetResult(id));
  if (response.result_json().empty()) return nlohmann::json::object();
  nlohmann::json result = nlohmann::json::parse(response.result_json(), nullptr, false);
  if (result.is_discarded()) return Internal("job " + std::to_string(id) + ": the daemon sent a result that is not JSON");
  return result;
}

}  // namespace fuji::client
