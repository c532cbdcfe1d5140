// The CLI's formatting without a server: nvidia-smi CSV rows, fitted tables, job JSON, duration
// parsing and lifecycle names.
#include <cstdlib>
#include <ctime>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "client/format_jobs.h"
#include "client/format_telemetry.h"
#include "client/format_text.h"

namespace fuji::client {
namespace {

// 2026/11/27 12:00:00.000 UTC.
constexpr int64_t kNoonMs = 1795780800000;

class CliFormatTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    ::setenv("TZ", "UTC", 1);
    ::tzset();
  }
};

v1::MemorySample GpuSample() {
  v1::MemorySample s;
  s.set_at_ms(kNoonMs);
  s.set_worker_id("node1");
  s.set_device_index(0);
  s.set_device_name("NVIDIA H100 80GB HBM3");
  s.set_used_mib(4096);
  s.set_total_mib(81559);
  s.set_utilization_pct(85);
  s.set_process_mib(4000);
  return s;
}

v1::Job SampleJob() {
  v1::Job job;
  job.set_id(7);
  job.set_kind("infer");
  job.set_state(v1::QUEUED);
  job.set_priority(5);
  job.set_attempts(1);
  job.set_max_attempts(3);
  job.set_reason("waiting for a cuda device with 40 GiB free");
  job.set_submitted_at_ms(kNoonMs);
  job.set_spec_json(R"({"model":"/m","max_new_tokens":8})");
  return job;
}

TEST_F(CliFormatTest, SampleCsvIsNvidiaSmiStyle) {
  EXPECT_EQ(SampleCsvHeader(),
            "timestamp, index, name, memory.used [MiB], memory.total [MiB], utilization.gpu [%]");
  EXPECT_EQ(SampleCsvRow(GpuSample()), "2026/11/27 12:00:00.000, 0, NVIDIA H100 80GB HBM3, 4096 MiB, 81559 MiB, 85 %");
  v1::MemorySample host;
  host.set_at_ms(kNoonMs + 1234);
  host.set_host_memory(true);
  host.set_device_index(-1);
  host.set_used_mib(10);
  host.set_total_mib(128000);
  EXPECT_EQ(SampleCsvRow(host), "2026/11/27 12:00:01.234, -1, host memory, 10 MiB, 128000 MiB, 0 %");
  EXPECT_EQ(SamplesCsv({GpuSample(), host}),
            SampleCsvHeader() + "\n" + SampleCsvRow(GpuSample()) + "\n" + SampleCsvRow(host) + "\n");
  EXPECT_EQ(SamplesCsv({}), SampleCsvHeader() + "\n");
}

TEST_F(CliFormatTest, LocalTimeHonoursTimeZone) {
  EXPECT_EQ(FormatLocalTime(kNoonMs + 7), "2026/11/27 12:00:00.007");
  ::setenv("TZ", "JST-9", 1);
  ::tzset();
  EXPECT_EQ(FormatLocalTime(kNoonMs), "2026/11/27 21:00:00.000");
  ::setenv("TZ", "UTC", 1);
  ::tzset();
}

TEST_F(CliFormatTest, SamplesJsonHasEveryField) {
  const nlohmann::json j = SamplesJson(7, {GpuSample()});
  EXPECT_EQ(j["id"], 7);
  ASSERT_EQ(j["samples"].size(), 1u);
  const auto& s = j["samples"][0];
  for (const char* key : {"at_ms", "worker_id", "device_index", "device_name", "used_mib", "total_mib",
                          "utilization_pct", "process_mib", "host_memory"}) {
    EXPECT_TRUE(s.contains(key)) << key;
  }
  EXPECT_EQ(s["used_mib"], 4096);
  EXPECT_EQ(s["device_name"], "NVIDIA H100 80GB HBM3");
  EXPECT_EQ(s["host_memory"], false);
}

TEST_F(CliFormatTest, TableWidthsAreFitted) {
  EXPECT_EQ(RenderTable({"ID", "STATE", "REASON"}, {{"1", "RUNNING", ""}, {"12", "QUEUED", "no device"}}),
            "ID  STATE    REASON\n"
            "1   RUNNING\n"
            "12  QUEUED   no device\n");
  EXPECT_EQ(RenderTable({"A"}, {}), "A\n");
}

TEST_F(CliFormatTest, JobsTable) {
  v1::Job running = SampleJob();
  running.set_id(12);
  running.set_state(v1::RUNNING);
  running.set_reason("");
  const std::string table = JobsTable({SampleJob(), running}, kNoonMs + 90 * 1000);
  EXPECT_EQ(table,
            "ID  STATE    KIND   PRIO  ATTEMPTS  AGE  REASON\n"
            "7   QUEUED   infer  5     1/3       1m   waiting for a cuda device with 40 GiB free\n"
            "12  RUNNING  infer  5     1/3       1m\n");
}

TEST_F(CliFormatTest, JobJsonFields) {
  const nlohmann::json j = JobToJson(SampleJob());
  for (const char* key : {"id", "state", "kind", "priority", "attempts", "max_attempts", "reason", "worker_id",
                          "devices", "device_kind", "timeout_ms", "submitted_at_ms", "started_at_ms",
                          "finished_at_ms", "spec"}) {
    EXPECT_TRUE(j.contains(key)) << key;
  }
  EXPECT_EQ(j["id"], 7);
  EXPECT_EQ(j["state"], "QUEUED");
  EXPECT_EQ(j["kind"], "infer");
  EXPECT_EQ(j["attempts"], 1);
  EXPECT_EQ(j["spec"]["max_new_tokens"], 8);

  const nlohmann::json r = JobResultJson(SampleJob(), {{"text", "Everest"}});
  EXPECT_EQ(r["result"]["text"], "Everest");
  for (const char* key : {"id", "state", "kind", "attempts", "reason"}) EXPECT_TRUE(r.contains(key)) << key;

  v1::Timing t;
  t.set_attempt(0);
  t.set_rank(0);
  t.set_phase("load");
  t.set_start_ms(1000);
  t.set_end_ms(1250);
  const nlohmann::json tj = TimingsJson(SampleJob(), {t});
  EXPECT_EQ(tj["state"], "QUEUED");
  EXPECT_EQ(tj["timings"][0]["phase"], "load");
  EXPECT_EQ(tj["timings"][0]["ms"], 250);
  EXPECT_EQ(TimingsTable({t}), "ATTEMPT  RANK  PHASE  START  END  MS\n0        0     load   0      250  250\n");
}

TEST_F(CliFormatTest, ShowTextHasEveryField) {
  const std::string text = JobText(SampleJob(), kNoonMs + 5000);
  for (const char* piece : {"id:         7", "state:      QUEUED", "reason:     waiting for a cuda device",
                            "attempts:   1 of at most 3", "2026/11/27 12:00:00.000 (5s ago)", "\"max_new_tokens\": 8"}) {
    EXPECT_NE(text.find(piece), std::string::npos) << piece << "\n" << text;
  }
  EXPECT_EQ(JobOutcome(SampleJob()), "job 7 QUEUED: waiting for a cuda device with 40 GiB free");
}

TEST_F(CliFormatTest, DurationParsing) {
  EXPECT_EQ(*ParseDurationMs("30s"), 30000);
  EXPECT_EQ(*ParseDurationMs("5m"), 300000);
  EXPECT_EQ(*ParseDurationMs("1h"), 3600000);
  EXPECT_EQ(*ParseDurationMs("250ms"), 250);
  EXPECT_EQ(*ParseDurationMs("0s"), 0);
  for (const char* bad : {"", "s", "-5s", "5x", "1.5h", "5 m", "ms", "10d", "99999999999999h"}) {
    auto r = ParseDurationMs(bad);
    EXPECT_FALSE(r.ok()) << bad;
    if (!r.ok()) {
      EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument) << bad;
    }
  }
}

TEST_F(CliFormatTest, AgeAndProgressBar) {
  EXPECT_EQ(FormatAge(kNoonMs, kNoonMs + 12000), "12s");
  EXPECT_EQ(FormatAge(kNoonMs, kNoonMs + 3 * 3600 * 1000), "3h");
  EXPECT_EQ(FormatAge(kNoonMs, kNoonMs + 2 * 86400 * 1000LL), "2d");
  EXPECT_EQ(FormatAge(0, kNoonMs), "-");
  EXPECT_EQ(ProgressBar("generate", 12, 64, 8), "[#-------] generate 12/64");
  EXPECT_EQ(ProgressBar("generate", 64, 64, 4), "[####] generate 64/64");
  EXPECT_EQ(ProgressBar("load", 0, 0), "load");
}

TEST_F(CliFormatTest, StateNames) {
  const std::pair<v1::JobState, const char*> names[] = {
      {v1::QUEUED, "QUEUED"},       {v1::ASSIGNED, "ASSIGNED"},   {v1::RUNNING, "RUNNING"},
      {v1::SUCCEEDED, "SUCCEEDED"}, {v1::FAILED, "FAILED"},       {v1::CANCELLED, "CANCELLED"},
      {v1::RETRYING, "RETRYING"}};
  for (const auto& [state, name] : names) {
    EXPECT_EQ(JobStateName(state), name);
    auto parsed = ParseJobState(name);
    ASSERT_TRUE(parsed.ok()) << name;
    EXPECT_EQ(*parsed, state);
  }
  EXPECT_EQ(*ParseJobState("running"), v1::RUNNING);
  EXPECT_EQ(JobStateName(v1::JOB_STATE_UNSPECIFIED), "UNSPECIFIED");
  auto bad = ParseJobState("DONE");
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(bad.status().message().find("RETRYING"), std::string::npos);
  EXPECT_TRUE(IsTerminal(v1::CANCELLED));
  EXPECT_FALSE(IsTerminal(v1::RETRYING));
}

}  // namespace
}  // namespace fuji::client
