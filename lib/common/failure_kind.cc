// The wire words of FailureKind.
#include "lib/common/failure_kind.h"

#include <array>
#include <utility>

namespace fuji {
namespace {

constexpr std::array<std::pair<FailureKind, std::string_view>, 9> kNames = {{
    {FailureKind::kInternal, "internal"},
    {FailureKind::kExitCode, "exit_code"},
    {FailureKind::kSignal, "signal"},
    {FailureKind::kHostOom, "host_oom"},
    {FailureKind::kCudaOom, "cuda_oom"},
    {FailureKind::kBadInput, "bad_input"},
    {FailureKind::kTimeout, "timeout"},
    {FailureKind::kCancelled, "cancelled"},
    {FailureKind::kCollectiveTimeout, "collective_timeout"},
}};

}  // namespace

std::string_view FailureKindName(FailureKind kind) {
  for (const auto& [k, name] : kNames) {
    if (k == kind) return name;
  }
  return "internal";
}

FailureKind ParseFailureKind(std::string_view name) {
  for (const auto& [k, n] : kNames) {
    if (n == name) return k;
  }
  return FailureKind::kInternal;
}

}  // namespace fuji
