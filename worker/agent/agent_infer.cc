// The agent's side of an inference job: the spec, its model path checked against the agent's
// roots and made real, with its op and id, to one lone fuji-rank that sees only its assigned GPU.
// The supervisor (supervisor.cc) runs it.
#include <string>

#include "lib/common/json_bounds.h"
#include "worker/agent/agent_job.h"
#include "worker/agent/job_paths.h"

namespace fuji::agent {

Result<Launch> InferLaunch(const fuji::v1::Assignment& a, const AgentConfig& config,
                           const DeviceInventory& inventory) {
  FUJI_RETURN_IF_ERROR(CheckJsonDepth(a.spec_json(), "spec_json"));
  nlohmann::json request = nlohmann::json::parse(a.spec_json(), nullptr, false);
  if (request.is_discarded() || !request.is_object()) return InvalidArgument("spec_json is not a JSON object");
  FUJI_RETURN_IF_ERROR(ConfineInferPaths(config.paths, &request));
  Launch attempt;
  // One rank on the first assigned device (fujid assigns an inference job one).
  attempt.devices = {a.device_indices_size() > 0 ? a.device_indices(0) : 0};
  launch::GangOptions options = AttemptGangOptions(a, config);
  if (inventory.is_cuda()) {
    // The rank sees only its own GPU (CUDA_VISIBLE_DEVICES), as cuda:0.
    options.env["CUDA_VISIBLE_DEVICES"] = std::to_string(attempt.devices[0]);
    if (request.contains("device") && request["device"].is_string() &&
        request["device"].get<std::string>().rfind("cuda", 0) == 0) {
      request["device"] = "cuda:0";
    }
  }
  attempt.gang = std::make_unique<launch::Gang>(std::move(request), std::move(options));
  return attempt;
}

}  // namespace fuji::agent
