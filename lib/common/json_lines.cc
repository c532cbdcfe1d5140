// JSON lines over file descriptors.
#include "lib/common/json_lines.h"

#include <poll.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>

#include <nlohmann/json.hpp>

#include "lib/common/file_util.h"
#include "lib/common/json_bounds.h"
#include "lib/common/limits.h"

namespace fuji {

Status JsonLineWriter::Write(const nlohmann::json& object) {
  std::string line = object.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  line.push_back('\n');
  std::lock_guard<std::mutex> lock(mu_);
  size_t done = 0;
  while (done < line.size()) {
    ssize_t n = ::write(fd_, line.data() + done, line.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      return Unavailable("write to fd " + std::to_string(fd_) + " failed: " + ErrnoMessage());
    }
    done += static_cast<size_t>(n);
  }
  return Status::Ok();
}

Result<std::optional<std::string>> LineReader::ReadLine(int timeout_ms) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  for (;;) {
    size_t nl = buffer_.find('\n');
    if (dropping_) {
      // The tail of a line already returned cut: gone up to and with its newline.
      if (nl == std::string::npos) {
        buffer_.clear();
      } else {
        buffer_.erase(0, nl + 1);
        dropping_ = false;
        continue;
      }
    } else if (nl != std::string::npos ? nl > max_line_ : buffer_.size() > max_line_) {
      // A line over the limit: whole (it came with its newline in one read) or still arriving.
      if (overlong_ == Overlong::kFail) {
        return ResourceExhausted("line longer than " + std::to_string(max_line_) + " bytes");
      }
      std::string line;
      if (nl == std::string::npos) {
        line = limits::CutLine(std::move(buffer_), max_line_);
        buffer_.clear();
        dropping_ = true;
      } else {
        line = limits::CutLine(buffer_.substr(0, nl), max_line_);
        buffer_.erase(0, nl + 1);
      }
      return std::optional<std::string>(std::move(line));
    } else if (nl != std::string::npos) {
      std::string line = buffer_.substr(0, nl);
      buffer_.erase(0, nl + 1);
      return std::optional<std::string>(std::move(line));
    }
    if (eof_) {
      if (buffer_.empty()) return std::optional<std::string>();
      std::string line = std::move(buffer_);
      buffer_.clear();
      return std::optional<std::string>(std::move(line));
    }
    int wait_ms = -1;
    if (timeout_ms >= 0) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                      deadline - std::chrono::steady_clock::now()).count();
      wait_ms = static_cast<int>(std::max<int64_t>(0, left));
    }
    struct pollfd pfd {fd_, POLLIN, 0};
    int r = ::poll(&pfd, 1, wait_ms);
    if (r < 0) {
      if (errno == EINTR) continue;
      return Unavailable("poll failed: " + ErrnoMessage());
    }
    if (r == 0) {
      if (wait_ms >= 0 && std::chrono::steady_clock::now() >= deadline) {
        return Unavailable("timed out waiting for a line");
      }
      continue;
    }
    char buf[1 << 16];
    ssize_t n = ::read(fd_, buf, sizeof buf);
    if (n < 0) {
      if (errno == EINTR || errno == EAGAIN) continue;
      return Unavailable("read failed: " + ErrnoMessage());
    }
    if (n == 0) {
      eof_ = true;
      continue;
    }
    buffer_.append(buf, static_cast<size_t>(n));
  }
}

Result<nlohmann::json> ParseJsonObject(const std::string& line) {
  FUJI_RETURN_IF_ERROR(CheckJsonDepth(line, "JSON line"));
  nlohmann::json j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return InvalidArgument("malformed JSON line");
  if (!j.is_object()) return InvalidArgument("JSON line is not an object");
  return j;
}

namespace {

// The field's value, or nullptr when `object` is not an object or lacks the field.
const nlohmann::json* FindField(const nlohmann::json& object, const char* key) {
  if (!object.is_object()) return nullptr;
  const auto it = object.find(key);
  return it == object.end() ? nullptr : &*it;
}

}  // namespace

int64_t IntField(const nlohmann::json& object, const char* key, int64_t fallback) {
  const nlohmann::json* v = FindField(object, key);
  if (v == nullptr || !v->is_number_integer()) return fallback;
  if (v->is_number_unsigned() && v->get<uint64_t>() > static_cast<uint64_t>(INT64_MAX)) return fallback;
  return v->get<int64_t>();
}

double NumberField(const nlohmann::json& object, const char* key, double fallback) {
  const nlohmann::json* v = FindField(object, key);
  return v != nullptr && v->is_number() ? v->get<double>() : fallback;
}

std::string StringField(const nlohmann::json& object, const char* key, const std::string& fallback) {
  const nlohmann::json* v = FindField(object, key);
  return v != nullptr && v->is_string() ? v->get<std::string>() : fallback;
}

nlohmann::json JsonField(const nlohmann::json& object, const char* key, const nlohmann::json& fallback) {
  const nlohmann::json* v = FindField(object, key);
  return v != nullptr ? *v : fallback;
}

}  // namespace fuji
