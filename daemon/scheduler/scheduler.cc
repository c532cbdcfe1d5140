// One scheduling pass and the submit-time satisfiability check; the policy is in scheduler.h.
#include "daemon/scheduler/scheduler.h"

#include <algorithm>
#include <cstdint>
#include <utility>

#include "daemon/scheduler/pass_state.h"
#include "daemon/scheduler/reasons.h"

namespace fuji::sched {
namespace {

// Queue order: priority (higher first), then submit order (lower id first). The keys are
// sorted by value, not through pointers, so the sort of a long queue walks memory in order.
std::vector<const JobRequest*> QueueOrder(const std::vector<JobRequest>& queued) {
  struct Key {
    int priority;
    uint32_t index;
    int64_t id;
  };
  std::vector<Key> keys;
  keys.reserve(queued.size());
  for (size_t i = 0; i < queued.size(); ++i) {
    keys.push_back({queued[i].priority, static_cast<uint32_t>(i), queued[i].id});
  }
  std::sort(keys.begin(), keys.end(), [](const Key& a, const Key& b) {
    return a.priority != b.priority ? a.priority > b.priority : a.id < b.id;
  });
  std::vector<const JobRequest*> order;
  order.reserve(keys.size());
  for (const Key& key : keys) order.push_back(&queued[key.index]);
  return order;
}

constexpr size_t kPrefetchAhead = 16;

void Prefetch(const JobRequest* job) {
  const char* bytes = reinterpret_cast<const char*>(job);
  for (size_t offset = 0; offset < sizeof(JobRequest); offset += 64) {
    __builtin_prefetch(bytes + offset);
  }
}

// The reasons, appended in queue order, as a map. Inserting 100,000 entries into a map in queue
// order costs a cache miss per tree level each; sorted by id first, each insert at the end is
// constant time, and both steps walk memory in order.
std::map<int64_t, std::string> ById(std::vector<std::pair<int64_t, std::string>> reasons) {
  auto by_id = [](const auto& a, const auto& b) { return a.first < b.first; };
  if (!std::is_sorted(reasons.begin(), reasons.end(), by_id)) {
    std::sort(reasons.begin(), reasons.end(), by_id);
  }
  std::map<int64_t, std::string> map;
  for (auto& [id, reason] : reasons) map.emplace_hint(map.end(), id, std::move(reason));
  return map;
}

}  // namespace

const std::string& JobRequest::label() const {
  static const std::string kJob = "job";
  return plans ? plans->label : kJob;
}

namespace {

constexpr const char* kNoGangText =
    "no agent of its kind advertises an address for a gang across agents (fuji-agent --advertise-addr)";

// CheckSatisfiable for one agent (policies 2-3).
Status CheckOnOneAgent(const JobRequest& job, const std::vector<AgentView>& agents);

}  // namespace

Status CheckSatisfiable(const JobRequest& job, const std::vector<AgentView>& agents) {
  if (job.devices < 1) return InvalidArgument(InvalidDevicesText(job));
  if (job.nodes < 0) return InvalidArgument("job asks for " + std::to_string(job.nodes) + " nodes");
  if (job.has_options()) {
    for (const MemoryOption& option : job.options()) {
      if (option.device_mib < 0 || option.host_mib < 0) {
        return InvalidArgument(job.label() + ": a plan needs negative memory (" + option.label + ")");
      }
    }
  }
  if (!job.may_span || job.nodes == 1) return CheckOnOneAgent(job, agents);
  if (job.nodes >= 2 && job.devices % job.nodes != 0) {
    return InvalidArgument("job's " + std::to_string(job.devices) + " ranks do not divide evenly among " +
                           std::to_string(job.nodes) + " nodes");
  }
  const bool any_advertised = std::any_of(agents.begin(), agents.end(), [&](const AgentView& agent) {
    return agent.device_kind == job.device_kind && !agent.advertise_addr.empty();
  });
  if (job.nodes == 0) {
    Status one = CheckOnOneAgent(job, agents);
    if (one.ok() || one.code() != StatusCode::kFailedPrecondition) return one;
    // No gang can form: why one agent cannot hold it, and why no set of agents can.
    if (!any_advertised) return FailedPrecondition(one.message() + "; " + kNoGangText);
  } else if (!any_advertised) {
    return FailedPrecondition("job asks for " + std::to_string(job.nodes) + " nodes; " + kNoGangText);
  }
  // Policy 8: the agents with an advertise address together.
  const std::string missing = GangUnsatisfiableText(job, agents);
  return missing.empty() ? Status::Ok() : FailedPrecondition(missing);
}

namespace {

Status CheckOnOneAgent(const JobRequest& job, const std::vector<AgentView>& agents) {
  const AgentView* largest = nullptr;
  for (const AgentView& agent : agents) {
    if (agent.device_kind != job.device_kind) continue;
    if (!largest || agent.devices.size() > largest->devices.size()) largest = &agent;
  }
  if (!largest) return FailedPrecondition(NoAgentOfKindText(job, "agent"));
  if (job.devices > static_cast<int>(largest->devices.size())) {
    return FailedPrecondition(TooLargeText(job, *largest, "agent"));
  }
  if (!job.has_options()) return Status::Ok();
  for (const MemoryOption& option : job.options()) {
    if (option.device_mib < 0 || option.host_mib < 0) {
      return InvalidArgument(job.label() + ": a plan needs negative memory (" + option.label + ")");
    }
  }
  // With all of its memory free, some agent holds some plan.
  for (const AgentView& agent : agents) {
    if (agent.device_kind != job.device_kind ||
        static_cast<int>(agent.devices.size()) < job.devices) {
      continue;
    }
    for (const MemoryOption& option : job.options()) {
      if (agent.host_total_mib != kUnknownMib && option.host_mib > agent.host_total_mib) continue;
      int roomy = 0;
      for (const DeviceView& device : agent.devices) roomy += device.total_mib >= option.device_mib;
      if (roomy >= job.devices) return Status::Ok();
    }
  }
  return FailedPrecondition(NoMemoryText(job, agents));
}

}  // namespace

PassResult Schedule(const std::vector<JobRequest>& queued, const std::vector<AgentView>& agents,
                    const std::vector<RunningJob>& running, int64_t now_ms,
                    const ScheduleOptions& options) {
  PassResult result;
  PassState state(agents, running, now_ms);
  std::vector<std::pair<int64_t, std::string>> reasons;
  reasons.reserve(queued.size());
  const std::vector<const JobRequest*> order = QueueOrder(queued);
  for (size_t i = 0; i < order.size(); ++i) {
    const JobRequest* job = order[i];
    // The jobs are read in priority order, scattered through `queued`: fetching a few ahead
    // overlaps their cache misses, which otherwise dominate a pass over a long queue.
    if (i + kPrefetchAhead < order.size()) Prefetch(order[i + kPrefetchAhead]);
    KindState* kind = state.Kind(job->device_kind);
    if (PassState::WantsGang(*job, kind)) {
      // Policy 8: all or nothing now; a gang reserves nothing.
      if (std::optional<Placement> placement = state.TryPlaceGang(*job, *kind)) {
        result.placements.push_back(std::move(*placement));
        continue;
      }
      const int waiting_ahead = static_cast<int>(reasons.size());
      if (waiting_ahead >= options.max_reasons) continue;
      reasons.emplace_back(job->id, GangWaitingText(*job, state, *kind));
      continue;
    }
    const bool fits_an_agent = kind && job->devices >= 1 &&
                               job->devices <= static_cast<int>(kind->largest->devices.size());
    if (fits_an_agent) {
      if (std::optional<Placement> placement = state.TryPlace(*job, *kind)) {
        result.placements.push_back(std::move(*placement));
        continue;
      }
      if (!kind->reservation) state.Reserve(*job, *kind);
    }
    const int waiting_ahead = static_cast<int>(reasons.size());
    if (waiting_ahead >= options.max_reasons) continue;
    reasons.emplace_back(
        job->id,
        WaitingText(*job, state, kind, waiting_ahead < options.detailed_reasons, waiting_ahead));
  }
  result.waiting_reasons = ById(std::move(reasons));
  return result;
}

}  // namespace fuji::sched
