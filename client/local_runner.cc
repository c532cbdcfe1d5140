// Foreground rank runs through the shared launcher.
#include "client/local_runner.h"

#include <unistd.h>

#include <cstdio>
#include <deque>

#include "worker/launcher/child_process.h"

namespace fuji::client {

Result<nlohmann::json> RunLocal(const nlohmann::json& request, const LocalRunOptions& options) {
  FUJI_ASSIGN_OR_RETURN(std::string executable, launch::FindRankExecutable());
  FUJI_ASSIGN_OR_RETURN(auto rank, launch::ChildProcess::Spawn({executable, {}, {}}));
  FUJI_RETURN_IF_ERROR(rank->Send(request));
  rank->CloseInput();

  std::deque<std::string> last_logs;  // context for a rank that dies without saying why
  std::optional<nlohmann::json> result;
  Status failure;
  bool progress_shown = false;
  for (;;) {
    auto next = rank->Next(std::chrono::hours(24 * 365));
    if (!next.ok()) return next.status();
    if (!next->has_value()) break;
    const launch::ChildOutput& out = **next;
    if (out.kind == launch::ChildOutput::Kind::kLog) {
      if (options.forward_logs) std::fprintf(stderr, "%s\n", out.line.c_str());
      last_logs.push_back(out.line);
      if (last_logs.size() > 5) last_logs.pop_front();
      continue;
    }
    const nlohmann::json& e = out.event;
    const std::string kind = e.value("event", "");
    if (kind == "result") {
      result = e.value("result", nlohmann::json::object());
    } else if (kind == "error") {
      failure = Status(StatusCodeFromName(e.value("code", "INTERNAL")), e.value("message", "failed"));
    } else if (kind == "progress" && options.show_progress) {
      std::fprintf(stderr, "\r%s %lld/%lld", e.value("phase", "").c_str(), e.value("done", 0LL), e.value("total", 0LL));
      progress_shown = true;
    }
  }
  if (progress_shown) std::fprintf(stderr, "\r\033[K");
  const launch::ExitInfo exit = rank->Wait();
  if (!failure.ok()) return failure;
  if (result) return *result;
  std::string context;
  for (const auto& l : last_logs) context += (context.empty() ? "" : " | ") + l;
  return Internal("fuji-rank ended with " + exit.Describe() + " and no result" +
                  (context.empty() ? "" : ": " + context));
}

}  // namespace fuji::client
