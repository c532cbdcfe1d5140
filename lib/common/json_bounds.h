// How deep JSON from outside a process may nest. nlohmann's parser itself does not recurse, but a
// parsed value is copied, compared and destroyed recursively: a spec nested 400,000 deep once
// overflowed a gRPC thread's stack in fujid. Every parser of JSON that a user, a file or another
// process wrote checks the depth first, on the bytes, before any value exists.
#pragma once

#include <string_view>

#include <nlohmann/json.hpp>

#include "lib/common/limits.h"
#include "lib/common/status.h"

namespace fuji {

// No job spec, event, config, index or header fuji reads nests deeper than this.
inline constexpr int kMaxJsonDepth = limits::kMaxJsonDepth;

// OK when `text` nests at most max_depth arrays and objects, else INVALID_ARGUMENT "<what> nests
// arrays and objects deeper than N levels". Counts brackets outside strings in one pass over the
// bytes, without parsing and without recursion; malformed text is left for the parser to refuse.
// The message never repeats the text.
Status CheckJsonDepth(std::string_view text, std::string_view what, int max_depth = kMaxJsonDepth);

// nlohmann::json::parse without exceptions, after CheckJsonDepth: a discarded value when either
// refuses the text.
nlohmann::json ParseJsonBounded(std::string_view text, int max_depth = kMaxJsonDepth);

}  // namespace fuji
