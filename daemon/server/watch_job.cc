// JobService::WatchJob: a server stream fed by the EventHub. The current state comes first, then
// the logs after after_log_seq (and with tokens, the tokens generated so far), then whatever
// happens, until the job is terminal.
#include <deque>
#include <functional>
#include <mutex>

#include "daemon/server/grpc_status.h"
#include "daemon/server/job_service.h"

namespace fuji::daemon {
namespace {

// Deletes itself in OnDone. Events may arrive from any thread (the hub's publishers); one write is
// in flight at a time, the rest wait in queue_.
class Watcher final : public grpc::ServerWriteReactor<v1::WatchEvent> {
 public:
  // decorate adds what the first event's job shows beyond its row (JobService::AddProgress).
  // tokens_so_far: the tokens of the current attempt (Dispatcher::Tokens); null: no tokens.
  Watcher(store::JobStore* store, EventHub* hub, int64_t job_id, int64_t after_seq,
          const std::function<void(v1::Job*)>& decorate,
          const std::function<std::vector<v1::TokenDelta>()>& tokens_so_far)
      : store_(store), hub_(hub), job_id_(job_id), last_seq_(after_seq), tokens_(tokens_so_far != nullptr) {
    // Subscribe before reading the state, so nothing falls between the two.
    token_ = hub_->Subscribe(job_id_, [this](const EventHub::Event& e) { OnEvent(e); });
    std::lock_guard<std::mutex> lock(mu_);
    Result<store::JobRecord> job = store_->Get(job_id_);
    if (!job.ok()) {
      finished_ = true;
      Finish(ToGrpcStatus(job.status()));
      return;
    }
    v1::WatchEvent first;
    *first.mutable_job() = JobToProto(*job);
    decorate(first.mutable_job());
    first.set_state(StateToProto(job->state));
    if (store::IsTerminal(job->state)) terminal_ = true;
    queue_.push_front(first);
    ReadLogs();
    if (tokens_) {
      for (v1::TokenDelta& run : tokens_so_far()) QueueTokens(std::move(run));
    }
    WriteNext();
  }

  void OnWriteDone(bool ok) override {
    std::lock_guard<std::mutex> lock(mu_);
    writing_ = false;
    if (!ok || cancelled_) {
      if (!finished_) {
        finished_ = true;
        Finish(grpc::Status(grpc::StatusCode::CANCELLED, "watch ended"));
      }
      return;
    }
    WriteNext();
  }

  void OnCancel() override {
    std::lock_guard<std::mutex> lock(mu_);
    cancelled_ = true;
    if (!writing_ && !finished_) {
      finished_ = true;
      Finish(grpc::Status(grpc::StatusCode::CANCELLED, "watch cancelled"));
    }
  }

  void OnDone() override {
    hub_->Unsubscribe(token_);
    delete this;
  }

 private:
  void OnEvent(const EventHub::Event& event) {
    std::lock_guard<std::mutex> lock(mu_);
    if (finished_) return;
    if (event.logs_appended) {
      ReadLogs();
    } else if (event.event.what_case() == v1::WatchEvent::kTokens) {
      if (tokens_) QueueTokens(event.event.tokens());
    } else {
      queue_.push_back(event.event);
      if (event.event.what_case() == v1::WatchEvent::kState) {
        v1::JobState state = event.event.state();
        if (state == v1::SUCCEEDED || state == v1::FAILED || state == v1::CANCELLED) {
          terminal_ = true;
        }
      }
    }
    WriteNext();
  }

  // Queues a run of tokens unless it was queued already: the runs read when the watch began and
  // those published meanwhile overlap (mu_ held). A new attempt starts again from its first.
  void QueueTokens(v1::TokenDelta run) {
    if (run.attempt() != token_attempt_) {
      token_attempt_ = run.attempt();
      next_token_ = 0;
    }
    if (run.index() != next_token_) return;
    next_token_ += run.ids_size();
    v1::WatchEvent event;
    *event.mutable_tokens() = std::move(run);
    queue_.push_back(std::move(event));
  }

  // Queues the store's log lines after last_seq_ (mu_ held).
  void ReadLogs() {
    Result<std::vector<store::LogLine>> lines = store_->Logs(job_id_, last_seq_, 1000);
    if (!lines.ok()) return;
    for (const store::LogLine& line : *lines) {
      v1::WatchEvent event;
      v1::LogLine* log = event.mutable_log();
      log->set_seq(line.seq);
      log->set_at_ms(line.at_ms);
      log->set_stream(line.stream);
      log->set_line(line.line);
      last_seq_ = line.seq;
      queue_.push_back(std::move(event));
    }
  }

  // Starts the next write, or ends the stream after the terminal state (mu_ held).
  void WriteNext() {
    if (writing_ || finished_) return;
    if (queue_.empty()) {
      if (terminal_) {
        finished_ = true;
        Finish(grpc::Status::OK);
      }
      return;
    }
    current_ = std::move(queue_.front());
    queue_.pop_front();
    writing_ = true;
    StartWrite(&current_);
  }

  store::JobStore* store_;
  EventHub* hub_;
  const int64_t job_id_;
  int64_t token_ = 0;

  std::mutex mu_;
  int64_t last_seq_;
  const bool tokens_;
  int32_t token_attempt_ = -1;
  int64_t next_token_ = 0;
  std::deque<v1::WatchEvent> queue_;
  v1::WatchEvent current_;  // the write in flight
  bool writing_ = false;
  bool terminal_ = false;   // the job ended: finish once the queue is written
  bool cancelled_ = false;
  bool finished_ = false;
};

// A watch refused before it starts (no valid token, not the caller's job). Deletes itself in OnDone.
class Refused final : public grpc::ServerWriteReactor<v1::WatchEvent> {
 public:
  explicit Refused(const Status& status) { Finish(ToGrpcStatus(status)); }
  void OnDone() override { delete this; }
};

}  // namespace

grpc::ServerWriteReactor<v1::WatchEvent>* JobService::WatchJob(
    grpc::CallbackServerContext* context, const v1::WatchJobRequest* request) {
  Result<Caller> caller = auth_->User(*context);
  if (!caller.ok()) return new Refused(caller.status());
  if (Result<store::JobRecord> job = OwnedJob(*caller, request->id()); !job.ok()) return new Refused(job.status());
  std::function<std::vector<v1::TokenDelta>()> tokens;
  if (request->tokens()) tokens = [this, id = request->id()] { return dispatcher_->Tokens(id); };
  return new Watcher(store_, hub_, request->id(), request->after_log_seq(),
                     [this](v1::Job* job) { AddProgress(job); }, tokens);
}

}  // namespace fuji::daemon
