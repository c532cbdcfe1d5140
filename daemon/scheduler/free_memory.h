// Free memory: what a scheduling pass may still promise on each agent's devices and host, from
// the latest memory readings the agents sent and what the jobs holding devices were promised.
// Pure logic: no I/O, no store, no threads. It needs no time: the readings are the latest the
// agents sent, and their age is not judged here.
//
// The rule, for a device or a host:
//  1. With a reading: free = total - others - max(promised, fuji), where
//       others   = max(0, used - fuji): memory that programs other than fuji's ranks use,
//       promised = the sum of what the plans of the jobs holding it were promised,
//       fuji     = what fuji's ranks use by the reading.
//     The larger of promised and used counts: a job still loading uses less than its promise
//     (the rest is coming), and a job the planner under-predicted uses more.
//  2. Without a reading (the agent has not sampled it yet): free = total - promised.
//  3. A CPU device's memory is its host's: the device's free memory is the host's. An agent with
//     CPU devices whose host was not sampled yet takes its first device's total as the host's.
//  4. Every device may be shared: whether it is depends on the jobs holding it (all must allow
//     it), which the pass decides.
// A job without a promise (no plan) holds its devices but counts for no memory.
//  5. Jobs of one warm model on one device run in one rank's batch (scheduler.h, policy 7b): of
//     the holdings with the same warm_key on a device, the weights (MemoryOption::weights_mib)
//     count once, the rest of each promise for each job. On a GPU their host memory (the rank's
//     load) counts once per device and key; on a CPU agent, whose weights are host memory, the
//     weights count once per device and key. Holdings without a warm_key count whole.
//
// Cost: O(agents x devices + holdings x devices per holding), with a log factor for rule 5's groups.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "daemon/scheduler/scheduler.h"

namespace fuji::sched {

// One reading of a device's or a host's memory.
struct MemoryReading {
  int64_t used_mib = 0;  // by everything
  int64_t fuji_mib = 0;  // of used_mib, by fuji's ranks
};

struct DeviceMemory {
  int index = 0;
  std::string kind;  // "cuda" or "cpu"
  int64_t total_mib = 0;
  std::optional<MemoryReading> reading;  // empty before the first
};

struct HostMemory {
  int64_t total_mib = 0;
  MemoryReading reading;
};

// An agent as the store knows it.
struct AgentMemory {
  std::string worker_id;
  bool connected = true;
  bool drained = false;
  std::vector<DeviceMemory> devices;  // every one of one kind; none: a CPU agent
  std::optional<HostMemory> host;     // empty before the first reading
};

// A job holding devices of an agent, and the memory its plan was promised (none without a plan).
struct Holding {
  int64_t job_id = 0;
  std::string worker_id;
  std::vector<int> device_indices;
  std::optional<MemoryOption> promise;
  std::string warm_key = {};  // an inference job's model key (JobRequest::warm_key); "" otherwise
};

// Rule 1 and 2 for one device or host.
int64_t FreeMib(int64_t total_mib, const std::optional<MemoryReading>& reading,
                int64_t promised_mib);

// The agents as a pass sees them, in the order given: their devices (with the jobs holding each,
// in the order of `holdings`) and the free memory of each device and host. Holdings of agents
// not in `agents` are ignored.
std::vector<AgentView> AgentsWithFreeMemory(const std::vector<AgentMemory>& agents,
                                            const std::vector<Holding>& holdings);

}  // namespace fuji::sched
