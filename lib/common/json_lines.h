// JSON lines over file descriptors: the agent<->rank and launcher<->rank wire format.
// One JSON object per '\n'-terminated line, each line written with a single write() so that
// concurrent writers never interleave within a line (lines stay under PIPE_BUF only when small;
// writers are serialized by a mutex regardless).
#pragma once

#include <cstdint>
#include <mutex>
#include <optional>
#include <string>

#include <nlohmann/json_fwd.hpp>

#include "lib/common/status.h"

namespace fuji {

// Writes JSON lines to a file descriptor it does not own. Thread-safe.
class JsonLineWriter {
 public:
  explicit JsonLineWriter(int fd) : fd_(fd) {}
  Status Write(const nlohmann::json& object);
  int fd() const { return fd_; }

 private:
  int fd_;
  std::mutex mu_;
};

// Reads '\n'-terminated lines from a file descriptor it does not own. Not thread-safe.
class LineReader {
 public:
  // What a line longer than the limit does: fail the read (a protocol's lines), or come back cut
  // to the limit (limits::CutLine) while the rest of it is read and dropped, so that the writer
  // never blocks on a full pipe (a process's log).
  enum class Overlong { kFail, kCut };
  explicit LineReader(int fd, size_t max_line_bytes = 64u << 20, Overlong overlong = Overlong::kFail)
      : fd_(fd), max_line_(max_line_bytes), overlong_(overlong) {}
  // Waits up to timeout_ms (-1: forever) for a whole line. Returns the line without '\n',
  // std::nullopt on end of file (a final unterminated line is returned first), or an error
  // (DEADLINE as kUnavailable, a line over the limit as kResourceExhausted with Overlong::kFail).
  Result<std::optional<std::string>> ReadLine(int timeout_ms = -1);
  bool eof() const { return eof_ && buffer_.empty(); }

 private:
  int fd_;
  size_t max_line_;
  Overlong overlong_;
  std::string buffer_;
  bool eof_ = false;
  bool dropping_ = false;  // the rest of a cut line is being read and dropped
};

// Parses one line as a JSON object; INVALID_ARGUMENT with the parser's message otherwise.
Result<nlohmann::json> ParseJsonObject(const std::string& line);

// Typed reads of one field of a JSON object another process wrote (a rank's event or result):
// the field's value when `object` is an object and the field has the type asked for and fits it,
// else `fallback`. Unlike nlohmann's value(), they never throw (value() throws for a field of
// another type or an object that is not one) and never convert a number that does not fit (a
// float such as 1e300 read as an integer is undefined behaviour).
int64_t IntField(const nlohmann::json& object, const char* key, int64_t fallback = 0);
double NumberField(const nlohmann::json& object, const char* key, double fallback = 0);
std::string StringField(const nlohmann::json& object, const char* key, const std::string& fallback = "");
// Any JSON value: the field's, else `fallback`.
nlohmann::json JsonField(const nlohmann::json& object, const char* key, const nlohmann::json& fallback);

}  // namespace fuji
