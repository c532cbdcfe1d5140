// fuji-rank: runs the engine for one device. Reads requests as JSON lines on stdin and writes
// events as JSON lines on fd 3 (stdout when fd 3 is not open), until stdin closes (after the
// requests taken have ended) or a "finetune" request fails (exit code 1). Inference requests are
// served concurrently by the engine thread (rank_service.h) while this thread reads on.
#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include <torch/version.h>

#include "lib/common/json_lines.h"
#include "worker/engine/device.h"
#include "worker/rank/rank_service.h"
#include "worker/train/trainer.h"

namespace {

// SIGUSR1: the agent preempts the fine-tune (rank_service.h, "Preemption"). Installed before
// anything is said on fd 3: the agent signals a rank only once it has spoken.
void OnPreemptSignal(int) { fuji::train::RequestPreempt(); }

void InstallPreemptHandler() {
  struct sigaction action {};
  action.sa_handler = OnPreemptSignal;
  sigemptyset(&action.sa_mask);
  action.sa_flags = SA_RESTART;  // reads and collectives in flight go on
  ::sigaction(SIGUSR1, &action, nullptr);
}

}  // namespace

int main(int argc, char** argv) {
  fuji::engine::ReexecWithPassiveOpenMp(argv);
  InstallPreemptHandler();
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--version") == 0) {
      std::printf("fuji-rank (libtorch %s, %s)\n", TORCH_VERSION,
                  fuji::engine::BuiltWithCuda() ? "CUDA" : "CPU only");
      return 0;
    }
    std::fprintf(stderr, "usage: fuji-rank [--version]  (requests on stdin, events on fd 3)\n");
    return 2;
  }
  const int event_fd = ::fcntl(3, F_GETFD) != -1 ? 3 : 1;
  fuji::JsonLineWriter events(event_fd);
  fuji::engine::ConfigureThreads();
  // FUJI_HOST_CACHE_MIB: the most freed large blocks kept for reuse (default 2048; 0: none).
  int64_t cache_mib = 2048;
  if (const char* env = std::getenv("FUJI_HOST_CACHE_MIB"); env != nullptr && *env != '\0') {
    char* end = nullptr;
    const long long v = std::strtoll(env, &end, 10);
    if (*end == '\0' && v >= 0 && v <= (int64_t{1} << 30)) cache_mib = v;
  }
  fuji::engine::KeepFreedMemory(cache_mib << 20);
  fuji::rank::RankService service(&events);
  fuji::LineReader requests(0, 64u << 20);
  for (;;) {
    auto line = requests.ReadLine();
    if (!line.ok()) {
      std::fprintf(stderr, "fuji-rank: %s\n", line.status().ToString().c_str());
      return 1;
    }
    if (!line->has_value()) {
      service.Drain();  // the requests taken run to their end
      return 0;
    }
    if ((*line)->empty()) continue;
    auto request = fuji::ParseJsonObject(**line);
    if (!request.ok()) {
      (void)events.Write({{"event", "error"}, {"code", "INVALID_ARGUMENT"}, {"reason", "bad_input"},
                         {"message", request.status().message()}});
      continue;
    }
    // A fine-tuning rank serves its gang's one request: after a failure (a peer gone, a collective
    // timed out) it exits non-zero, as the gang protocol says.
    if (!service.Handle(*request) && request->value("op", "") == "finetune") return 1;
  }
}
