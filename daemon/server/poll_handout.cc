// PollHandout; see poll_handout.h.
#include "daemon/server/poll_handout.h"

#include <algorithm>
#include <utility>

#include "lib/common/limits.h"

namespace fuji::daemon {
namespace {

// The front of a worker's pending assignments that one poll answer carries: at least one, then as
// many as fit in limits::kMaxPollBatchBytes; the rest wait for the agent's next poll, which is
// answered at once. Empties the map entry when all are taken.
std::vector<v1::Assignment> TakeBatch(std::map<std::string, std::deque<v1::Assignment>>& pending,
                                      std::map<std::string, std::deque<v1::Assignment>>::iterator it) {
  std::vector<v1::Assignment> batch;
  size_t bytes = 0;
  std::deque<v1::Assignment>& queue = it->second;
  while (!queue.empty()) {
    const size_t next = queue.front().ByteSizeLong();
    if (!batch.empty() && bytes + next > limits::kMaxPollBatchBytes) break;
    bytes += next;
    batch.push_back(std::move(queue.front()));
    queue.pop_front();
  }
  if (queue.empty()) pending.erase(it);
  return batch;
}

}  // namespace

PollHandout::PollHandout(const store::Clock* clock, int64_t max_wait_ms)
    : clock_(clock), max_wait_ms_(max_wait_ms) {}

void PollHandout::Add(const std::string& worker_id, v1::Assignment assignment) {
  std::lock_guard<std::mutex> lock(mu_);
  pending_[worker_id].push_back(std::move(assignment));
}

void PollHandout::Deliver(const std::string& worker_id) {
  PollDone done;
  std::vector<v1::Assignment> batch;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto waiter = waiters_.find(worker_id);
    auto pending = pending_.find(worker_id);
    if (waiter == waiters_.end() || pending == pending_.end() || pending->second.empty()) return;
    done = std::move(waiter->second.done);
    waiters_.erase(waiter);
    batch = TakeBatch(pending_, pending);
  }
  done(std::move(batch));
}

void PollHandout::Poll(const std::string& worker_id, int64_t wait_ms, PollDone done) {
  PollDone replaced;
  std::vector<v1::Assignment> batch;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto pending = pending_.find(worker_id);
    if (pending != pending_.end() && !pending->second.empty()) {
      batch = TakeBatch(pending_, pending);
    } else if (wait_ms > 0 && !draining_) {
      wait_ms = std::min(wait_ms, max_wait_ms_);
      auto old = waiters_.find(worker_id);
      if (old != waiters_.end()) replaced = std::move(old->second.done);  // a newer poll wins
      waiters_[worker_id] = Waiter{clock_->NowMs() + wait_ms, std::move(done)};
    }
  }
  if (replaced) replaced({});
  if (done) done(std::move(batch));
}

void PollHandout::ExpirePolls() {
  std::vector<PollDone> expired;
  {
    std::lock_guard<std::mutex> lock(mu_);
    const int64_t now_ms = clock_->NowMs();
    for (auto it = waiters_.begin(); it != waiters_.end();) {
      if (draining_ || it->second.deadline_ms <= now_ms) {
        expired.push_back(std::move(it->second.done));
        it = waiters_.erase(it);
      } else {
        ++it;
      }
    }
  }
  for (PollDone& done : expired) done({});
}

void PollHandout::Drain() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    draining_ = true;
  }
  ExpirePolls();
}

bool PollHandout::IsPending(const std::string& worker_id, int64_t job_id) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = pending_.find(worker_id);
  return it != pending_.end() &&
         std::any_of(it->second.begin(), it->second.end(),
                     [&](const v1::Assignment& a) { return a.job_id() == job_id; });
}

void PollHandout::Withdraw(int64_t job_id) {
  std::lock_guard<std::mutex> lock(mu_);
  for (auto& [worker, queue] : pending_) {
    queue.erase(std::remove_if(queue.begin(), queue.end(),
                               [&](const v1::Assignment& a) { return a.job_id() == job_id; }),
                queue.end());
  }
}

}  // namespace fuji::daemon
