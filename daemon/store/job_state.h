// JobState and JobKind: lifecycle states, legal transitions, and their database spellings.
#pragma once

#include <string_view>

#include "lib/common/status.h"

namespace fuji::store {

// QUEUED -> ASSIGNED -> RUNNING -> SUCCEEDED | FAILED | CANCELLED, with RETRYING back to QUEUED
// (and RUNNING straight back to QUEUED for a preemption).
enum class JobState {
  kQueued,
  kAssigned,
  kRunning,
  kSucceeded,
  kFailed,
  kCancelled,
  kRetrying,
};

// "QUEUED", "ASSIGNED", ...: the spelling stored in the database and shown to users.
const char* JobStateName(JobState state);
// The inverse of JobStateName; INVALID_ARGUMENT "unknown state 'X' (QUEUED, ASSIGNED, ...)".
Result<JobState> ParseJobState(std::string_view name);
// SUCCEEDED, FAILED and CANCELLED: nothing leaves them.
bool IsTerminal(JobState state);
// Whether the lifecycle allows from -> to. The edges:
//   QUEUED   -> ASSIGNED | FAILED | CANCELLED       (FAILED: can never be placed, e.g. bad spec)
//   ASSIGNED -> RUNNING | QUEUED | RETRYING | FAILED | CANCELLED  (QUEUED: agent declined, no
//                                                     attempt used; RETRYING: lease lost)
//   RUNNING  -> SUCCEEDED | FAILED | CANCELLED | RETRYING | QUEUED  (QUEUED: preempted at a step
//                                                     boundary by a drain with requeue, no attempt used)
//   RETRYING -> QUEUED | FAILED | CANCELLED
bool IsValidTransition(JobState from, JobState to);

enum class JobKind { kInfer, kFinetune };

// "infer", "finetune".
const char* JobKindName(JobKind kind);
// INVALID_ARGUMENT "unknown job kind 'X' (infer, finetune)".
Result<JobKind> ParseJobKind(std::string_view name);

}  // namespace fuji::store
