// fuji: the command-line client. Parses the command line and runs one command.
#include <cstdio>
#include <cstdlib>

#include "client/cli.h"

int main(int argc, char** argv) {
  // Errors reach the user as one line of fuji's; gRPC's own log (a failed handshake, say) would add
  // a second. GRPC_VERBOSITY set by the user still wins.
  ::setenv("GRPC_VERBOSITY", "NONE", /*overwrite=*/0);
  CLI::App app{"fuji: fine-tune and serve Cerebras-GPT models"};
  app.require_subcommand(1);
  app.failure_message([](const CLI::App*, const CLI::Error& e) { return std::string(e.what()) + "\n"; });
  fuji::client::CliState state;
  fuji::client::RegisterModelCommands(app, &state);
  fuji::client::RegisterTextCommands(app, &state);
  fuji::client::RegisterRunCommands(app, &state);
  fuji::client::RegisterAdminCommands(app, &state);
  fuji::client::RegisterJobCommands(app, &state);
  fuji::client::RegisterJobDataCommands(app, &state);
  fuji::client::RegisterStudyCommands(app, &state);
  fuji::client::RegisterPlanCommands(app, &state);
  fuji::client::RegisterServeCommands(app, &state);
  fuji::client::RegisterUsageCommands(app, &state);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() != 0) std::fprintf(stderr, "fuji: ");
    return app.exit(e) == 0 ? 0 : 2;
  }
  return state.exit_code;
}
