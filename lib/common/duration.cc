// Durations as people type them: see duration.h.
#include "lib/common/duration.h"

#include <cctype>

namespace fuji {

Result<int64_t> ParseDurationMs(const std::string& text) {
  auto bad = [&text] {
    return InvalidArgument("bad duration '" + text + "': want a number and ms, s, m or h, e.g. 30s, 5m, 1h, 250ms");
  };
  size_t i = 0;
  while (i < text.size() && std::isdigit(static_cast<unsigned char>(text[i]))) ++i;
  if (i == 0 || i > 12) return bad();
  const int64_t n = std::stoll(text.substr(0, i));
  const std::string unit = text.substr(i);
  if (unit == "ms") return n;
  if (unit == "s" || unit.empty()) return n * 1000;
  if (unit == "m") return n * 60 * 1000;
  if (unit == "h") return n * 3600 * 1000;
  return bad();
}

}  // namespace fuji
