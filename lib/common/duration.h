// Durations as people type them on command lines: fuji's CLI and fuji-agent's flags.
#pragma once

#include <cstdint>
#include <string>

#include "lib/common/status.h"

namespace fuji {

// "250ms", "30s", "5m", "1h" (a non-negative integer and a unit) to milliseconds; a bare
// integer is seconds. INVALID_ARGUMENT naming the text otherwise.
Result<int64_t> ParseDurationMs(const std::string& text);

}  // namespace fuji
