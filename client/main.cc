// fuji: the command-line client. Parses the command line and runs one command.
#include <cstdio>

#include "client/cli.h"

int main(int argc, char** argv) {
  CLI::App app{"fuji: fine-tune and serve Cerebras-GPT models"};
  app.require_subcommand(1);
  app.failure_message([](const CLI::App*, const CLI::Error& e) { return std::string(e.what()) + "\n"; });
  fuji::client::CliState state;
  fuji::client::RegisterModelCommands(app, &state);
  fuji::client::RegisterTextCommands(app, &state);
  fuji::client::RegisterRunCommands(app, &state);
  fuji::client::RegisterJobCommands(app, &state);
  fuji::client::RegisterJobDataCommands(app, &state);
  fuji::client::RegisterStudyCommands(app, &state);
  fuji::client::RegisterPlanCommands(app, &state);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() != 0) std::fprintf(stderr, "fuji: ");
    return app.exit(e) == 0 ? 0 : 2;
  }
  return state.exit_code;
}
