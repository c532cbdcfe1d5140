// The fuji command line: each area registers its subcommands on the CLI11 app.
// A command's callback stores its exit code in CliState; errors print one line "fuji: ...".
#pragma once

#include <string>

#include <CLI/CLI.hpp>

#include "lib/common/status.h"

namespace fuji::client {

struct CliState {
  int exit_code = 0;
};

// Prints "fuji: <message>" and returns the exit code for the status: 0 for OK, 2 for bad input
// (INVALID_ARGUMENT, NOT_FOUND, DATA_LOSS, FAILED_PRECONDITION, ALREADY_EXISTS), 1 otherwise.
int ReportStatus(const Status& status);

// The directory holding the GPT-2 vocab.json and merges.txt that fuji ships: $FUJI_VOCAB_DIR,
// else share/fuji beside the executable's bin/.
std::string DefaultVocabDir();

void RegisterModelCommands(CLI::App& app, CliState* state);
void RegisterTextCommands(CLI::App& app, CliState* state);
void RegisterRunCommands(CLI::App& app, CliState* state);
// `run finetune`, under the `run` command.
void AddRunFinetuneCommand(CLI::App* run, CliState* state);
// `login`, `whoami` and `admin ...`: users, tokens and agents.
void RegisterAdminCommands(CLI::App& app, CliState* state);
// Through fujid (--server, $FUJI_SERVER, the profile, 127.0.0.1:7070): submit, jobs, show, watch,
// cancel.
void RegisterJobCommands(CLI::App& app, CliState* state);
// Through fujid: logs, result, losses, timings, samples, workers.
void RegisterJobDataCommands(CLI::App& app, CliState* state);
// Through fujid: `report JOB...` and `study`.
void RegisterStudyCommands(CLI::App& app, CliState* state);
// `plan` (the memory planner) and `estimate` (time to train), in process.
void RegisterPlanCommands(CLI::App& app, CliState* state);
// Through fujid: `serve start|list|stop`, models pinned warm as serving jobs.
void RegisterServeCommands(CLI::App& app, CliState* state);
// Through fujid: `usage`, device-hours, jobs and tokens by user, model or kind.
void RegisterUsageCommands(CLI::App& app, CliState* state);

}  // namespace fuji::client
