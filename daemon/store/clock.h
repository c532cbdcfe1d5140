// Clock: wall time in ms, injected so the store and scheduler can run on fake time in tests.
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
