// EventHub: in-memory fan-out of what happens to a job (state changes, progress, new log lines)
// to the WatchJob streams that follow it. Nothing is stored: a watcher reads the current state and
// the logs from the store when it starts, and the hub only carries what happens afterwards.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <mutex>

#include "fuji/v1/jobs.pb.h"

namespace fuji::daemon {

// Thread-safe. Callbacks run on the publishing thread while the hub's lock is held: they must be
// quick and must not call back into the hub. After Unsubscribe returns, the callback is not running
// and will not run again, so its owner may be destroyed.
class EventHub {
 public:
  // One published event. For log events, `event` is empty (new lines are in the store: the
  // watcher reads them after its last seq).
  struct Event {
    v1::WatchEvent event;
    bool logs_appended = false;
  };
  using Callback = std::function<void(const Event&)>;

  // Returns a token for Unsubscribe.
  int64_t Subscribe(int64_t job_id, Callback callback);
  void Unsubscribe(int64_t token);
  bool HasSubscribers(int64_t job_id) const;
  void Publish(int64_t job_id, const Event& event);

 private:
  struct Subscriber {
    int64_t job_id;
    Callback callback;
  };
  mutable std::mutex mu_;
  int64_t next_token_ = 1;
  std::map<int64_t, Subscriber> subscribers_;  // by token; few watchers, a scan is fine
};

}  // namespace fuji::daemon
