// What fujid and fuji-agent promise each other beyond the messages of worker.proto.
#pragma once

#include <cstdint>

namespace fuji::v1 {

// An agent that loses fujid keeps its ranks running and tries to reach it again at least this
// often (gRPC's reconnect backoff ceiling; gRPC adds up to 20% jitter). A fujid that restarts
// therefore waits this long, twice, on top of a whole lease before it declares a recovered job's
// agent lost: every agent has had time to reconnect and to send a heartbeat.
inline constexpr int64_t kAgentReconnectCeilingMs = 1000;
inline constexpr int64_t RecoveredLeaseMs(int64_t lease_ttl_ms) {
  return lease_ttl_ms + 2 * kAgentReconnectCeilingMs;
}

}  // namespace fuji::v1
