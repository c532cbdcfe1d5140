// Clock: time in ms (wall time, or steady time for leases), injected so the store and scheduler
// can run on fake time in tests.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>

#include "lib/common/wall_clock.h"

namespace fuji::store {

// Milliseconds since the Unix epoch. Implementations are thread-safe.
class Clock {
 public:
  virtual ~Clock() = default;
  virtual int64_t NowMs() const = 0;
};

// The system's real-time clock: timestamps are stored and shown to people, so wall time, not
// steady.
class SystemClock final : public Clock {
 public:
  int64_t NowMs() const override { return WallClockMs(); }
};

// Milliseconds of std::chrono::steady_clock: never jumps with the time of day, so leases and
// timeouts measured with it are right across NTP steps and clock changes. Not comparable between
// processes or across restarts.
class SteadyClock final : public Clock {
 public:
  int64_t NowMs() const override {
    return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now().time_since_epoch())
        .count();
  }
};

// A clock that moves only when told to; safe to set from one thread while others read it.
class FakeClock final : public Clock {
 public:
  explicit FakeClock(int64_t now_ms = 1'700'000'000'000) : now_ms_(now_ms) {}
  int64_t NowMs() const override { return now_ms_.load(std::memory_order_relaxed); }
  void SetMs(int64_t now_ms) { now_ms_.store(now_ms, std::memory_order_relaxed); }
  void AdvanceMs(int64_t delta_ms) { now_ms_.fetch_add(delta_ms, std::memory_order_relaxed); }

 private:
  std::atomic<int64_t> now_ms_;
};

}  // namespace fuji::store
