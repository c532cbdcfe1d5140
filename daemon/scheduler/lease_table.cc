// Assignment leases and retry decisions; see lease_table.h.
#include "daemon/scheduler/lease_table.h"

#include "daemon/scheduler/reasons.h"

namespace fuji::sched {

std::string ExpiredLease::Reason() const {
  return "agent " + worker_id + " lost (no heartbeat for " + SecondsText(silent_ms) + ")";
}

void LeaseTable::Grant(int64_t job_id, const std::string& worker_id, int64_t now_ms,
                       int64_t ttl_ms) {
  Release(job_id);
  Hold(job_id, worker_id, now_ms, ttl_ms);
}

void LeaseTable::Hold(int64_t job_id, const std::string& worker_id, int64_t now_ms, int64_t ttl_ms) {
  leases_[{job_id, worker_id}] = Lease{now_ms, now_ms + ttl_ms};
}

int LeaseTable::Renew(const std::string& worker_id, int64_t now_ms, int64_t ttl_ms) {
  int renewed = 0;
  for (auto& [key, lease] : leases_) {
    if (key.second != worker_id) continue;
    lease.renewed_ms = now_ms;
    lease.expires_ms = now_ms + ttl_ms;
    ++renewed;
  }
  return renewed;
}

void LeaseTable::Release(int64_t job_id) {
  leases_.erase(leases_.lower_bound({job_id, std::string()}), leases_.lower_bound({job_id + 1, std::string()}));
}

std::vector<ExpiredLease> LeaseTable::Expired(int64_t now_ms) const {
  std::vector<ExpiredLease> expired;
  for (const auto& [key, lease] : leases_) {
    if (now_ms >= lease.expires_ms) {
      expired.push_back({key.first, key.second, now_ms - lease.renewed_ms});
    }
  }
  return expired;
}

RetryDecision DecideRetry(const std::string& cause, int attempts, int max_attempts) {
  if (attempts < max_attempts) {
    return {true, cause + "; requeued for attempt " + std::to_string(attempts + 1) + " of " +
                      std::to_string(max_attempts)};
  }
  return {false, cause + "; retries exhausted (" + std::to_string(attempts) + " of " +
                     std::to_string(max_attempts) + ")"};
}

}  // namespace fuji::sched
