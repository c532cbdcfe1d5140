// The time of day, for timestamps that people read and that other processes and machines compare
// (events, samples, log lines): milliseconds since the Unix epoch by the system's real-time clock.
// Durations are measured with std::chrono::steady_clock instead, which never jumps.
#pragma once

#include <chrono>
#include <cstdint>

namespace fuji {

inline int64_t WallClockMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

}  // namespace fuji
