// The agent's side of a fine-tuning job: check its paths against the agent's roots, prepare in a
// confined child (refusing bad input before any rank starts), then one rank per assigned device as
// a gang of peers, which the supervisor (supervisor.cc) runs. A retry needs nothing special:
// resume "auto" continues from save_to's latest checkpoint.
#include <string>

#include "lib/common/json_bounds.h"
#include "lib/common/wall_clock.h"
#include "worker/agent/agent_job.h"
#include "worker/agent/job_paths.h"
#include "worker/launcher/finetune_prepare.h"

namespace fuji::agent {

Result<Launch> FinetuneLaunch(const fuji::v1::Assignment& a, const AgentConfig& config,
                              const DeviceInventory& inventory) {
  FUJI_RETURN_IF_ERROR(CheckJsonDepth(a.spec_json(), "spec_json"));
  nlohmann::json j = nlohmann::json::parse(a.spec_json(), nullptr, false);
  auto parsed = FinetuneSpec::FromJson(j);
  if (!parsed.ok()) return InvalidArgument(parsed.status().message());
  FinetuneSpec spec = std::move(parsed).value();
  // Nothing is read or created before every path is checked.
  FUJI_RETURN_IF_ERROR(ConfineFinetunePaths(config.paths, &spec));
  Launch attempt;
  attempt.devices.assign(a.device_indices().begin(), a.device_indices().end());
  if (attempt.devices.empty()) attempt.devices.push_back(0);
  const bool cuda = spec.device == "cuda";
  if (cuda && !inventory.is_cuda()) return InvalidArgument("device cuda asked of an agent without GPUs");

  // Everything refusable is refused here, before any rank starts.
  launch::PrepareOptions prepare;
  prepare.max_ranks = static_cast<int>(attempt.devices.size());
  prepare.devices_what = "assigned devices";
  const int64_t prepare_start = WallClockMs();
  const std::string program =
      config.preparation_program.empty() ? launch::ExecutablePath() : config.preparation_program;
  FUJI_ASSIGN_OR_RETURN(launch::PreparedFinetune prepared,
                        launch::PrepareFinetuneConfined(spec, prepare, program, config.ranks));
  auto* t = attempt.prepared.add_timings();
  t->set_attempt(a.attempt());
  t->set_phase("prepare");
  t->set_start_ms(prepare_start);
  t->set_end_ms(WallClockMs());

  launch::GangOptions options = AttemptGangOptions(a, config);
  options.corpus_tokens = static_cast<int64_t>(prepared.num_tokens);
  attempt.corpus_tokens = options.corpus_tokens;
  if (cuda) {
    // Every rank sees the assigned GPUs; rank r takes cuda:(r % count), i.e. devices[r].
    std::string visible;
    for (int d : attempt.devices) visible += (visible.empty() ? "" : ",") + std::to_string(d);
    options.env["CUDA_VISIBLE_DEVICES"] = visible;
  }
  attempt.runner = std::make_unique<launch::Gang>(std::move(prepared.spec), std::move(options));
  return attempt;
}

}  // namespace fuji::agent
