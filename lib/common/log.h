// A program's log: one line per event on stderr, as the agent writes its lines ("fuji-agent: ..."),
// with the time and a level between the program's name and the message:
//
//   fujid: 2026-12-02T17:28:06.123Z WARN lease check: marking agent a1 LOST failed (UNAVAILABLE)
//
// The time is UTC to the millisecond. A message is one line: control characters in it (a newline
// in a name an agent sent) become spaces. What goes in a message is the caller's to keep clean:
// never SQL text, file contents, tokens or other secrets (a store error's message carries its SQL:
// log its code).
//
// Thread-safe: each line is written with one call, so lines from several threads never mix.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace fuji::log {

enum class Level { kInfo, kWarn, kError };

// "INFO", "WARN", "ERROR"
const char* LevelName(Level level);

// The name every line starts with; "fuji" until set. `program` must outlive every later call
// (a string literal).
void SetProgram(const char* program);

// One line, without its newline: "<program>: <UTC time> <LEVEL> <message>". at_unix_ms is
// milliseconds since the Unix epoch.
std::string FormatLine(std::string_view program, int64_t at_unix_ms, Level level,
                       std::string_view message);

// Writes one line stamped with the system clock's time now.
void Write(Level level, std::string_view message);
void Info(std::string_view message);
void Warn(std::string_view message);
void Error(std::string_view message);

}  // namespace fuji::log
