// The agent's side of a fine-tuning job: check its paths against the agent's roots, prepare in a
// confined child (refusing bad input before any rank starts), then one rank per assigned device as
// a gang of peers, which the supervisor (supervisor.cc) runs. A retry needs nothing special:
// resume "auto" continues from save_to's latest checkpoint. A spec without keep_last gets the
// agent's --keep-last.
//
// One agent's part of a gang across agents (Assignment.world_size > 0): its ranks are
// first_rank .. first_rank + n - 1 of world_size, rank first_rank + i on device_indices[i]; they
// meet the other agents' ranks at the assignment's tcp: rendezvous, name this agent's worker id as
// their node and bind their collectives to its advertised address. The agent prepares the token
// cache itself, as for a gang of its own: the data (like --save-to) must be visible on every node.
// The agent's network variables (NCCL_SOCKET_IFNAME, GLOO_SOCKET_IFNAME, NCCL_IB_DISABLE,
// NCCL_DEBUG, ...) reach the ranks as every NCCL_ and GLOO_ variable reaches a confined child.
#include <string>
#include <vector>

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
  // A spec that says nothing about retention gets the agent's (the ranks read -1 as keep all).
  if (spec.keep_last < 0) spec.keep_last = config.keep_last;
  Launch attempt;
  attempt.devices.assign(a.device_indices().begin(), a.device_indices().end());
  if (attempt.devices.empty()) attempt.devices.push_back(0);
  const bool cuda = spec.device == "cuda";
  if (cuda && !inventory.is_cuda()) return InvalidArgument("device cuda asked of an agent without GPUs");
  const int local = static_cast<int>(attempt.devices.size());
  const bool spans_agents = a.world_size() > 0;
  if (spans_agents) {
    // fujid's part of the contract: a gang is placed only on agents that advertise an address.
    if (config.advertise_addr.empty()) {
      return Internal("a gang across agents was assigned to an agent without --advertise-addr");
    }
    if (a.world_size() > kMaxFinetuneRanks || a.first_rank() < 0 || a.first_rank() + local > a.world_size()) {
      return Internal("assignment: ranks " + std::to_string(a.first_rank()) + ".." +
                      std::to_string(a.first_rank() + local - 1) + " are not within a gang of " +
                      std::to_string(a.world_size()));
    }
    if (a.rendezvous().rfind("tcp:", 0) != 0 || a.rendezvous().size() > 300) {
      return Internal("assignment: a gang across agents needs a rendezvous tcp:HOST:PORT");
    }
    spec.ranks = a.world_size();
    spec.node = config.worker_id;
    spec.bind_addr = config.advertise_addr;
  }

  // Everything refusable is refused here, before any rank starts.
  launch::PrepareOptions prepare;
  prepare.max_ranks = spans_agents ? a.world_size() : local;
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
  if (spans_agents) {
    options.world_size = a.world_size();
    options.first_rank = a.first_rank();
    options.local_ranks = local;
    options.rendezvous = a.rendezvous();
  }
  if (cuda) {
    // Every rank sees the assigned GPUs; rank g takes cuda:(g % count), so the list is rotated to
    // put devices[i] where rank first_rank + i looks (position (first_rank + i) % count).
    std::vector<int> order(static_cast<size_t>(local));
    for (int i = 0; i < local; ++i) order[static_cast<size_t>((options.first_rank + i) % local)] = attempt.devices[i];
    std::string visible;
    for (int d : order) visible += (visible.empty() ? "" : ",") + std::to_string(d);
    options.env["CUDA_VISIBLE_DEVICES"] = visible;
  }
  attempt.runner = std::make_unique<launch::Gang>(std::move(prepared.spec), std::move(options));
  return attempt;
}

}  // namespace fuji::agent
