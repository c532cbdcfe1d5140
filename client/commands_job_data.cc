// What fujid keeps about jobs and nodes: `logs`, `result`, `losses`, `timings`, `samples` and
// `workers`.
#include <memory>

#include "client/cli.h"
#include "client/daemon_client.h"
#include "client/daemon_commands.h"
#include "client/format_jobs.h"
#include "client/finetune_flags.h"
#include "client/format_telemetry.h"
#include "client/infer_flags.h"

namespace fuji::client {
namespace {

struct JobFlags {
  ServerFlags server;
  std::string output;
  int64_t id = 0;
};

// Adds the job id argument, --server and (when `outputs` is not empty) --output to `cmd`.
std::shared_ptr<JobFlags> AddJobFlags(CLI::App* cmd, const std::vector<std::string>& outputs,
                                      const std::string& output_flag = "--output") {
  auto f = std::make_shared<JobFlags>();
  cmd->add_option("id", f->id, "Job id")->required();
  AddServerOption(cmd, &f->server);
  if (!outputs.empty()) {
    f->output = outputs[0];
    std::string help;
    for (const auto& o : outputs) help += (help.empty() ? "" : " or ") + o;
    cmd->add_option(output_flag, f->output, help)->check(CLI::IsMember(outputs));
  }
  return f;
}

int RunLogs(const JobFlags& f, bool follow, bool raw) {
  DaemonClient client(f.server);
  auto lines = client.GetLogs(f.id, 0);
  if (!lines.ok()) return ReportStatus(lines.status());
  int64_t last_seq = 0;
  for (const auto& line : *lines) {
    std::printf("%s\n", LogLineText(line, raw).c_str());
    last_seq = std::max(last_seq, line.seq());
  }
  std::fflush(stdout);
  if (!follow) return 0;
  Status status = client.Watch(f.id, last_seq, [raw](const v1::WatchEvent& event) {
    if (event.what_case() == v1::WatchEvent::kLog) {
      std::printf("%s\n", LogLineText(event.log(), raw).c_str());
      std::fflush(stdout);
    }
    return true;
  });
  return ReportStatus(status);
}

int RunResult(const JobFlags& f) {
  DaemonClient client(f.server);
  auto job = client.GetJob(f.id);
  if (!job.ok()) return ReportStatus(job.status());
  auto result = FetchJobResult(client, f.id);
  if (!result.ok()) return ReportStatus(result.status());
  if (f.output == "json") PrintJson(JobResultJson(*job, *result));
  else if (job->kind() == "finetune") PrintText(FormatFinetuneSummary(*result));
  else PrintInferResult(*result, "text");
  return 0;
}

int RunLosses(const JobFlags& f, const std::string& split) {
  DaemonClient client(f.server);
  auto points = client.GetLosses(f.id, split);
  if (!points.ok()) return ReportStatus(points.status());
  if (f.output == "json") PrintJson(LossesJson(f.id, *points, split));
  else PrintText(LossesTable(*points, split));
  return 0;
}

int RunTimings(const JobFlags& f) {
  DaemonClient client(f.server);
  auto job = client.GetJob(f.id);
  if (!job.ok()) return ReportStatus(job.status());
  auto timings = client.GetTimings(f.id);
  if (!timings.ok()) return ReportStatus(timings.status());
  if (f.output == "json") PrintJson(TimingsJson(*job, *timings));
  else PrintText(TimingsTable(*timings));
  return 0;
}

int RunSamples(const JobFlags& f) {
  DaemonClient client(f.server);
  auto samples = client.GetSamples(f.id);
  if (!samples.ok()) return ReportStatus(samples.status());
  if (f.output == "json") PrintJson(SamplesJson(f.id, *samples));
  else PrintText(SamplesCsv(*samples));
  return 0;
}

}  // namespace

void RegisterJobDataCommands(CLI::App& app, CliState* state) {
  CLI::App* logs = app.add_subcommand("logs", "A job's log lines");
  auto logs_flags = AddJobFlags(logs, {});
  auto follow = std::make_shared<bool>(false);
  logs->add_flag("--follow,-f", *follow, "Keep printing new lines until the job ends");
  auto raw = std::make_shared<bool>(false);
  logs->add_flag("--raw", *raw,
                 "Print control characters as they are (by default they are escaped: \\x1b, so that a line "
                 "cannot drive your terminal)");
  logs->callback([state, logs_flags, follow, raw] {
    state->exit_code = RunLogs(*logs_flags, *follow, *raw);
  });

  CLI::App* result = app.add_subcommand("result", "A finished job's result");
  auto result_flags = AddJobFlags(result, {"text", "json"});
  result->callback([state, result_flags] { state->exit_code = RunResult(*result_flags); });

  CLI::App* losses = app.add_subcommand("losses", "A fine-tuning job's losses by step");
  auto losses_flags = AddJobFlags(losses, {"text", "json"});
  auto split = std::make_shared<std::string>();
  losses->add_option("--split", *split, "Only train or only eval losses")
      ->check(CLI::IsMember({"train", "eval"}));
  losses->callback([state, losses_flags, split] { state->exit_code = RunLosses(*losses_flags, *split); });

  CLI::App* timings = app.add_subcommand("timings", "A job's phases per attempt and rank, in ms");
  auto timings_flags = AddJobFlags(timings, {"table", "json"});
  timings->callback([state, timings_flags] { state->exit_code = RunTimings(*timings_flags); });

  CLI::App* samples = app.add_subcommand("samples", "A job's memory samples, nvidia-smi style");
  auto samples_flags = AddJobFlags(samples, {"csv", "json"}, "--format");
  samples->callback([state, samples_flags] { state->exit_code = RunSamples(*samples_flags); });

  struct WorkerFlags {
    ServerFlags server;
    std::string output = "table";
  };
  auto wf = std::make_shared<WorkerFlags>();
  CLI::App* workers = app.add_subcommand("workers", "The agents and their devices");
  AddServerOption(workers, &wf->server);
  workers->add_option("--output", wf->output, "table or json")->check(CLI::IsMember({"table", "json"}));
  workers->callback([state, wf] {
    DaemonClient client(wf->server);
    auto list = client.ListWorkers();
    if (!list.ok()) {
      state->exit_code = ReportStatus(list.status());
      return;
    }
    if (wf->output == "json") PrintJson(WorkersJson(*list));
    else PrintText(WorkersTable(*list, WallClockMs()));
  });
}

}  // namespace fuji::client
