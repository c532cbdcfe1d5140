// Limits that more than one fuji program must agree on, in one place: what fujid stores, the agent
// must send, and the rank and the CLI must not exceed. A limit only one side enforces is a job that
// wedges at the boundary (a log line fujid refuses, retried by the agent forever).
#pragma once

#include <cstddef>
#include <string>

namespace fuji::limits {

// How deep any JSON from outside a process may nest (lib/common/json_bounds.h checks it).
inline constexpr int kMaxJsonDepth = 64;

// The longest log line fujid stores; the agent cuts longer ones (CutLine) before it reports them,
// and reads a rank's stderr in lines of at most this, cutting the rest.
inline constexpr size_t kMaxLogLineBytes = size_t{64} << 10;

// The marker that ends a cut line.
inline constexpr char kCutMarker[] = " [cut: line longer than 64 KiB]";

// `line` when it fits in max_bytes; else its head, ended at a UTF-8 character boundary, and
// kCutMarker, max_bytes in all.
std::string CutLine(std::string line, size_t max_bytes = kMaxLogLineBytes);

}  // namespace fuji::limits
