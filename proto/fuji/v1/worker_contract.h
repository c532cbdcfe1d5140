// What fujid and fuji-agent promise each other beyond the messages of worker.proto.
#pragma once

#include <cstdint>

namespace fuji::v1 {

// An agent that loses fujid keeps its ranks running and tries to reach it again at least this
// often (gRPC's reconnect backoff ceiling; gRPC adds up to 20% jitter). A fujid that restarts
// therefore waits this long, twice, on top of a whole lease before it declares a recovered job's
// agent lost: every agent has had time to reconnect and to send a heartbeat.
inline constexpr int64_t kAgentReconnectCeilingMs = 1000;

// Fencing. An agent that has not renewed its leases for a whole lease TTL (counted from when it
// sent its last successful heartbeat) stops its jobs' ranks itself: SIGTERM, SIGKILL after its
// cancel grace (2 s). fujid places a silent agent's jobs elsewhere only after the TTL plus this
// margin (counted from when the heartbeat arrived, on its monotonic clock), so the old ranks are
// gone before new ones start: no two attempts of a job ever run at once.
inline constexpr int64_t kFenceMarginMs = 5000;
inline constexpr int64_t RequeueAfterMs(int64_t lease_ttl_ms) { return lease_ttl_ms + kFenceMarginMs; }

inline constexpr int64_t RecoveredLeaseMs(int64_t lease_ttl_ms) {
  return RequeueAfterMs(lease_ttl_ms) + 2 * kAgentReconnectCeilingMs;
}

}  // namespace fuji::v1
