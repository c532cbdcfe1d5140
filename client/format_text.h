// Pure text helpers of the CLI: fitted tables, durations, ages, local timestamps, progress bars.
// No I/O and no clock of their own (callers pass "now"), so they are unit-tested as they are.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "lib/common/duration.h"
#include "lib/common/status.h"

namespace fuji::client {

// Columns separated by two spaces, each as wide as its widest cell; the last column is not
// padded. One line per row, header first, each ending in '\n'.
std::string RenderTable(const std::vector<std::string>& header,
                        const std::vector<std::vector<std::string>>& rows);

// ParseDurationMs ("30s", "5m") is lib/common/duration.h's.

// A short age: "12s", "5m", "3h", "2d"; "-" for a zero or future time.
std::string FormatAge(int64_t since_ms, int64_t now_ms);

// Local time with millisecond precision, nvidia-smi style: "2026/11/27 12:00:00.000".
// Honours TZ (tests set TZ=UTC).
std::string FormatLocalTime(int64_t epoch_ms);

// value with `decimals` digits after the point ("3.4000"); "nan" and "inf" as printf has them.
std::string Fixed(double value, int decimals);
// value rounded to an integer with thousands separated by commas: "1,234,567", "-3,400".
std::string Grouped(double value);

// A time left, rounded to seconds: "42s", "5m03s", "2h05m"; "-" when negative (unknown).
std::string FormatEta(int64_t ms);

// `text` safe to print on a terminal: control characters other than tab and newline (C0, DEL,
// and C1 in UTF-8) become \xNN or \u00NN, and so does every byte that is not part of valid UTF-8.
// A job's log is written by its ranks and the code they run: an escape sequence in it must not
// reach the reader's terminal as one.
std::string EscapeControls(std::string_view text);

// "[########------------] generate 12/64"; with total 0 just the phase.
std::string ProgressBar(const std::string& phase, int64_t done, int64_t total, int width = 24);

}  // namespace fuji::client
