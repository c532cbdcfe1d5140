// Retention; see retention.h.
#include "daemon/store/retention.h"

#include <chrono>
#include <string>

#include "lib/common/log.h"

namespace fuji::store {

Retention::Retention(JobStore* store, const Clock* clock, RetentionPolicy policy)
    : store_(store), clock_(clock), policy_(policy) {}

Retention::~Retention() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void Retention::Start() {
  thread_ = std::thread([this] {
    do {
      Result<int64_t> deleted = Sweep();
      if (!deleted.ok()) {
        log::Warn("retention: " + deleted.status().ToString() + "; the next sweep tries again");
      } else if (*deleted > 0) {
        log::Info("retention: deleted " + std::to_string(*deleted) + " rows of ended jobs");
      }
    } while (Pause(policy_.interval_ms));
  });
}

bool Retention::Pause(int64_t ms) {
  std::unique_lock<std::mutex> lock(mu_);
  return !wake_.wait_for(lock, std::chrono::milliseconds(ms), [this] { return stopping_; });
}

Result<int64_t> Retention::Sweep() {
  const std::optional<int64_t> keep[] = {policy_.logs_ms, policy_.samples_ms, policy_.losses_ms};
  int64_t total = 0;
  for (int table = 0; table < 3; ++table) {
    if (!keep[table]) continue;
    const int64_t before_ms = clock_->NowMs() - *keep[table];
    if (before_ms <= done_before_ms_[table]) continue;
    while (true) {
      FUJI_ASSIGN_OR_RETURN(int deleted,
                            store_->PurgeEnded(static_cast<JobStore::Telemetry>(table),
                                               done_before_ms_[table], before_ms, policy_.batch_rows));
      total += deleted;
      if (deleted < policy_.batch_rows) break;
      if (!Pause(policy_.pause_ms)) return total;  // stopping: the next Retention goes on
    }
    done_before_ms_[table] = before_ms;
  }
  return total;
}

}  // namespace fuji::store
