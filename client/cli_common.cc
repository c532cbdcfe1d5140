// Error reporting and shared paths of the CLI.
#include <cstdio>
#include <cstdlib>

#include "client/cli.h"
#include "worker/launcher/finetune_prepare.h"

namespace fuji::client {

int ReportStatus(const Status& status) {
  if (status.ok()) return 0;
  std::fprintf(stderr, "fuji: %s\n", status.message().c_str());
  switch (status.code()) {
    case StatusCode::kInvalidArgument:
    case StatusCode::kNotFound:
    case StatusCode::kDataLoss:
    case StatusCode::kFailedPrecondition:
    case StatusCode::kAlreadyExists: return 2;
    default: return 1;
  }
}

std::string DefaultVocabDir() { return launch::DefaultVocabDir(); }

}  // namespace fuji::client
