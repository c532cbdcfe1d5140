// `fuji run finetune`: a fine-tuning gang of ranks on this machine, in the foreground (no daemon).
#include <cstdio>
#include <memory>

#include "client/cli.h"
#include "client/finetune_flags.h"
#include "worker/launcher/finetune_prepare.h"
#include "worker/launcher/gang.h"

namespace fuji::client {
namespace {

Status RunFinetune(const FinetuneFlags& flags) {
  FUJI_ASSIGN_OR_RETURN(FinetuneSpec spec, FinetuneSpecFromFlags(flags));
  launch::PrepareOptions options;
  if (spec.device == "cuda") {
    options.max_ranks = launch::CountCudaDevices();
    options.devices_what = "GPUs";
  } else {
    options.devices_what = "CPU ranks at most";
  }
  FUJI_ASSIGN_OR_RETURN(auto prepared, launch::PrepareFinetune(std::move(spec), options));
  const bool text = flags.output == "text";
  if (text) {
    std::fprintf(stderr, "data: %llu tokens (%s)\n", static_cast<unsigned long long>(prepared.num_tokens),
                 prepared.tokenized ? "tokenized" : "cached");
  }
  launch::GangOptions gang_options;
  gang_options.corpus_tokens = static_cast<int64_t>(prepared.num_tokens);
  launch::Gang gang(prepared.spec, gang_options);
  const int64_t steps = prepared.spec.steps;
  auto result = gang.Run([&](const launch::GangOutput& o) {
    if (o.output.kind == launch::ChildOutput::Kind::kLog) {
      std::fprintf(stderr, "rank %d: %s\n", o.rank, o.output.line.c_str());
      return;
    }
    const std::string line = text ? FormatLossEvent(o.output.event, steps) : "";
    if (!line.empty()) {
      std::printf("%s\n", line.c_str());
      std::fflush(stdout);
    }
  });
  if (!result.ok()) return result.status();
  if (text) {
    std::printf("%s", FormatFinetuneSummary(*result).c_str());
  } else {
    std::printf("%s\n", result->dump(2, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
  }
  return Status::Ok();
}

}  // namespace

void AddRunFinetuneCommand(CLI::App* run, CliState* state) {
  auto flags = std::make_shared<FinetuneFlags>();
  CLI::App* cmd = run->add_subcommand("finetune", "Fine-tune a model with N data-parallel ranks on this machine");
  AddFinetuneFlags(cmd, flags.get());
  cmd->callback([state, flags] { state->exit_code = ReportStatus(RunFinetune(*flags)); });
}

}  // namespace fuji::client
