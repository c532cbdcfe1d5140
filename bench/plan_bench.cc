// Planner benchmark: PlanAll + Recommend for each of the 7 Cerebras-GPT models, fine-tuning on
// 8 x 40 GiB (9 plans) and inference on one (2 plans), from the model's name to the recommendation
// (name resolution included). Target: under 10 ms per model.
// usage: fuji-plan-bench [--repeats N]
// Prints one JSON line per model and mode: ms per planning (min, median, max over the repeats).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "lib/plan/plan.h"

int main(int argc, char** argv) {
  int repeats = 200;
  for (int i = 1; i + 1 < argc; ++i) {
    if (std::strcmp(argv[i], "--repeats") == 0) repeats = std::max(1, std::atoi(argv[i + 1]));
  }
  const int64_t gib = int64_t{1} << 30;
  double worst = 0;
  for (const char* model : {"111m", "256m", "590m", "1.3b", "2.7b", "6.7b", "13b"}) {
    for (const char* mode : {"finetune", "infer"}) {
      std::vector<double> ms;
      size_t plans = 0;
      int recommended = -1;
      for (int r = 0; r < repeats; ++r) {
        const auto start = std::chrono::steady_clock::now();
        fuji::plan::PlanRequest request;
        auto config = fuji::plan::ResolveModel(model, nullptr);
        if (!config.ok()) {
          std::fprintf(stderr, "%s\n", config.status().message().c_str());
          return 1;
        }
        request.config = *config;
        request.mode = mode;
        request.gpus = std::string(mode) == "finetune" ? 8 : 1;
        request.gpu_memory_bytes = 40 * gib;
        request.host_memory_bytes = 1024 * gib;
        auto result = fuji::plan::PlanAll(request);
        if (!result.ok()) {
          std::fprintf(stderr, "%s\n", result.status().message().c_str());
          return 1;
        }
        auto best = fuji::plan::Recommend(*result);
        ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count());
        plans = result->size();
        recommended = best ? best->zero : -1;
      }
      std::sort(ms.begin(), ms.end());
      worst = std::max(worst, ms[ms.size() / 2]);
      std::printf("{\"model\":\"%s\",\"mode\":\"%s\",\"plans\":%zu,\"recommended_zero\":%d,\"ms_min\":%.4f,"
                  "\"ms_median\":%.4f,\"ms_max\":%.4f}\n",
                  model, mode, plans, recommended, ms.front(), ms[ms.size() / 2], ms.back());
    }
  }
  std::printf("{\"worst_median_ms\":%.4f,\"target_ms\":10}\n", worst);
  return 0;
}
