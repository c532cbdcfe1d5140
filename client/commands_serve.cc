// `fuji serve`: models pinned warm as serving jobs. `serve start` submits one serving job per
// replica (an inference job whose spec has "serve": true and no prompt): its rank loads the model
// on the device fujid places it on and keeps it loaded until the job is cancelled (`serve stop`,
// or `fuji cancel`); inference jobs of that model placed there run in it, in its batch.
// `serve list` shows the serving jobs' warm models as the agents report them.
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "client/cli.h"
#include "client/daemon_commands.h"
#include "client/format_jobs.h"
#include "client/format_text.h"
#include "lib/common/limits.h"

namespace fuji::client {
namespace {

void RegisterServeStart(CLI::App* serve, CliState* state) {
  struct Flags {
    ServerFlags server;
    std::string model, precision = "fp32", device = "cpu", offload = "none", output = "text";
    int replicas = 1;
    int32_t priority = 0;
  };
  auto f = std::make_shared<Flags>();
  CLI::App* cmd = serve->add_subcommand("start", "Keep a model loaded for requests: one serving job per replica");
  cmd->add_option("--model", f->model, "Checkpoint directory")->required();
  cmd->add_option("--replicas", f->replicas, "Serving jobs (each on a device of its own where it fits)")
      ->check(CLI::Range(1, 64));
  cmd->add_option("--precision", f->precision, "fp32, bf16 or fp16")->check(CLI::IsMember({"fp32", "bf16", "fp16"}));
  cmd->add_option("--device", f->device, "cpu or cuda");
  cmd->add_option("--offload", f->offload, "none, or params (weights in host memory, streamed)")
      ->check(CLI::IsMember({"none", "params"}));
  cmd->add_option("--priority", f->priority, "Higher is placed first (default 0)")
      ->check(CLI::Range(limits::kMinPriority, limits::kMaxPriority));
  cmd->add_option("--output", f->output, "text or json")->check(CLI::IsMember({"text", "json"}));
  AddServerOption(cmd, &f->server);
  cmd->callback([state, f] {
    std::error_code ec;
    const std::string model = std::filesystem::absolute(f->model, ec).lexically_normal().string();
    nlohmann::json spec = {{"model", ec ? f->model : model}, {"serve", true},      {"precision", f->precision},
                           {"device", f->device},              {"offload", f->offload}};
    DaemonClient client(f->server);
    nlohmann::json jobs = nlohmann::json::array();
    for (int i = 0; i < f->replicas; ++i) {
      v1::SubmitRequest request;
      request.set_kind("infer");
      request.set_spec_json(spec.dump());
      request.set_priority(f->priority);
      request.set_shareable(true);  // inference jobs of the model join it
      auto job = client.Submit(request);
      if (!job.ok()) {
        state->exit_code = ReportStatus(job.status());
        return;
      }
      if (f->output == "json") jobs.push_back(JobToJson(*job));
      else std::printf("%lld\n", static_cast<long long>(job->id()));
    }
    if (f->output == "json") PrintJson(jobs);
  });
}

void RegisterServeList(CLI::App* serve, CliState* state) {
  struct Flags {
    ServerFlags server;
    std::string output = "text";
  };
  auto f = std::make_shared<Flags>();
  CLI::App* cmd = serve->add_subcommand("list", "The models serving jobs keep loaded, per agent and device");
  cmd->add_option("--output", f->output, "text or json")->check(CLI::IsMember({"text", "json"}));
  AddServerOption(cmd, &f->server);
  cmd->callback([state, f] {
    DaemonClient client(f->server);
    auto workers = client.ListWorkers();
    if (!workers.ok()) {
      state->exit_code = ReportStatus(workers.status());
      return;
    }
    std::vector<std::vector<std::string>> rows;
    nlohmann::json list = nlohmann::json::array();
    for (const auto& w : *workers) {
      for (const auto& m : w.warm()) {
        if (m.serving_job_id() <= 0) continue;
        rows.push_back({std::to_string(m.serving_job_id()), w.id(), std::to_string(m.device_index()), m.model(),
                        m.precision(), m.mib() > 0 ? std::to_string(m.mib()) : "-", std::to_string(m.active() - 1)});
        list.push_back({{"job", m.serving_job_id()}, {"worker", w.id()}, {"device_index", m.device_index()},
                        {"model", m.model()}, {"precision", m.precision()}, {"offload", m.offload()},
                        {"mib", m.mib()}, {"requests", m.active() - 1}});
      }
    }
    if (f->output == "json") PrintJson({{"serving", list}});
    else PrintText(RenderTable({"JOB", "WORKER", "DEVICE", "MODEL", "PRECISION", "MIB", "REQUESTS"}, rows));
  });
}

void RegisterServeStop(CLI::App* serve, CliState* state) {
  struct Flags {
    ServerFlags server;
    std::vector<int64_t> ids;
  };
  auto f = std::make_shared<Flags>();
  CLI::App* cmd = serve->add_subcommand("stop", "Cancel serving jobs: their models are unloaded");
  cmd->add_option("ids", f->ids, "Serving job ids")->required();
  AddServerOption(cmd, &f->server);
  cmd->callback([state, f] {
    DaemonClient client(f->server);
    for (int64_t id : f->ids) {
      auto job = client.CancelJob(id);
      if (!job.ok()) {
        state->exit_code = ReportStatus(job.status());
        return;
      }
      std::printf("%s\n", JobOutcome(*job).c_str());
    }
  });
}

}  // namespace

void RegisterServeCommands(CLI::App& app, CliState* state) {
  CLI::App* serve = app.add_subcommand("serve", "Models kept loaded for requests (serving jobs)");
  serve->require_subcommand(1);
  RegisterServeStart(serve, state);
  RegisterServeList(serve, state);
  RegisterServeStop(serve, state);
}

}  // namespace fuji::client
