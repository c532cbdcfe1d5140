// Retention: fujid --retain; deletes the logs, samples and losses of jobs that ended long ago, in
// small batches, on a thread of its own.
#pragma once

#include <array>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <optional>
#include <thread>

#include "daemon/store/clock.h"
#include "daemon/store/job_store.h"

namespace fuji::store {

struct RetentionPolicy {
  // How long after a job ended each kind of its telemetry is kept; nullopt: for good.
  std::optional<int64_t> logs_ms, samples_ms, losses_ms;
  // Rows deleted per write. Each batch is one small write among the others (the store's group
  // commit), so submits and transitions never wait behind a long delete.
  int batch_rows = 500;
  int64_t pause_ms = 20;          // between two batches of one sweep
  int64_t interval_ms = 600'000;  // between sweeps

  bool any() const { return logs_ms || samples_ms || losses_ms; }
};

// Sweeps: for each kind of telemetry with a retention, delete the rows of jobs that ended more
// than that long ago, batch by batch, until none is left. The job rows, their events and results
// stay. Each sweep starts where the last one ended (the time before which everything of its kind
// is gone), so a sweep reads only the jobs that ended since; a new Retention starts from the
// beginning once.
//
// Thread safety: Sweep is for one thread at a time (the thread Start makes, or a test's).
// store and clock are not owned and must outlive this.
class Retention {
 public:
  Retention(JobStore* store, const Clock* clock, RetentionPolicy policy);
  // Stops the thread (a sweep under way stops after its current batch).
  ~Retention();
  Retention(const Retention&) = delete;
  Retention& operator=(const Retention&) = delete;

  // Sweeps now, then every interval, on a thread of its own. Errors are logged; the next sweep
  // tries again.
  void Start();
  // One sweep; returns the rows deleted. Stops at the first error.
  Result<int64_t> Sweep();

 private:
  // Waits up to ms or until stopped; false when stopped.
  bool Pause(int64_t ms);

  JobStore* store_;
  const Clock* clock_;
  const RetentionPolicy policy_;
  // Per JobStore::Telemetry: every row of jobs that ended before this is gone.
  std::array<int64_t, 3> done_before_ms_{};
  std::mutex mu_;
  std::condition_variable wake_;
  bool stopping_ = false;  // guarded by mu_
  std::thread thread_;
};

}  // namespace fuji::store
