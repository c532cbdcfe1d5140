// A program's log lines on stderr; see log.h.
#include "lib/common/log.h"
#include "lib/common/wall_clock.h"

#include <atomic>
#include <chrono>
#include <cstdio>
#include <ctime>

namespace fuji::log {
namespace {

std::atomic<const char*> program_name{"fuji"};

// "2026-12-02T17:28:06.123Z"
std::string UtcStamp(int64_t at_unix_ms) {
  int64_t seconds = at_unix_ms / 1000;
  int64_t millis = at_unix_ms % 1000;
  if (millis < 0) {  // before 1970: keep the milliseconds positive
    millis += 1000;
    seconds -= 1;
  }
  const std::time_t t = static_cast<std::time_t>(seconds);
  std::tm utc{};
  gmtime_r(&t, &utc);
  char text[32];
  const size_t n = std::strftime(text, sizeof text, "%Y-%m-%dT%H:%M:%S", &utc);
  std::snprintf(text + n, sizeof text - n, ".%03dZ", static_cast<int>(millis));
  return text;
}

}  // namespace

const char* LevelName(Level level) {
  static constexpr const char* kNames[] = {"INFO", "WARN", "ERROR"};  // in Level's order
  return kNames[static_cast<int>(level)];
}

void SetProgram(const char* program) { program_name.store(program); }

std::string FormatLine(std::string_view program, int64_t at_unix_ms, Level level,
                       std::string_view message) {
  std::string line;
  line.reserve(program.size() + message.size() + 40);
  line.append(program).append(": ").append(UtcStamp(at_unix_ms)).append(" ");
  line.append(LevelName(level)).append(" ");
  for (char c : message) {
    const auto byte = static_cast<unsigned char>(c);
    line.push_back(byte < 0x20 || byte == 0x7f ? ' ' : c);
  }
  return line;
}

void Write(Level level, std::string_view message) {
  const std::string line = FormatLine(program_name.load(), WallClockMs(), level, message) + "\n";
  std::fwrite(line.data(), 1, line.size(), stderr);
}

void Info(std::string_view message) { Write(Level::kInfo, message); }
void Warn(std::string_view message) { Write(Level::kWarn, message); }
void Error(std::string_view message) { Write(Level::kError, message); }

}  // namespace fuji::log
