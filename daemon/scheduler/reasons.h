// The texts that say why a job is refused or waits: `fuji submit` errors and `fuji show`.
// Internal to fuji_scheduler.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "daemon/scheduler/pass_state.h"
#include "daemon/scheduler/scheduler.h"

namespace fuji::sched {

// "1 cpu device", "4 cuda devices"
std::string DevicesText(int count, const std::string& kind);
// "15 s", "1.5 s"
std::string SecondsText(int64_t ms);

// "job needs at least 1 device, asked for 0"
std::string InvalidDevicesText(const JobRequest& job);
// "job needs 1 cuda device; no connected agent has cuda devices"; `which` is "agent" or
// "connected agent".
std::string NoAgentOfKindText(const JobRequest& job, std::string_view which);
// "job needs 4 cuda devices; the largest agent, node-a, has 2"
std::string TooLargeText(const JobRequest& job, const AgentView& largest, std::string_view which);

// "4.9 GiB"
std::string GiBText(int64_t mib);
// Why a job with options fits no agent of `agents` (each with enough devices or not): "m13b
// fine-tune (12.85B parameters) needs at least 243.2 GiB of host memory (zero 3, offload
// params); the largest agent, a100, has 128.0 GiB".
std::string NoMemoryText(const JobRequest& job, const std::vector<AgentView>& agents);

// Why a gang across agents (policy 8) waits: "waiting for 4 cpu devices across agents with an
// advertise address: node-a can take 1 (has 1 free), node-b can take 2, node-c has no advertise
// address".
std::string GangWaitingText(const JobRequest& job, const PassState& state, const KindState& kind);
// Why a job that may span agents can never run on the agents of `agents` with an advertise
// address; "" when they hold it.
std::string GangUnsatisfiableText(const JobRequest& job, const std::vector<AgentView>& agents);

// Why a job the pass did not place waits, from the pass's state after the job's turn. `detailed`
// names every agent's free devices and holders; otherwise the text says how many waiting jobs are
// ahead of it.
std::string WaitingText(const JobRequest& job, const PassState& state, const KindState* kind,
                        bool detailed, int waiting_ahead);

}  // namespace fuji::sched
