// This node's rates for the planner, from a fuji-rank; see node_rates.h.
#include "worker/launcher/node_rates.h"

#include <algorithm>
#include <memory>
#include <optional>

#include "worker/launcher/child_process.h"

namespace fuji::launch {

Result<nlohmann::json> MeasureNodeRates(const std::string& rank_executable, std::chrono::milliseconds timeout,
                                        const std::atomic<bool>* stop,
                                        const std::optional<Confinement>& confinement) {
  ChildSpec spec;
  spec.executable = rank_executable;
  spec.confinement = confinement;
  Result<std::unique_ptr<ChildProcess>> rank = ChildProcess::Spawn(spec);
  if (!rank.ok()) return Unavailable("cannot start fuji-rank: " + rank.status().message());
  ChildProcess& proc = **rank;
  FUJI_RETURN_IF_ERROR(proc.Send({{"op", "calibrate"}, {"id", "calibrate"}}));
  proc.CloseInput();
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  std::string last_log;
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      proc.Terminate(std::chrono::milliseconds(500));
      return Unavailable("fuji-rank's calibration took longer than " + std::to_string(timeout.count()) + " ms");
    }
    if (stop != nullptr && stop->load()) {
      proc.Terminate(std::chrono::milliseconds(500));
      return Unavailable("calibration stopped");
    }
    Result<std::optional<ChildOutput>> next = proc.Next(std::min(left, std::chrono::milliseconds(100)));
    if (!next.ok()) continue;  // timed out: the deadline check ends the loop
    if (!next->has_value()) break;
    const ChildOutput& out = **next;
    if (out.kind == ChildOutput::Kind::kLog) {
      last_log = out.line;
      continue;
    }
    const std::string event = out.event.value("event", "");
    if (event == "result" && out.event.contains("result") && out.event["result"].is_object()) {
      nlohmann::json rates = out.event["result"];
      proc.Wait();
      return rates;
    }
    if (event == "error") return Unavailable("fuji-rank's calibration failed: " + out.event.value("message", ""));
  }
  const ExitInfo exit = proc.Wait();
  return Unavailable("fuji-rank ended without a calibration (" + exit.Describe() +
                     (last_log.empty() ? "" : ": " + last_log) + ")");
}

}  // namespace fuji::launch
