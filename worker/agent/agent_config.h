// fuji-agent's configuration, parsed once from its flags into one struct.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <utility>

#include "lib/common/path_policy.h"
#include "lib/common/status.h"
#include "worker/launcher/child_process.h"

namespace fuji::agent {

// What --devices asked for: NVML's GPUs (falling back to CPU devices) or N CPU devices.
struct DeviceFlag {
  bool auto_detect = true;  // "auto"
  int cpu_count = 1;        // "cpu:N"; also the fallback of auto when NVML offers no GPU
};

// "auto" or "cpu:N" (1 <= N <= 1024); INVALID_ARGUMENT with the accepted forms otherwise.
Result<DeviceFlag> ParseDeviceFlag(const std::string& text);

struct AgentConfig {
  std::string server;                  // fujid's address, host:port
  DeviceFlag devices;
  int64_t sample_interval_ms = 1000;   // memory samples of each running job
  std::string worker_id;               // default: the host name
  std::string host;                    // the host name
  int64_t poll_wait_ms = 10000;        // how long PollAssignments may hold the call open
  int64_t report_interval_ms = 200;    // at most one Report per job this often
  int64_t cancel_grace_ms = 2000;      // SIGTERM, then SIGKILL after this
  // How long a rank keeps its model loaded after its last inference job (warm_pool.h); 0: the
  // rank ends with its job.
  int64_t keep_warm_ms = 600000;
  int64_t rpc_timeout_ms = 5000;       // deadline of the short calls (all but PollAssignments)
  size_t max_buffered_logs = 10000;    // per job, while the daemon is unreachable (oldest dropped)
  size_t max_buffered_samples = 10000;
  std::string nvml_library = "libnvidia-ml.so.1";
  std::string rank_executable;         // empty: fuji-rank beside the agent, or $FUJI_RANK
  // Measure the node's rates with a fuji-rank at start, before taking work (false: the planner's
  // defaults; for tests whose rank is a stand-in).
  bool calibrate = true;
  // What jobs may name (--allow-read, --allow-write): every path of a spec is checked against it
  // before any rank starts. No roots: every job that names a path is refused.
  PathPolicy paths;
  // Who runs a job's work (ranks, the calibration rank, a finetune's preparation): confined, as
  // --run-as's user when the agent is root (launch::RankUser).
  launch::Confinement ranks;
  // Where other nodes reach this agent's ranks (--advertise-addr): an IP address or host name; ""
  // = the agent takes no part in gangs across agents. A gang's rank 0 on this agent hosts the
  // gang's TCPStore on a port of gang_port_lo..gang_port_hi (--gang-ports), which fujid picks.
  std::string advertise_addr;
  int gang_port_lo = 29400;
  int gang_port_hi = 29499;
  // --keep-last: the keep_last a fine-tune gets when its spec leaves it unset (-1): N > 0 keeps the
  // newest N complete checkpoints of its save_to (worker/ckpt/retention.h); 0 keeps all.
  int64_t keep_last = 0;
  // The program that prepares a finetune's data in a confined child (launch::kServePreparationArg);
  // "": this executable (fuji-agent).
  std::string preparation_program;
};

// --advertise-addr: "" or an IP address or host name (letters, digits, '.', '-', ':', at most 253
// bytes); INVALID_ARGUMENT otherwise.
Status CheckAdvertiseAddr(const std::string& text);

// --gang-ports "LO-HI" with 1 <= LO <= HI <= 65535; INVALID_ARGUMENT otherwise.
Result<std::pair<int, int>> ParseGangPorts(const std::string& text);

// The machine's host name ("localhost" if unknown).
std::string HostName();

}  // namespace fuji::agent
