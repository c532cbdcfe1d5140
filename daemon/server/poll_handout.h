// PollHandout: the long-poll hand-out of assignments to agents. It owns the assignments placed on
// each agent that its poll has not taken yet, and the one poll per agent waiting for them; a poll
// is answered at once when something is pending, else when something is delivered or its wait is
// over. What was placed, and the leases, are the Dispatcher's.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "daemon/store/clock.h"
#include "fuji/v1/worker.pb.h"

namespace fuji::daemon {

// Thread-safe: mu_ guards the pending assignments, the waiting polls and the draining flag, and no
// poll's callback runs while it is held (a callback may call back in). Nothing else is locked
// while mu_ is held. The clock is not owned and must outlive it.
class PollHandout {
 public:
  using PollDone = std::function<void(std::vector<v1::Assignment>)>;

  // max_wait_ms caps how long a poll waits, whatever it asks.
  PollHandout(const store::Clock* clock, int64_t max_wait_ms);

  // Queues an assignment for the worker's next poll; Deliver hands it to a waiting one.
  void Add(const std::string& worker_id, v1::Assignment assignment);
  // Answers the worker's waiting poll with everything pending for it, if it has both.
  void Deliver(const std::string& worker_id);
  // Calls done exactly once: at once with what is pending (or with nothing when wait_ms <= 0 or
  // draining), else on the next Deliver for the worker or after wait_ms (capped), with nothing. A
  // newer poll of the same worker ends the older one, with nothing.
  void Poll(const std::string& worker_id, int64_t wait_ms, PollDone done);
  // Polls that waited long enough (all of them, once draining) get an empty answer.
  void ExpirePolls();
  // Every waiting poll gets an empty answer now, and later polls are answered at once.
  void Drain();

  // Whether the job waits for the worker's poll (placed there, not taken yet).
  bool IsPending(const std::string& worker_id, int64_t job_id) const;
  // The job is no longer placed (it ended, was cancelled or requeued): no poll gets it.
  void Withdraw(int64_t job_id);

 private:
  struct Waiter {
    int64_t deadline_ms;
    PollDone done;
  };

  const store::Clock* clock_;
  const int64_t max_wait_ms_;

  mutable std::mutex mu_;
  std::map<std::string, std::deque<v1::Assignment>> pending_;  // placed, not yet polled
  std::map<std::string, Waiter> waiters_;                      // one poll per worker
  bool draining_ = false;
};

}  // namespace fuji::daemon
