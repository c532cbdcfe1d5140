// The placement policy of fujid: which queued jobs start now, on which agent's devices, and why
// the others wait. Pure logic: no I/O, no threads, no clock of its own (time is an argument), so
// one call is a function of its inputs and tests need no processes and no real time.
//
// One pass over the queue:
//  1. Jobs are taken by priority (higher first), then submit order (lower id first).
//  2. All of a job's ranks go to ONE connected agent whose device kind matches ("cuda", "cpu").
//     Among the agents where it fits, the one with the fewest usable devices wins (best fit), so
//     large holes stay open for large jobs.
//  3. Memory. A job may come with its plans (JobRequest::plans, from the memory planner, in the
//     order of preference): on an agent it takes the first plan whose device_mib fits the free
//     memory of each device it takes and whose host_mib fits the agent's free host memory, and
//     that memory is promised to it for the rest of the pass. Agents where an earlier plan fits
//     win over agents where only a later one does. A job never starts where none of its plans fits.
//  4. A device holds one job at a time. The exception: a shareable device may hold several jobs
//     that all allow sharing and declare their memory (a plan, or memory_mib), while their memory
//     together fits the device's free_mib.
//  5. Backfill with a reservation (EASY backfilling). The first job of each device kind that
//     cannot start reserves the agent expected to have enough free devices soonest, at time T,
//     from the holders' expected ends. Later jobs still start on that agent, but only on devices
//     the reserved job will not need at T, or when their own estimated run ends by T. Small jobs
//     fill the gaps, and the reserved job starts no later than it would have without them (as
//     far as the estimates hold). A job with plans reserves host memory too: a job that may
//     outlast T starts on the reserved agent only if its plan leaves the reserved job's smallest
//     host need free at T (the host memory free now plus the holders' promises back by T). A job
//     with enough idle devices but too little memory reserves from when the agent's first holder
//     is expected to end. Device memory is not reserved (a device comes back whole with its
//     holders). Reservations are re-derived each pass; nothing persists.
//  6. Every job that does not start gets a reason a person can read (`fuji show`).
//  7. Warm models. An agent keeps a rank with its model loaded after an inference job (a warm
//     model, DeviceView::warm); its memory is already inside the device's (a CPU agent: the
//     host's) reading, so free_mib excludes it. Warm models are not holders: a device whose only
//     occupants are warm models is idle.
//     a. Warm first: a job with a warm_key K goes to an agent with a device holding K where it
//        fits, over every other agent (before the plan order and best fit), and takes that
//        device there.
//     b. Batching: one warm rank serves many requests in one batch. A job with warm_key K may
//        join a device that holds K while every job holding it is one of K (running holders by
//        RunningJob::warm_key, and those without one when they are no more than the requests
//        K's warm rank reports active; jobs placed in this pass by their warm_key), without the
//        shareable flag. There it needs its plan less MemoryOption::weights_mib (the weights
//        are loaded): of the device's memory on a GPU, of the host's on a CPU, and no host
//        memory on a GPU (nothing loads). Elsewhere it needs its whole plan. A job placed on a
//        warm device of K makes later jobs of K in the pass see that device as held by K's jobs.
//     c. Eviction: on a device the job takes, warm models that are idle (no active request, not
//        placed on in this pass, and on a device no running job holds: a holder may be a
//        request the agent has not reported yet), not pinned by a serving job and of another key
//        are evictable: when the job's need exceeds the free memory (on a CPU agent, the host's:
//        its warm models live there), their memory counts as free too, and Placement::evict
//        lists the ones the agent unloads first, least recently used (largest idle_ms) first,
//        only as many as needed. A job that takes its devices exclusively (not shareable, no
//        warm_key: a fine-tune) evicts every evictable warm model on the devices it takes. Where
//        the job fits without evicting, that agent wins over one where it must (after the plan
//        order), and on an agent idle devices without evictable warm models are taken first. A
//        busy or pinned warm model is never evicted; its memory stays counted.
//     d. A job that waits while warm models that cannot be evicted hold memory says so.
//  8. Gangs across agents. A fine-tune that may span agents (JobRequest::may_span) and either
//     asks for nodes >= 2 or has more ranks than any connected agent of its kind has devices
//     (while one of them has an advertise address; else it waits as in 2-6) is
//     placed on several agents at once, all or nothing: in one pass every part is found before
//     any is taken, so no agent holds devices while another is awaited. Only agents with an
//     advertise address (AgentView::advertise_addr) take part. Fewest agents first (with
//     nodes = K, exactly K agents with ranks / K each), then best fit: the agents that can hold
//     the most are taken, and the last part goes to the agent with the fewest usable devices that
//     holds the remainder. Within an agent its idle devices are taken as in 2-7 (lowest indices
//     first among equals). The plans are tried in order and every part uses the same plan: its
//     device_mib on each device, and host_mib * r / R (rounded up) of the host of an agent that
//     holds r of the R ranks. Rank 0's part is the first (the agent that can hold the most).
//     Gangs respect the kinds' reservations but reserve nothing themselves: a gang that cannot
//     start waits without holding devices back, so a stream of small jobs may keep it waiting.
//     Its reason names each agent and what it lacks.
//
// Cost: a sort of the queue, then O(1) for each job larger than every agent's usable devices (the
// pass keeps the maxima per kind; a job with a warm_key skips that bound while some device of its
// kind holds a warm model), and O(agents x devices x warm models per device) for each placement
// and each detailed reason; a gang (8) costs O(plans x agents x devices). Only the first ScheduleOptions::detailed_reasons waiting jobs get the
// per-agent detail.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "lib/common/status.h"

namespace fuji::sched {

// A time or duration that nobody knows (no timeout, no estimate).
inline constexpr int64_t kUnknownMs = 0;
// Memory nobody measured (an agent that has not reported its host's memory): not checked.
inline constexpr int64_t kUnknownMib = -1;

// One way to run a job (a plan of lib/plan: a ZeRO stage and offload) and the memory it needs.
struct MemoryOption {
  int64_t device_mib = 0;  // on each of the job's devices (0 for CPU devices: all is host memory)
  int64_t host_mib = 0;    // on its agent's host, all of its ranks together
  std::string label;       // "zero 2, offload optimizer": for the texts of reasons
  // Of device_mib (of host_mib on CPU devices, where device_mib is 0), the part that is the
  // model's weights: the memory a warm rank of this model already holds. 0 for fine-tunes.
  int64_t weights_mib = 0;
};

// A job's plans: the ways it may run, in the order of preference, and what each needs.
struct MemoryPlans {
  std::string label = "job";  // how reasons name the job: "13b fine-tune (12.85B parameters)"
  std::vector<MemoryOption> options;
};

struct JobRequest {
  int64_t id = 0;                   // submit order: lower ids were submitted first
  int priority = 0;                 // higher starts first
  int devices = 1;                  // one rank per device, all on one agent
  std::string device_kind = "cpu";  // "cpu" or "cuda"
  int64_t memory_mib = 0;           // declared per device, for a job without options
  bool shareable = false;           // may share devices with other shareable jobs
  // Policy 8: a fine-tune may span agents (only fine-tunes do). nodes: 0 = as few agents as hold
  // its ranks; K >= 1 = exactly K agents with devices / K ranks each (1: one agent, as 2 says).
  // Beside `shareable`, in what would be padding: a pass reads 100,000 requests.
  bool may_span = false;
  int nodes = 0;
  // Its plans; null or none: memory is not checked (and the job shares only with memory_mib).
  // Shared, so that copying a request (a pass takes a copy of the queue) stays cheap.
  std::shared_ptr<const MemoryPlans> plans;
  bool has_options() const { return plans && !plans->options.empty(); }
  const std::vector<MemoryOption>& options() const { return plans->options; }
  const std::string& label() const;  // the plans' label, or "job"
  // How long it runs once started (its timeout or an estimate). A duration, not an end: a queued
  // job does not know when it will start.
  int64_t estimated_run_ms = kUnknownMs;
  // An inference job's model key, "REALPATH|PRECISION|OFFLOAD" as WarmView::key names it; "" for
  // other jobs. Policy 7.
  std::string warm_key = {};
};

// A model an agent keeps loaded in a rank on a device between inference jobs.
struct WarmView {
  std::string key;      // "REALPATH|PRECISION|OFFLOAD"
  int64_t mib = 0;      // the memory it holds: the device's on a GPU, the host's on a CPU agent
  int64_t idle_ms = 0;  // since its last request ended; 0 while it serves one
  int active = 0;       // requests it serves now
  bool pinned = false;  // a serving job holds it: never evicted
};

struct DeviceView {
  int index = 0;
  int64_t total_mib = 0;
  int64_t free_mib = 0;       // neither used nor promised to the jobs holding it
  std::vector<int64_t> jobs;  // the jobs holding it
  bool shareable = false;     // may hold several shareable jobs at once
  // The warm models loaded on it; their memory is already out of free_mib (of the host's free
  // memory on a CPU agent). Not holders.
  std::vector<WarmView> warm = {};
};

struct AgentView {
  std::string worker_id;
  std::string device_kind;  // every device of an agent is of this kind
  std::vector<DeviceView> devices;
  bool connected = true;  // a disconnected agent gets nothing
  bool drained = false;   // an admin drained it: it gets nothing new, its jobs run on
  int64_t host_total_mib = kUnknownMib;
  int64_t host_free_mib = kUnknownMib;  // neither used nor promised to the jobs it runs
  // Where other agents' ranks reach its ranks; "" = it takes no part in gangs across agents.
  std::string advertise_addr = {};
};

// What the pass needs to know about a job holding devices. A holder missing from the list counts
// as exclusive with an unknown end.
struct RunningJob {
  int64_t job_id = 0;
  bool shareable = false;
  int64_t expected_end_ms = kUnknownMs;  // absolute: start + timeout, or an estimate
  int64_t host_mib = 0;  // the host memory its plan was promised, back when it ends
  // Its JobRequest::warm_key where the caller knows it; "" otherwise. Policy 7b: a holder with
  // the job's key is one of its batch; without a key, the holders are counted against the
  // requests the warm rank reports active.
  std::string warm_key = {};
};

// One agent's part of a gang (policy 8): ranks first_rank .. first_rank + device_indices.size() - 1.
struct GangPart {
  std::string worker_id;
  std::vector<int> device_indices;  // ascending; rank first_rank + i on the i-th
  int first_rank = 0;
  std::vector<std::pair<int, std::string>> evict = {};  // as Placement::evict, on this agent
};

struct Placement {
  int64_t job_id = 0;
  std::string worker_id;
  std::vector<int> device_indices;  // DeviceView::index values on that agent, ascending
  int option = -1;                  // the index in the job's plans chosen; -1 without
  // (device index, key): the warm models the agent unloads before starting the job, least
  // recently used first.
  std::vector<std::pair<int, std::string>> evict = {};
  // A gang across agents (policy 8): every agent's part, rank 0's first; worker_id,
  // device_indices and evict above are then rank 0's part. Empty for a job on one agent.
  std::vector<GangPart> parts = {};
};

struct PassResult {
  std::vector<Placement> placements;               // in the order the jobs were taken
  std::map<int64_t, std::string> waiting_reasons;  // every queued job not placed, by job id
};

struct ScheduleOptions {
  // Waiting jobs (in queue order) whose reason names every agent's free devices and holders; the
  // rest get a one-line summary. A pass over 100,000 queued jobs then costs about 30 ms of CPU,
  // half of it writing their reasons (bench/scheduler_bench.cc).
  int detailed_reasons = 1000;
  // Waiting jobs (in queue order) that get a reason at all; the rest get no entry in
  // PassResult::waiting_reasons, and the caller says why they wait when someone asks (the daemon:
  // how many queued jobs are ahead). Writing a string per job is half a pass's cost at 100,000.
  int max_reasons = 1 << 30;
};

// OK when some agent in `agents` (connected or not: a known agent may come back) could ever hold
// the job: enough devices, and with plans, one plan that fits its devices' and host's total
// memory. FAILED_PRECONDITION otherwise, e.g. "job needs 4 cuda devices; the largest agent,
// node-a, has 2", "m13b fine-tune (12.85B parameters) needs at least 243.2 GiB of host memory
// (zero 3, offload params); the largest agent, a100, has 128.0 GiB"; INVALID_ARGUMENT for a job
// asking for no device or with a negative memory need. A job that may span agents (policy 8) and
// fits no single agent (or asks for nodes >= 2) is satisfiable when the agents of its kind with an
// advertise address together hold its ranks (with nodes = K: K of them, ranks / K each), each with
// its share of the host memory; the message otherwise says what is missing. With no agent registered nothing can hold
// it: the daemon decides whether to refuse such a job or let it wait.
Status CheckSatisfiable(const JobRequest& job, const std::vector<AgentView>& agents);

// One scheduling pass. `queued` may come in any order; `running` gives the expected ends of the
// jobs named in the agents' DeviceView::jobs. Placements of this pass are not in `agents`: the
// caller applies them before the next pass.
PassResult Schedule(const std::vector<JobRequest>& queued, const std::vector<AgentView>& agents,
                    const std::vector<RunningJob>& running, int64_t now_ms,
                    const ScheduleOptions& options = {});

}  // namespace fuji::sched
