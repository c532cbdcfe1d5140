// Reports of finished jobs, from the daemon's database: Markdown tables, the data behind them as
// CSV, and charts drawn by gnuplot (memory per model, time per model split into load and
// generation, memory over time per job, loss curves). `fuji report` and `fuji study` write them.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "client/daemon_client.h"
#include "lib/common/status.h"

namespace fuji::client {

// Everything the daemon holds about one job.
struct JobData {
  v1::Job job;
  nlohmann::json spec;    // the job's spec
  nlohmann::json result;  // null when the job has none
  std::vector<v1::Timing> timings;
  std::vector<v1::MemorySample> samples;
  std::vector<v1::LossPoint> losses;
  std::string label;      // how the report names the job ("111m", or the model directory's name)
  bool random_weights = false;
};

Result<JobData> FetchJob(DaemonClient& client, int64_t id);

struct ReportOptions {
  std::string out_dir;
  std::string title = "fuji report";
  // For the time-to-train column: the corpus of the seed study (Japanese Wikipedia; its size is
  // not in the study, see docs/study.md) in tokens, and the epochs.
  double corpus_tokens = 0;
  double epochs = 1;
  std::vector<std::string> notes;  // lines printed under the title
};

// Writes out_dir/report.md, out_dir/data/*.csv and, when gnuplot is on the PATH, out_dir/*.png
// (the Markdown links them). Returns the report's path.
Result<std::string> WriteReport(const std::vector<JobData>& jobs, const ReportOptions& options);

}  // namespace fuji::client
