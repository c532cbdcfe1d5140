// What a job left behind, as the CLI prints it: memory samples (nvidia-smi CSV or JSON), phase
// timings, log lines, and the workers list. Pure functions of the proto messages.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "fuji/v1/jobs.pb.h"

namespace fuji::client {

// "timestamp, index, name, memory.used [MiB], memory.total [MiB], utilization.gpu [%]"
std::string SampleCsvHeader();
// "2026/11/27 12:00:00.000, 0, NVIDIA H100 80GB HBM3, 4096 MiB, 81559 MiB, 85 %" in local time;
// a host-memory sample is index -1, name "host memory".
std::string SampleCsvRow(const v1::MemorySample& sample);
// The header and one row per sample, each line ending in '\n'.
std::string SamplesCsv(const std::vector<v1::MemorySample>& samples);
// {"id", "samples": [{at_ms, worker_id, device_index, device_name, used_mib, total_mib,
// utilization_pct, process_mib, host_memory}]}
nlohmann::json SamplesJson(int64_t job_id, const std::vector<v1::MemorySample>& samples);

// The job's head plus "timings": [{attempt, rank, phase, start_ms, end_ms, ms}].
nlohmann::json TimingsJson(const v1::Job& job, const std::vector<v1::Timing>& timings);
// ATTEMPT RANK PHASE START END MS; START and END in ms from the earliest start.
std::string TimingsTable(const std::vector<v1::Timing>& timings);

// `fuji losses`: {"id", "losses": [{"step", "loss"}], "eval_losses": [{"step", "loss"}]}, the
// lists the launcher's result has; with split "train" or "eval" only that split's list.
nlohmann::json LossesJson(int64_t job_id, const std::vector<v1::LossPoint>& points,
                          const std::string& split = "");
// STEP LOSS EVAL_LOSS TOK/S, one row per step in step order, "-" where a step has no point of a
// split; with split "train" (STEP LOSS TOK/S) or "eval" (STEP EVAL_LOSS) only its columns.
std::string LossesTable(const std::vector<v1::LossPoint>& points, const std::string& split = "");

// "rank0/stderr: the line" (no stream: just the line), control characters escaped
// (EscapeControls) unless raw.
std::string LogLineText(const v1::LogLine& line, bool raw = false);

// A drained agent's word, the same in `fuji workers` and `fuji admin agent list`: "DRAINING" while
// it still runs jobs, "DRAINED" once it runs none; "" when it is not drained.
std::string DrainWord(int64_t drained_at_ms, int running_jobs);

// {"workers": [{id, host, state, drain ("", DRAINING, DRAINED), last_heartbeat_ms, devices:
// [{index, name, total_mib, kind}], running_jobs: [...]}]}
nlohmann::json WorkersJson(const std::vector<v1::Worker>& workers);
// ID HOST STATE HEARTBEAT DEVICES JOBS; STATE is "ONLINE,DRAINING" for a drained agent (DrainWord)
std::string WorkersTable(const std::vector<v1::Worker>& workers, int64_t now_ms);

}  // namespace fuji::client
