// The agent's side of an inference job: the spec, its model path checked against the agent's
// roots and made real, with its op and id, to the rank of the agent's warm pool that holds the
// model on the job's device (one is started when none does). The supervisor (supervisor.cc) runs
// it.
#include <string>

#include "lib/common/json_bounds.h"
#include "worker/agent/agent_job.h"
#include "worker/agent/job_paths.h"

namespace fuji::agent {

Result<Launch> InferLaunch(const fuji::v1::Assignment& a, const AgentConfig& config,
                           const DeviceInventory& inventory, WarmPool* pool) {
  (void)inventory;
  FUJI_RETURN_IF_ERROR(CheckJsonDepth(a.spec_json(), "spec_json"));
  nlohmann::json request = nlohmann::json::parse(a.spec_json(), nullptr, false);
  if (request.is_discarded() || !request.is_object()) return InvalidArgument("spec_json is not a JSON object");
  FUJI_RETURN_IF_ERROR(ConfineInferPaths(config.paths, &request));
  Launch attempt;
  // One rank on the first assigned device (fujid assigns an inference job one).
  attempt.devices = {a.device_indices_size() > 0 ? a.device_indices(0) : 0};
  // The request's id in the rank is the attempt's fencing token: unique among the rank's requests.
  const std::string id = std::to_string(a.job_id()) + "." + std::to_string(a.attempt()) + "." +
                         std::to_string(a.lease_epoch());
  // A serving job pins the model in its rank until it is stopped.
  const bool serve = request.value("serve", false);
  attempt.runner = pool->Request(std::move(request), attempt.devices[0], id,
                                 std::chrono::milliseconds(a.timeout_ms()), serve ? a.job_id() : 0);
  return attempt;
}

}  // namespace fuji::agent
