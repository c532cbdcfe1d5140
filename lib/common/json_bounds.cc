// The depth check of JSON texts; see json_bounds.h.
#include "lib/common/json_bounds.h"

#include <string>

namespace fuji {

Status CheckJsonDepth(std::string_view text, std::string_view what, int max_depth) {
  int depth = 0;
  bool in_string = false, escaped = false;
  for (const char c : text) {
    if (in_string) {
      if (escaped) {
        escaped = false;
      } else if (c == '\\') {
        escaped = true;
      } else if (c == '"') {
        in_string = false;
      }
      continue;
    }
    switch (c) {
      case '"': in_string = true; break;
      case '[':
      case '{':
        if (++depth > max_depth) {
          return InvalidArgument(std::string(what) + " nests arrays and objects deeper than " +
                                 std::to_string(max_depth) + " levels");
        }
        break;
      case ']':
      case '}':
        if (depth > 0) --depth;
        break;
      default: break;
    }
  }
  return Status::Ok();
}

nlohmann::json ParseJsonBounded(std::string_view text, int max_depth) {
  if (!CheckJsonDepth(text, "", max_depth).ok()) return nlohmann::json::value_t::discarded;
  return nlohmann::json::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/false);
}

}  // namespace fuji
