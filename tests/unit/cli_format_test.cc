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
  running.set_owner("alice");
  EXPECT_EQ(JobsTable({SampleJob(), running}, kNoonMs + 90 * 1000, /*with_owner=*/true),
            "ID  OWNER  STATE    KIND   PRIO  ATTEMPTS  AGE  REASON\n"
            "7   -      QUEUED   infer  5     1/3       1m   waiting for a cuda device with 40 GiB free\n"
            "12  alice  RUNNING  infer  5     1/3       1m\n");
}

TEST_F(CliFormatTest, JobJsonFields) {
  const nlohmann::json j = JobToJson(SampleJob());
  for (const char* key : {"id", "state", "kind", "owner", "priority", "attempts", "max_attempts", "reason", "worker_id",
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

v1::LossPoint LossPoint(int64_t step, const std::string& split, double loss, double tokens_per_s = 0) {
  v1::LossPoint p;
  p.set_step(step);
  p.set_split(split);
  p.set_loss(loss);
  p.set_tokens_per_s(tokens_per_s);
  return p;
}

TEST_F(CliFormatTest, LossesTableHasARowPerStep) {
  const std::vector<v1::LossPoint> points = {LossPoint(1, "train", 10.87654, 1234.4),
                                             LossPoint(2, "eval", 10.5), LossPoint(2, "train", 10.25, 1300),
                                             LossPoint(10, "train", 9.0)};
  EXPECT_EQ(LossesTable(points),
            "STEP  LOSS     EVAL_LOSS  TOK/S\n"
            "1     10.8765  -          1234\n"
            "2     10.2500  10.5000    1300\n"
            "10    9.0000   -          -\n");
  EXPECT_EQ(LossesTable(points, "train"),
            "STEP  LOSS     TOK/S\n"
            "1     10.8765  1234\n"
            "2     10.2500  1300\n"
            "10    9.0000   -\n");
  EXPECT_EQ(LossesTable({LossPoint(2, "eval", 10.5)}, "eval"), "STEP  EVAL_LOSS\n2     10.5000\n");
  EXPECT_EQ(LossesTable({}), "STEP  LOSS  EVAL_LOSS  TOK/S\n");
}

TEST_F(CliFormatTest, LossesJsonHasTheLaunchersLists) {
  const std::vector<v1::LossPoint> points = {LossPoint(1, "train", 3.5, 100), LossPoint(2, "eval", 3.25),
                                             LossPoint(2, "train", 3.0, 100)};
  const nlohmann::json j = LossesJson(7, points);
  EXPECT_EQ(j, nlohmann::json::parse(R"({"id": 7,
      "losses": [{"step": 1, "loss": 3.5}, {"step": 2, "loss": 3.0}],
      "eval_losses": [{"step": 2, "loss": 3.25}]})"));
  EXPECT_FALSE(LossesJson(7, points, "train").contains("eval_losses"));
  EXPECT_EQ(LossesJson(7, points, "eval")["eval_losses"].size(), 1u);
  EXPECT_FALSE(LossesJson(7, points, "eval").contains("losses"));
  EXPECT_EQ(LossesJson(7, {})["losses"], nlohmann::json::array());
}

TEST_F(CliFormatTest, FinetuneProgressWithEta) {
  // 4 steps in 8 s from step 2 to step 6: 2 s a step, 4 steps left.
  EXPECT_EQ(EtaMs(2, kNoonMs, 6, kNoonMs + 8000, 10), 8000);
  EXPECT_EQ(EtaMs(6, kNoonMs, 6, kNoonMs + 8000, 10), -1);  // no step since: unknown
  EXPECT_EQ(EtaMs(2, 0, 6, kNoonMs, 10), -1);                // no earlier sighting
  EXPECT_EQ(EtaMs(2, kNoonMs, 10, kNoonMs + 8000, 10), 0);
  EXPECT_EQ(FormatEta(8000), "8s");
  EXPECT_EQ(FormatEta(303 * 1000), "5m03s");
  EXPECT_EQ(FormatEta(7500 * 1000), "2h05m");
  EXPECT_EQ(FormatEta(-1), "-");
  v1::Progress p;
  p.set_phase("train");
  p.set_done(6);
  p.set_total(10);
  p.set_loss(3.4);
  p.set_tokens_per_s(2048.4);
  EXPECT_EQ(TrainProgressText(p, 8000), "step 6/10  loss 3.4000  2048 tok/s  ETA 8s");
  EXPECT_EQ(TrainProgressText(p, -1), "step 6/10  loss 3.4000  2048 tok/s");
  p.set_loss(0);
  p.set_tokens_per_s(0);
  EXPECT_EQ(TrainProgressText(p, -1), "step 6/10");
}

TEST_F(CliFormatTest, ShowHasAFinetunesProgressAndLastLoss) {
  v1::Job job = SampleJob();
  job.set_kind("finetune");
  job.set_state(v1::RUNNING);
  job.set_started_at_ms(kNoonMs);
  v1::Progress* p = job.mutable_progress();
  p->set_phase("train");
  p->set_done(5);
  p->set_total(20);
  p->set_loss(2.5);
  p->set_at_ms(kNoonMs + 10000);
  job.mutable_last_loss()->set_step(5);
  job.mutable_last_loss()->set_loss(2.5);
  job.mutable_last_loss()->set_split("train");
  const std::string text = JobText(job, kNoonMs + 10000);
  EXPECT_NE(text.find("progress:   step 5/20  loss 2.5000  ETA 30s\n"), std::string::npos) << text;
  EXPECT_NE(text.find("last loss:  step 5  loss 2.5000\n"), std::string::npos) << text;
  const nlohmann::json j = JobToJson(job);
  EXPECT_EQ(j["progress"]["done"], 5);
  EXPECT_EQ(j["progress"]["total"], 20);
  EXPECT_EQ(j["last_loss"]["step"], 5);
  EXPECT_DOUBLE_EQ(j["last_loss"]["loss"].get<double>(), 2.5);
  EXPECT_FALSE(JobToJson(SampleJob()).contains("progress"));
  EXPECT_EQ(JobText(SampleJob(), kNoonMs).find("progress:"), std::string::npos);
  EXPECT_FALSE(j.contains("estimate")) << "no rate, no corpus size: no estimate";
}

TEST_F(CliFormatTest, ShowHasARunningFinetunesTimeToTrain) {
  EXPECT_EQ(Grouped(1234567), "1,234,567");
  EXPECT_EQ(Grouped(999.6), "1,000");
  EXPECT_EQ(Grouped(12), "12");
  EXPECT_EQ(Grouped(-3400), "-3,400");
  v1::Job job = SampleJob();
  job.set_kind("finetune");
  job.set_state(v1::RUNNING);
  job.set_devices(2);
  v1::Progress* p = job.mutable_progress();
  p->set_phase("train");
  p->set_done(5);
  p->set_total(20);
  p->set_tokens_per_s(3400);
  EXPECT_TRUE(RunningTrainEstimate(job).is_null()) << "the corpus size unknown";
  p->set_corpus_tokens(1234567);
  const nlohmann::json e = RunningTrainEstimate(job);
  ASSERT_TRUE(e.is_object());
  EXPECT_EQ(e["corpus_tokens"], 1234567);
  EXPECT_EQ(e["epochs"], 1);
  EXPECT_EQ(e["ranks"], 2);
  EXPECT_DOUBLE_EQ(e["tokens_per_s"].get<double>(), 3400);
  EXPECT_DOUBLE_EQ(e["seconds"].get<double>(), 1234567.0 / 3400);  // 363 s
  EXPECT_EQ(e["duration"], "6.1 min");
  EXPECT_EQ(TrainEstimateText(e), "1 epoch of 1,234,567 tokens at 3,400 tok/s on 2 ranks: 6.1 min");
  EXPECT_EQ(JobToJson(job)["estimate"], e);
  const std::string text = JobText(job, kNoonMs);
  EXPECT_NE(text.find("\ntime to train: 1 epoch of 1,234,567 tokens at 3,400 tok/s on 2 ranks: 6.1 min\n"),
            std::string::npos) << text;
  p->set_tokens_per_s(0);
  EXPECT_TRUE(RunningTrainEstimate(job).is_null()) << "no step finished yet";
  p->set_tokens_per_s(3400);
  job.set_state(v1::SUCCEEDED);
  EXPECT_TRUE(RunningTrainEstimate(job).is_null()) << "only while it runs";
  EXPECT_EQ(JobText(job, kNoonMs).find("time to train"), std::string::npos);
}

TEST_F(CliFormatTest, EscapeControlsKeepsTextAndDisarmsTerminalSequences) {
  EXPECT_EQ(EscapeControls("step 3\tloss 2.5\n富士山 é"), "step 3\tloss 2.5\n富士山 é");
  // A line that would clear the screen, retitle the window and ring the bell.
  EXPECT_EQ(EscapeControls("\x1b[2J\x1b]0;owned\x07" "done\r\x7f"),
            "\\x1b[2J\\x1b]0;owned\\x07done\\x0d\\x7f");
  // C1 controls as UTF-8 (U+009B is CSI), lone and truncated bytes, an overlong form.
  EXPECT_EQ(EscapeControls("a\xc2\x9b" "b"), "a\\u009bb");
  EXPECT_EQ(EscapeControls("\x9b\xff\xe6\x97"), "\\x9b\\xff\\xe6\\x97");
  EXPECT_EQ(EscapeControls("\xc0\xaf"), "\\xc0\\xaf");
  v1::LogLine line;
  line.set_stream("rank0/stderr");
  line.set_line("\x1b[31mred");
  EXPECT_EQ(LogLineText(line), "rank0/stderr: \\x1b[31mred");
  EXPECT_EQ(LogLineText(line, /*raw=*/true), "rank0/stderr: \x1b[31mred");
}

TEST_F(CliFormatTest, ShowNamesTheAgentsOfAGang) {
  v1::Job job = SampleJob();
  for (int i = 0; i < 2; ++i) {
    v1::GangMember* member = job.add_gang();
    member->set_worker_id(i == 0 ? "node-a" : "node-b");
    member->set_advertise_addr("10.0.0." + std::to_string(i + 1));
    member->set_first_rank(2 * i);
    member->set_ranks(2);
    member->add_device_indices(0);
    member->add_device_indices(1);
  }
  const std::string text = JobText(job, kNoonMs);
  EXPECT_NE(text.find("gang:       node-a ranks 0-1 (devices 0,1), node-b ranks 2-3 (devices 0,1)\n"),
            std::string::npos)
      << text;
  const nlohmann::json j = JobToJson(job);
  ASSERT_EQ(j["gang"].size(), 2u);
  EXPECT_EQ(j["gang"][1]["worker_id"], "node-b");
  EXPECT_EQ(j["gang"][1]["advertise_addr"], "10.0.0.2");
  EXPECT_EQ(j["gang"][1]["first_rank"], 2);
  EXPECT_EQ(j["gang"][1]["device_indices"], nlohmann::json::array({0, 1}));
  EXPECT_FALSE(JobToJson(SampleJob()).contains("gang"));
  EXPECT_EQ(JobText(SampleJob(), kNoonMs).find("gang:"), std::string::npos);
}

}  // namespace
}  // namespace fuji::client
