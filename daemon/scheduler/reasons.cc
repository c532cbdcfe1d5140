// The texts that say why a job is refused or waits; see reasons.h.
#include "daemon/scheduler/reasons.h"

#include <cstdio>
#include <utility>
#include <vector>

namespace fuji::sched {
namespace {

// Holders named per agent before the rest are summed up, to keep a reason to one line.
constexpr size_t kHoldersNamed = 3;

// "node-a has 1 free (job 7 holds 1, job 9 holds 2)"
std::string AgentText(const AgentSlot& agent) {
  std::vector<std::pair<int64_t, int>> held;  // job -> devices, in device order
  for (const DeviceSlot& device : agent.devices) {
    for (int64_t job : device.holders) {
      auto it = held.begin();
      while (it != held.end() && it->first != job) ++it;
      if (it == held.end()) {
        held.emplace_back(job, 1);
      } else {
        ++it->second;
      }
    }
  }
  std::string text = agent.view->worker_id + " has " + std::to_string(agent.idle) + " free";
  if (held.empty()) return text;
  text += " (";
  int others = 0;
  for (size_t i = 0; i < held.size(); ++i) {
    if (i < kHoldersNamed) {
      if (i > 0) text += ", ";
      text += "job " + std::to_string(held[i].first) + " holds " + std::to_string(held[i].second);
    } else {
      others += held[i].second;
    }
  }
  if (held.size() > kHoldersNamed) {
    text += ", " + std::to_string(held.size() - kHoldersNamed) + " more jobs hold " +
            std::to_string(others);
  }
  return text + ")";
}

// "; node-a is reserved for it, expected free in 30 s"
std::string ReservedForText(const Reservation& reservation, int64_t now_ms) {
  std::string text = "; " + reservation.agent->view->worker_id + " is reserved for it";
  if (reservation.start_ms == kNeverMs) return text;
  if (reservation.start_ms <= now_ms) return text + ", expected free now";
  return text + ", expected free in " + SecondsText(reservation.start_ms - now_ms);
}

}  // namespace

std::string DevicesText(int count, const std::string& kind) {
  return std::to_string(count) + " " + kind + (count == 1 ? " device" : " devices");
}

std::string SecondsText(int64_t ms) {
  if (ms % 1000 == 0) return std::to_string(ms / 1000) + " s";
  char text[32];
  std::snprintf(text, sizeof(text), "%.1f s", static_cast<double>(ms) / 1000.0);
  return text;
}

std::string InvalidDevicesText(const JobRequest& job) {
  return "job needs at least 1 device, asked for " + std::to_string(job.devices);
}

std::string NoAgentOfKindText(const JobRequest& job, std::string_view which) {
  return "job needs " + DevicesText(job.devices, job.device_kind) + "; no " + std::string(which) +
         " has " + job.device_kind + " devices";
}

std::string TooLargeText(const JobRequest& job, const AgentView& largest, std::string_view which) {
  return "job needs " + DevicesText(job.devices, job.device_kind) + "; the largest " +
         std::string(which) + ", " + largest.worker_id + ", has " +
         std::to_string(largest.devices.size());
}

std::string WaitingText(const JobRequest& job, const PassState& state, const KindState* kind,
                        bool detailed, int waiting_ahead) {
  if (job.devices < 1) return InvalidDevicesText(job);
  if (!state.any_connected()) return "no agent connected";
  if (!kind) return NoAgentOfKindText(job, "connected agent");
  if (job.devices > static_cast<int>(kind->largest->devices.size())) {
    return TooLargeText(job, *kind->largest->view, "connected agent");
  }
  const std::optional<Reservation>& reservation = kind->reservation;
  if (state.HeldByReservation(job, *kind)) {
    return "held for job " + std::to_string(reservation->job->id) + " (priority " +
           std::to_string(reservation->job->priority) + "), which reserved " +
           reservation->agent->view->worker_id;
  }
  // One allocation for the short form, which is written for up to 100,000 jobs a pass.
  std::string text;
  text.reserve(80 + job.device_kind.size());
  text += "waiting for ";
  text += std::to_string(job.devices);
  text += " free ";
  text += job.device_kind;
  text += job.devices == 1 ? " device" : " devices";
  if (detailed) {
    for (size_t i = 0; i < kind->agents.size(); ++i) {
      text += i == 0 ? ": " : ", ";
      text += AgentText(*kind->agents[i]);
    }
  } else {
    text += " (";
    text += std::to_string(waiting_ahead);
    text += waiting_ahead == 1 ? " waiting job ahead of it)" : " waiting jobs ahead of it)";
  }
  if (reservation && reservation->job == &job) {
    text += ReservedForText(*reservation, state.now_ms());
  }
  return text;
}

}  // namespace fuji::sched
