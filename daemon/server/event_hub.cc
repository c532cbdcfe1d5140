// EventHub; see event_hub.h.
#include "daemon/server/event_hub.h"

namespace fuji::daemon {

int64_t EventHub::Subscribe(int64_t job_id, Callback callback) {
  std::lock_guard<std::mutex> lock(mu_);
  int64_t token = next_token_++;
  subscribers_.emplace(token, Subscriber{job_id, std::move(callback)});
  return token;
}

void EventHub::Unsubscribe(int64_t token) {
  std::lock_guard<std::mutex> lock(mu_);
  subscribers_.erase(token);
}

bool EventHub::HasSubscribers(int64_t job_id) const {
  std::lock_guard<std::mutex> lock(mu_);
  for (const auto& [token, subscriber] : subscribers_) {
    if (subscriber.job_id == job_id) return true;
  }
  return false;
}

void EventHub::Publish(int64_t job_id, const Event& event) {
  std::lock_guard<std::mutex> lock(mu_);
  for (const auto& [token, subscriber] : subscribers_) {
    if (subscriber.job_id == job_id) subscriber.callback(event);
  }
}

}  // namespace fuji::daemon
