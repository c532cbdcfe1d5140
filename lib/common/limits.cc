// Cutting lines to the shared limits; see limits.h.
#include "lib/common/limits.h"

#include <cstring>

namespace fuji::limits {

std::string CutLine(std::string line, size_t max_bytes) {
  if (line.size() <= max_bytes) return line;
  const size_t marker = std::strlen(kCutMarker);
  size_t keep = max_bytes > marker ? max_bytes - marker : 0;
  // Back off continuation bytes so that no character is cut in half.
  while (keep > 0 && (static_cast<unsigned char>(line[keep]) & 0xc0) == 0x80) --keep;
  line.resize(keep);
  line += kCutMarker;
  if (line.size() > max_bytes) line.resize(max_bytes);
  return line;
}

}  // namespace fuji::limits
