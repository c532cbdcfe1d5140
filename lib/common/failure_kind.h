// How a job attempt failed: one enum for the rank's error events, the agent's Complete and fujid's
// retry decision, with the words the wire carries (CompleteRequest.failure_kind in
// proto/fuji/v1/worker.proto, a rank's {"event": "error", "reason": ...}). The wire stays strings,
// so an agent and a daemon of different versions still understand each other: a word this side
// does not know parses as kInternal (retried like any failure that may be the node's fault).
#pragma once

#include <string_view>

namespace fuji {

enum class FailureKind {
  kInternal,           // "internal": a bug or a fault nobody named; also every unknown word
  kExitCode,           // "exit_code": the rank exited non-zero without saying why
  kSignal,             // "signal": a signal ended the rank (not the OOM killer, as far as is known)
  kHostOom,            // "host_oom": out of host memory (std::bad_alloc, or the kernel's OOM killer)
  kCudaOom,            // "cuda_oom": out of GPU memory
  kBadInput,           // "bad_input": the job itself is wrong; it would fail anywhere
  kTimeout,            // "timeout": the job ran past its timeout_ms
  kCancelled,          // "cancelled": stopped on request, or because the daemon no longer wanted it
  kCollectiveTimeout,  // "collective_timeout": a rank's reason only: a peer was lost mid-collective
};

// The wire word of `kind`.
std::string_view FailureKindName(FailureKind kind);

// The kind a wire word names; kInternal for "" and for any word not listed above.
FailureKind ParseFailureKind(std::string_view name);

}  // namespace fuji
