// Pieces shared by the commands that talk to fujid: the connection flags, the clock, printing.
#pragma once

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <string>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "client/daemon_client.h"
#include "lib/common/status.h"
#include "lib/common/wall_clock.h"

namespace fuji::client {

// Adds --server ADDR, --ca FILE and --insecure to `cmd` (see profile.h for what they default to).
inline void AddServerOption(CLI::App* cmd, ServerFlags* flags) {
  cmd->add_option("--server", flags->server,
                  "fujid address (default: $FUJI_SERVER, else the profile's, else 127.0.0.1:7070)");
  cmd->add_option("--ca", flags->ca, "The cluster CA to verify fujid with (default: $FUJI_CA, else the profile's)");
  cmd->add_flag("--insecure", flags->insecure, "Plaintext, to a fujid started with --insecure on the loopback");
}

inline void PrintJson(const nlohmann::json& j) {
  std::printf("%s\n", j.dump(2, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
}

// The result of job `id` parsed from its result_json (an empty object when it has none).
Result<nlohmann::json> FetchJobResult(DaemonClient& client, int64_t id);

inline void PrintText(const std::string& text) { std::fwrite(text.data(), 1, text.size(), stdout); }

}  // namespace fuji::client
