// JobState and JobKind names, parsing, and the lifecycle's transition table.
#include "daemon/store/job_state.h"

#include <string>

namespace fuji::store {
namespace {

constexpr JobState kAllStates[] = {JobState::kQueued,    JobState::kAssigned, JobState::kRunning,
                                   JobState::kSucceeded, JobState::kFailed,   JobState::kCancelled,
                                   JobState::kRetrying};
constexpr JobKind kAllKinds[] = {JobKind::kInfer, JobKind::kFinetune};

}  // namespace

const char* JobStateName(JobState state) {
  switch (state) {
    case JobState::kQueued: return "QUEUED";
    case JobState::kAssigned: return "ASSIGNED";
    case JobState::kRunning: return "RUNNING";
    case JobState::kSucceeded: return "SUCCEEDED";
    case JobState::kFailed: return "FAILED";
    case JobState::kCancelled: return "CANCELLED";
    case JobState::kRetrying: return "RETRYING";
  }
  return "UNKNOWN";
}

Result<JobState> ParseJobState(std::string_view name) {
  std::string known;
  for (JobState state : kAllStates) {
    if (name == JobStateName(state)) return state;
    known += known.empty() ? "" : ", ";
    known += JobStateName(state);
  }
  return InvalidArgument("unknown state '" + std::string(name) + "' (" + known + ")");
}

bool IsTerminal(JobState state) {
  return state == JobState::kSucceeded || state == JobState::kFailed ||
         state == JobState::kCancelled;
}

bool IsValidTransition(JobState from, JobState to) {
  using S = JobState;
  switch (from) {
    case S::kQueued: return to == S::kAssigned || to == S::kFailed || to == S::kCancelled;
    case S::kAssigned:
      return to == S::kRunning || to == S::kQueued || to == S::kRetrying || to == S::kFailed ||
             to == S::kCancelled;
    case S::kRunning:
      return to == S::kSucceeded || to == S::kFailed || to == S::kCancelled || to == S::kRetrying ||
             to == S::kQueued;
    case S::kRetrying: return to == S::kQueued || to == S::kFailed || to == S::kCancelled;
    case S::kSucceeded:
    case S::kFailed:
    case S::kCancelled: return false;
  }
  return false;
}

const char* JobKindName(JobKind kind) {
  switch (kind) {
    case JobKind::kInfer: return "infer";
    case JobKind::kFinetune: return "finetune";
  }
  return "unknown";
}

Result<JobKind> ParseJobKind(std::string_view name) {
  for (JobKind kind : kAllKinds) {
    if (name == JobKindName(kind)) return kind;
  }
  return InvalidArgument("unknown job kind '" + std::string(name) + "' (infer, finetune)");
}

}  // namespace fuji::store
