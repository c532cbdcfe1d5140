// `fuji run infer`: a job in the foreground on a local fuji-rank, without the daemon.
#include <unistd.h>

#include <cstdio>

#include <nlohmann/json.hpp>

#include "client/cli.h"
#include "client/infer_flags.h"
#include "client/local_runner.h"

namespace fuji::client {

void RegisterRunCommands(CLI::App& app, CliState* state) {
  CLI::App* run = app.add_subcommand("run", "Run a job in the foreground on this machine (no daemon)");
  run->require_subcommand(1);
  auto flags = std::make_shared<InferFlags>();
  CLI::App* infer = run->add_subcommand("infer", "Generate text from a prompt");
  AddInferFlags(infer, flags.get());
  infer->callback([state, flags, infer] {
    auto spec = InferSpecFromFlags(infer, *flags);
    if (!spec.ok()) {
      state->exit_code = ReportStatus(spec.status());
      return;
    }
    nlohmann::json request = spec->ToJson();
    request["op"] = "infer";
    request["id"] = "local";
    auto result = RunLocal(request, {::isatty(2) != 0, false});
    if (!result.ok()) {
      state->exit_code = ReportStatus(result.status());
      return;
    }
    PrintInferResult(*result, flags->output);
  });
  AddRunFinetuneCommand(run, state);
}

}  // namespace fuji::client
