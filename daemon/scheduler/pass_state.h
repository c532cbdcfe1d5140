// The working state of one scheduling pass: the connected agents' devices as the pass places jobs
// on them, the per-kind maxima that answer most jobs in O(1), and each kind's reservation.
// Internal to fuji_scheduler; the policy it implements is described in scheduler.h.
#pragma once

#include <cstdint>
#include <deque>
#include <limits>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <tuple>
#include <unordered_map>
#include <utility>
#include <vector>

#include "daemon/scheduler/scheduler.h"

namespace fuji::sched {

// A release time nobody knows sorts after every known one.
inline constexpr int64_t kNeverMs = std::numeric_limits<int64_t>::max();

// A warm model on a device, as the pass sees it.
struct WarmSlot {
  const WarmView* view = nullptr;
  bool evicted = false;  // a job placed in this pass unloads it
  int placed = 0;        // jobs of its key placed on it in this pass: busy from now on
  // Running jobs hold its device: one may be a request of it that the agent has not reported.
  bool device_held = false;

  // Whether a job of `key` may have it unloaded: idle, not pinned, another model.
  bool EvictableFor(const std::string& key) const {
    return !evicted && placed == 0 && !device_held && view->active == 0 && !view->pinned && view->key != key;
  }
};

struct DeviceSlot {
  const DeviceView* view = nullptr;
  std::vector<int64_t> holders;  // running jobs, then jobs placed in this pass
  // The warm_key of each job placed in this pass (holders past the view's jobs), in order.
  std::vector<const std::string*> placed_keys;
  // The warm_key of each running holder (RunningJob::warm_key); nullptr where none is known.
  std::vector<const std::string*> running_keys;
  std::vector<WarmSlot> warm;
  int64_t free_mib = 0;
  int64_t release_ms = 0;  // when its last holder is expected to end; kNeverMs if unknown
  bool joinable = false;   // shareable, and every holder allows sharing

  bool idle() const { return holders.empty(); }
  // The warm model of `key` on it (not unloaded in this pass); nullptr when none.
  WarmSlot* Holding(const std::string& key);
  const WarmSlot* Holding(const std::string& key) const;
  // Whether every job holding it is one of `key`'s warm model (policy 7b): running holders with
  // that key, those without one no more than the requests its warm rank reports active, and
  // every job placed in this pass has that key.
  bool OnlyJobsOf(const std::string& key) const;
  // The memory of the warm models a job of `key` may have unloaded.
  int64_t EvictableMib(const std::string& key) const;
  // Memory held by warm models of other keys that cannot be unloaded (busy or pinned).
  int64_t StuckWarmMib(const std::string& key) const;
};

struct AgentSlot {
  const AgentView* view = nullptr;
  std::vector<DeviceSlot> devices;
  int idle = 0;  // devices with no holder
  int64_t host_free_mib = kUnknownMib;
  bool cpu = false;  // its devices' memory is the host's, and so is its warm models'
};

// How a job would be placed on one agent with one option: the devices it takes (positions in
// AgentSlot::devices, in the order taken), how many it could take, and what it needs there.
struct Choice {
  std::vector<size_t> devices;
  std::vector<char> on_warm;  // per device taken: it holds the job's model (it needs less there)
  int usable = 0;
  bool warm = false;       // it takes a device holding its model
  bool evicts = false;     // a warm model must be unloaded for it
  int64_t host_need = 0;   // host memory it is promised there
};

// How a job would use one device: on its warm model, joining holders that share, or idle
// (unloading warm models or not); and the device memory it is promised there.
enum class Use { kNone, kWarm, kJoin, kIdle, kIdleEvicting };
struct DeviceUse {
  Use use = Use::kNone;
  int64_t need = 0;
};

// Where a job fits on one agent: the first of its options that fits (-1 for a job without
// options), how many devices it could take there, and whether it lands on its warm model or
// must unload others.
struct Fit {
  int option = -1;
  int usable = 0;
  bool warm = false;
  bool evicts = false;
};

struct Reservation {
  const JobRequest* job = nullptr;
  const AgentSlot* agent = nullptr;
  int64_t start_ms = kNeverMs;  // T: when `agent` is expected to have job->devices free
  int spare = 0;                // idle devices others may keep past T without delaying the job
  // Host memory others may keep past T without delaying the job (its plans' smallest need less
  // what is free at T); kUnknownMib: not reserved (no plans, or the host's memory unknown).
  int64_t spare_host_mib = kUnknownMib;
};

struct KindState {
  std::vector<AgentSlot*> agents;      // connected agents of this kind, in the caller's order
  const AgentSlot* largest = nullptr;  // the one with the most devices (first on a tie)
  int max_idle = 0;                    // most idle devices on one agent
  int max_open = 0;       // the same, counting only the spare ones on the reserved agent
  int max_shareable = 0;  // most idle + joinable devices on one agent, memory unchecked
  bool any_warm = false;  // some device holds a warm model: jobs with a warm_key skip the maxima
  bool any_advertised = false;  // some agent has an advertise address (policy 8)
  std::optional<Reservation> reservation;
  // Placements and reservations of the kind so far in the pass: what a cache below remembers
  // holds while this has not moved.
  uint64_t generation = 0;
  // Jobs with a warm_key that found no place, by what decides where one fits (warm_key, plans,
  // devices, memory_mib, shareable, whether it ends by the reservation's T): the generation
  // (plus one) at which one failed, and at which HeldByReservation answered `held` for one. A
  // long queue of requests of one model costs one search per generation. The key is a view of
  // the first such job's warm_key: the queue outlives the pass.
  using WarmAsk = std::tuple<std::string_view, const MemoryPlans*, int, int64_t, bool, bool>;
  struct WarmMiss {
    uint64_t failed_at = 0;
    uint64_t held_at = 0;
    bool held = false;
  };
  mutable std::map<WarmAsk, WarmMiss> warm_misses;
  // The reasons' texts on warm models that cannot be unloaded, by (warm_key, devices), with the
  // generation (plus one) they were written at.
  struct StuckWarmTexts {
    uint64_t generation = 0;
    std::string detailed, short_text;
  };
  mutable std::map<std::pair<std::string_view, int>, StuckWarmTexts> stuck_warm_texts;
  // The reasons' text on what a job's plans need, by plans (the queue holds them for the pass).
  mutable std::unordered_map<const MemoryPlans*, std::string> memory_need_texts;
};

class PassState {
 public:
  // Keeps pointers into `agents`, which must outlive the pass.
  PassState(const std::vector<AgentView>& agents, const std::vector<RunningJob>& running,
            int64_t now_ms);
  PassState(const PassState&) = delete;
  PassState& operator=(const PassState&) = delete;

  int64_t now_ms() const { return now_ms_; }
  // Connected agents that take work: drained ones are left out of the pass.
  bool any_connected() const { return !agents_.empty(); }
  // nullptr when no connected agent that takes work has devices of this kind.
  KindState* Kind(const std::string& device_kind);
  // Whether a connected agent with devices of this kind is drained ("" for any kind).
  bool Drained(const std::string& device_kind) const {
    return device_kind.empty() ? !drained_kinds_.empty() : drained_kinds_.count(device_kind) > 0;
  }

  // Places the job on the best-fitting agent if it can start now under its kind's reservation,
  // and records the placement so later jobs see those devices taken.
  std::optional<Placement> TryPlace(const JobRequest& job, KindState& kind);
  // Policy 8: whether `job` is placed as a gang across agents of `kind` (nullptr: none connected).
  static bool WantsGang(const JobRequest& job, const KindState* kind);
  // Policy 8: places `job` on several agents of the kind at once, all or nothing; nullopt (and
  // nothing taken) when no set of agents holds it now.
  std::optional<Placement> TryPlaceGang(const JobRequest& job, KindState& kind);
  // How many of a gang's ranks each agent of the kind could take now with the job's first plan
  // (its host share counted), in the kind's order; -1 for an agent without an advertise address.
  std::vector<std::pair<const AgentSlot*, int>> GangCapacities(const JobRequest& job, const KindState& kind) const;
  // Makes `job`, which cannot start now, the reservation of its kind: picks the agent expected to
  // have job.devices free soonest. No-op when no agent of the kind has that many devices.
  void Reserve(const JobRequest& job, KindState& kind);
  // Whether `job` could start now if its kind's reservation did not hold devices back.
  bool HeldByReservation(const JobRequest& job, const KindState& kind) const;
  // Whether `job` fits some agent of the kind by count of devices, disregarding memory: when it
  // waits nonetheless, memory is what it waits for.
  bool FitsByCount(const JobRequest& job, const KindState& kind) const;

 private:
  // What `job` may take on one agent: up to idle_limit idle devices, and joinable ones unless
  // within_spare. A job that may outlast the reservation's T on the reserved agent is within_spare:
  // it gets only the spare idle devices, and joining a held device could keep that device past T.
  struct Allowance {
    int idle_limit;
    bool within_spare;
    int64_t host_limit_mib = kUnknownMib;  // within_spare: the reservation's spare host memory
  };
  Allowance AllowanceOn(const AgentSlot& agent, const JobRequest& job, const KindState& kind) const;
  bool EndsBy(const JobRequest& job, int64_t deadline_ms) const;
  // The key of KindState::warm_misses for a job with a warm_key.
  KindState::WarmAsk AskOf(const JobRequest& job, const KindState& kind) const;
  // The devices `job` would take on the agent with `option`'s memory (nullptr: memory
  // unchecked), into *choice, with usable counting every device it could take; false when fewer
  // than job.devices are usable or the host lacks the memory.
  bool Choose(const AgentSlot& agent, const JobRequest& job, Allowance allowance, const MemoryOption* option,
              Choice* choice) const;
  // The first option of `job` that fits on the agent; nullopt when none does.
  std::optional<Fit> FitOn(const AgentSlot& agent, const JobRequest& job, Allowance allowance) const;
  // Takes the chosen devices (unloading warm models where needed, and promising the option's
  // memory) and fills the placement's devices and evictions.
  void Take(AgentSlot& agent, const JobRequest& job, const MemoryOption* option, const Choice& choice,
            Placement* placement);
  void RefreshMaxima(KindState& kind) const;
  // Policy 8: the most ranks of `job` (at most `limit`) the agent can take now with `option`
  // (nullptr: memory unchecked), its host share counted; 0 when none.
  int GangCapacity(const AgentSlot& agent, const JobRequest& job, const KindState& kind, const MemoryOption* option,
                   int limit) const;
  // Policy 8: the parts (agent, ranks) of a gang with `option`, rank 0's first; empty when none.
  std::vector<std::pair<AgentSlot*, int>> GangParts(const JobRequest& job, KindState& kind,
                                                   const MemoryOption* option) const;

  // The host memory each holder was promised (running jobs, then this pass's placements).
  int64_t HostHeldBy(int64_t job_id) const;

  int64_t now_ms_;
  // Scratch of Choose and FitOn, kept between calls so that a long queue allocates nothing.
  mutable std::vector<std::pair<size_t, DeviceUse>> uses_;
  mutable Choice scratch_;
  std::unordered_map<int64_t, int64_t> host_mib_;
  // The parts of the gangs placed in this pass as jobs of their own (policy 8): the devices they
  // take keep pointers into them (DeviceSlot::placed_keys) for the rest of the pass.
  std::deque<JobRequest> gang_parts_;
  std::vector<AgentSlot> agents_;
  std::map<std::string, KindState> kinds_;
  std::set<std::string> drained_kinds_;
};

}  // namespace fuji::sched
