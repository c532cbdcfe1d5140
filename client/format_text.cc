// Fitted tables, durations, ages, timestamps and progress bars as plain strings.
#include "client/format_text.h"

#include <time.h>

#include <algorithm>
#include <cctype>
#include <cstdint>
#include <cstdio>

namespace fuji::client {

std::string RenderTable(const std::vector<std::string>& header,
                        const std::vector<std::vector<std::string>>& rows) {
  std::vector<size_t> widths(header.size(), 0);
  auto widen = [&widths](const std::vector<std::string>& row) {
    for (size_t i = 0; i < row.size() && i < widths.size(); ++i) widths[i] = std::max(widths[i], row[i].size());
  };
  widen(header);
  for (const auto& row : rows) widen(row);
  std::string out;
  auto emit = [&](const std::vector<std::string>& row) {
    std::string line;
    for (size_t i = 0; i < widths.size(); ++i) {
      const std::string cell = i < row.size() ? row[i] : "";
      line += cell;
      if (i + 1 < widths.size()) line += std::string(widths[i] - cell.size() + 2, ' ');
    }
    while (!line.empty() && line.back() == ' ') line.pop_back();
    out += line + "\n";
  };
  emit(header);
  for (const auto& row : rows) emit(row);
  return out;
}

std::string FormatAge(int64_t since_ms, int64_t now_ms) {
  if (since_ms <= 0 || now_ms < since_ms) return "-";
  const int64_t s = (now_ms - since_ms) / 1000;
  if (s < 60) return std::to_string(s) + "s";
  if (s < 3600) return std::to_string(s / 60) + "m";
  if (s < 86400) return std::to_string(s / 3600) + "h";
  return std::to_string(s / 86400) + "d";
}

std::string FormatLocalTime(int64_t epoch_ms) {
  const time_t secs = static_cast<time_t>(epoch_ms >= 0 ? epoch_ms / 1000 : (epoch_ms - 999) / 1000);
  const int ms = static_cast<int>(epoch_ms - static_cast<int64_t>(secs) * 1000);
  struct tm tm {};
  ::localtime_r(&secs, &tm);
  char buf[64];
  std::snprintf(buf, sizeof buf, "%04d/%02d/%02d %02d:%02d:%02d.%03d", tm.tm_year + 1900, tm.tm_mon + 1,
                tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ms);
  return buf;
}

std::string Fixed(double value, int decimals) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", decimals, value);
  return buf;
}

std::string Grouped(double value) {
  std::string digits = Fixed(value < 0 ? -value : value, 0);
  if (digits.find_first_not_of("0123456789") != std::string::npos) return Fixed(value, 0);  // nan, inf
  for (size_t i = digits.size(); i > 3; i -= 3) digits.insert(i - 3, ",");
  return (value <= -0.5 ? "-" : "") + digits;
}

std::string FormatEta(int64_t ms) {
  if (ms < 0) return "-";
  const int64_t s = (ms + 500) / 1000;
  char buf[32];
  if (s < 60) {
    std::snprintf(buf, sizeof buf, "%llds", static_cast<long long>(s));
  } else if (s < 3600) {
    std::snprintf(buf, sizeof buf, "%lldm%02llds", static_cast<long long>(s / 60),
                  static_cast<long long>(s % 60));
  } else {
    std::snprintf(buf, sizeof buf, "%lldh%02lldm", static_cast<long long>(s / 3600),
                  static_cast<long long>(s / 60 % 60));
  }
  return buf;
}

std::string ProgressBar(const std::string& phase, int64_t done, int64_t total, int width) {
  if (total <= 0) return phase;
  const int64_t clamped = std::clamp<int64_t>(done, 0, total);
  const int filled = static_cast<int>(clamped * width / total);
  return "[" + std::string(filled, '#') + std::string(width - filled, '-') + "] " + phase + " " +
         std::to_string(done) + "/" + std::to_string(total);
}

std::string EscapeControls(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  char hex[8];
  size_t i = 0;
  while (i < text.size()) {
    const auto b = static_cast<unsigned char>(text[i]);
    if (b < 0x80) {
      if ((b < 0x20 && b != '\t' && b != '\n') || b == 0x7f) {
        std::snprintf(hex, sizeof hex, "\\x%02x", b);
        out += hex;
      } else {
        out += static_cast<char>(b);
      }
      ++i;
      continue;
    }
    // A UTF-8 sequence: its length from the lead byte, then continuation bytes, shortest form.
    size_t len = 0;
    uint32_t cp = 0;
    if (b >= 0xc2 && b <= 0xdf) {
      len = 2;
      cp = b & 0x1f;
    } else if (b >= 0xe0 && b <= 0xef) {
      len = 3;
      cp = b & 0x0f;
    } else if (b >= 0xf0 && b <= 0xf4) {
      len = 4;
      cp = b & 0x07;
    }
    bool valid = len > 0 && i + len <= text.size();
    for (size_t k = 1; valid && k < len; ++k) {
      const auto c = static_cast<unsigned char>(text[i + k]);
      if ((c & 0xc0) != 0x80) valid = false;
      cp = (cp << 6) | (c & 0x3f);
    }
    if (valid && ((len == 3 && (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff))) || (len == 4 && (cp < 0x10000 || cp > 0x10ffff)))) {
      valid = false;
    }
    if (!valid) {
      std::snprintf(hex, sizeof hex, "\\x%02x", b);
      out += hex;
      ++i;
      continue;
    }
    if (cp >= 0x80 && cp <= 0x9f) {
      std::snprintf(hex, sizeof hex, "\\u%04x", static_cast<unsigned>(cp));
      out += hex;
    } else {
      out.append(text.substr(i, len));
    }
    i += len;
  }
  return out;
}

}  // namespace fuji::client
