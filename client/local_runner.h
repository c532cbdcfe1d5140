// Runs one request on a local fuji-rank in the foreground (no daemon): `fuji run`, `fuji model`.
#pragma once

#include <functional>
#include <string>

#include <nlohmann/json.hpp>

#include "lib/common/status.h"

namespace fuji::client {

struct LocalRunOptions {
  bool show_progress = false;  // a progress line on stderr (a terminal)
  bool forward_logs = false;   // the rank's stderr lines to ours as they come
};

// Starts fuji-rank, sends `request`, and returns the "result" object of its result event, or the
// error it reported (its code and message), or why it died (exit status and its last log lines).
Result<nlohmann::json> RunLocal(const nlohmann::json& request, const LocalRunOptions& options);

}  // namespace fuji::client
