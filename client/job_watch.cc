// WatchJob until terminal, with a redrawn progress line on a terminal or plain lines otherwise.
#include "client/job_watch.h"

#include <chrono>
#include <string>
#include <thread>

#include "client/format_jobs.h"
#include "client/format_telemetry.h"
#include "client/format_text.h"

namespace fuji::client {
namespace {

// What the terminal line shows, redrawn after every event.
class StatusLine {
 public:
  explicit StatusLine(const WatchDisplay& display) : display_(display) {}

  void OnEvent(const v1::WatchEvent& event) {
    if (event.has_job()) job_ = event.job();
    FILE* out = display_.out;
    const bool terminal = display_.mode == WatchDisplay::Mode::kTerminal;
    switch (event.what_case()) {
      case v1::WatchEvent::kState:
        if (display_.mode == WatchDisplay::Mode::kLines) {
          std::fprintf(out, "state %s%s\n", JobStateName(event.state()).c_str(),
                       event.job().reason().empty() ? "" : (" (" + event.job().reason() + ")").c_str());
        }
        // The first event carries the progress reported before the watch began.
        if (!seen_progress_ && !event.job().progress().phase().empty()) OnProgress(event.job().progress());
        break;
      case v1::WatchEvent::kProgress:
        OnProgress(event.progress());
        break;
      case v1::WatchEvent::kLog:
        if (display_.show_logs && display_.mode != WatchDisplay::Mode::kNone) {
          if (terminal) std::fputs("\r\033[K", out);
          std::fprintf(out, "%s\n", LogLineText(event.log()).c_str());
        }
        break;
      default: break;
    }
    if (terminal) Draw();
    std::fflush(out);
  }

  void Finish() {
    if (display_.mode != WatchDisplay::Mode::kTerminal) return;
    std::fputs("\r\033[K", display_.out);
    std::fflush(display_.out);
  }

 private:
  void OnProgress(const v1::Progress& p) {
    seen_progress_ = true;
    std::string text;
    if (p.phase() == "train") {
      // The rate since the first step seen in this attempt (a retry starts over: done drops).
      if (first_at_ms_ <= 0 || p.done() < first_done_) {
        first_done_ = p.done();
        first_at_ms_ = p.at_ms();
      }
      text = TrainProgressText(p, EtaMs(first_done_, first_at_ms_, p.done(), p.at_ms(), p.total()));
      bar_ = ProgressBar("train", p.done(), p.total()) + "  " + text;
    } else {
      text = p.phase() + " " + std::to_string(p.done()) + "/" + std::to_string(p.total());
      bar_ = ProgressBar(p.phase(), p.done(), p.total());
    }
    if (display_.mode == WatchDisplay::Mode::kLines) std::fprintf(display_.out, "progress %s\n", text.c_str());
  }

  void Draw() {
    std::string line = "job " + std::to_string(job_.id()) + " " + JobStateName(job_.state());
    if (!bar_.empty()) line += "  " + bar_;
    if (job_.state() == v1::QUEUED && !job_.reason().empty()) line += "  (" + job_.reason() + ")";
    std::fprintf(display_.out, "\r\033[K%s", line.c_str());
  }

  const WatchDisplay& display_;
  v1::Job job_;
  std::string bar_;
  bool seen_progress_ = false;
  int64_t first_done_ = 0, first_at_ms_ = 0;  // the first train progress of the attempt
};

}  // namespace

Result<v1::Job> FollowJob(DaemonClient& client, int64_t id, const WatchDisplay& display, int64_t reconnect_for_ms) {
  StatusLine line(display);
  v1::Job last;
  bool seen = false;
  int64_t last_seq = 0;
  int32_t token_attempt = -1;
  int64_t next_token = 0;
  auto unreachable_since = std::chrono::steady_clock::time_point::min();
  for (;;) {
    Status status = client.Watch(id, last_seq, [&](const v1::WatchEvent& event) {
      if (event.what_case() == v1::WatchEvent::kTokens) {
        const v1::TokenDelta& run = event.tokens();
        if (run.attempt() != token_attempt) {
          token_attempt = run.attempt();
          next_token = 0;
        }
        if (run.index() == next_token) {
          next_token += run.ids_size();
          display.on_tokens(run);
        }
        return true;
      }
      if (event.has_job()) last = event.job();
      seen = true;
      if (event.what_case() == v1::WatchEvent::kLog) last_seq = std::max(last_seq, event.log().seq());
      line.OnEvent(event);
      return true;
    }, display.on_tokens != nullptr);
    if (seen && IsTerminal(last.state())) break;
    if (!status.ok()) {
      // A daemon restarting is waited for, but only once the job was seen to exist.
      if (status.code() != StatusCode::kUnavailable || !seen) {
        line.Finish();
        return status;
      }
      const auto now = std::chrono::steady_clock::now();
      if (unreachable_since == std::chrono::steady_clock::time_point::min()) unreachable_since = now;
      if (now - unreachable_since > std::chrono::milliseconds(reconnect_for_ms)) {
        line.Finish();
        return status;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(500));
      continue;
    }
    unreachable_since = std::chrono::steady_clock::time_point::min();
    // The stream ended without a terminal event: ask, and watch again if it is still going.
    auto job = client.GetJob(id);
    if (!job.ok()) {
      line.Finish();
      return job.status();
    }
    last = *job;
    seen = true;
    if (IsTerminal(last.state())) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  line.Finish();
  return last;
}

int ReportJobOutcome(const v1::Job& job) {
  if (job.state() == v1::SUCCEEDED) return 0;
  std::fprintf(stderr, "fuji: %s\n", JobOutcome(job).c_str());
  return 1;
}

}  // namespace fuji::client
