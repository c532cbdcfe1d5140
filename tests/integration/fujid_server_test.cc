// fujid's services end to end: the real gRPC server in-process on loopback, a test agent and a
// test user talking to it through the generated stubs.
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fstream>
#include <future>
#include <thread>
#include <vector>

#include "lib/common/limits.h"
#include "tests/integration/fujid_test_util.h"

namespace fuji::testing {
namespace {

using ::testing::HasSubstr;

class FujidServerTest : public FujidTest {
 protected:
  void SetUp() override {
    FujidTest::SetUp();
    StartServer();
  }
};

TEST_F(FujidServerTest, SubmitRunsOnTheAgentAndStoresItsResultTimingsAndSamples) {
  Register("node-a", 1);
  v1::Job job;
  ASSERT_TRUE(Submit(Spec(), &job).ok());
  EXPECT_EQ(job.state(), v1::QUEUED);
  EXPECT_GT(job.id(), 0);

  // A user watches the job from the start.
  std::vector<v1::WatchEvent> events;
  grpc::Status watch_status;
  std::promise<void> watching;
  std::thread watcher([&] {
    grpc::ClientContext context;
    v1::WatchJobRequest request;
    request.set_id(job.id());
    auto reader = jobs_->WatchJob(&context, request);
    v1::WatchEvent event;
    while (reader->Read(&event)) {
      events.push_back(event);
      if (events.size() == 1) watching.set_value();
    }
    if (events.empty()) watching.set_value();
    watch_status = reader->Finish();
  });
  watching.get_future().wait();  // subscribed: progress is not stored, only streamed

  v1::PollAssignmentsResponse polled = Poll("node-a", kPatienceMs);
  ASSERT_EQ(polled.assignments_size(), 1);
  const v1::Assignment& assignment = polled.assignments(0);
  EXPECT_EQ(assignment.job_id(), job.id());
  EXPECT_EQ(assignment.attempt(), 0);
  EXPECT_EQ(assignment.kind(), "infer");
  ASSERT_EQ(assignment.device_indices_size(), 1);

  v1::JobReport report;
  report.set_worker_id("node-a");
  report.set_job_id(job.id());
  report.set_lease_epoch(assignment.lease_epoch());
  report.set_started(true);
  v1::Timing* timing = report.add_timings();
  timing->set_phase("load");
  timing->set_start_ms(1000);
  timing->set_end_ms(1500);
  v1::MemorySample* sample = report.add_samples();
  sample->set_at_ms(1200);
  sample->set_device_name("cpu");
  sample->set_used_mib(100);
  sample->set_total_mib(1000);
  v1::LogLine* log = report.add_logs();
  log->set_stream("rank0/stderr");
  log->set_line("loading");
  v1::Progress* progress = report.add_progress();
  progress->set_phase("generate");
  progress->set_done(1);
  progress->set_total(4);
  {
    grpc::ClientContext context;
    v1::ReportResponse response;
    AsWorker(&context, report.worker_id());
    ASSERT_TRUE(workers_->Report(&context, report, &response).ok());
    EXPECT_FALSE(response.cancel());
  }
  EXPECT_EQ(GetJob(job.id()).state(), v1::RUNNING);

  v1::CompleteRequest done;
  done.set_worker_id("node-a");
  done.set_job_id(job.id());
  done.set_lease_epoch(assignment.lease_epoch());
  done.set_succeeded(true);
  done.set_result_json(R"({"text":"hello world"})");
  ASSERT_TRUE(Complete(done).ok());
  v1::Job finished = GetJob(job.id());
  EXPECT_EQ(finished.state(), v1::SUCCEEDED);
  EXPECT_GT(finished.finished_at_ms(), 0);

  grpc::ClientContext c1, c2, c3, c4;
  v1::JobRef ref;
  ref.set_id(job.id());
  v1::ResultResponse result;
  ASSERT_TRUE(jobs_->GetResult(&c1, ref, &result).ok());
  EXPECT_EQ(result.result_json(), R"({"text":"hello world"})");
  v1::TimingsResponse timings;
  ASSERT_TRUE(jobs_->GetTimings(&c2, ref, &timings).ok());
  ASSERT_EQ(timings.timings_size(), 1);
  EXPECT_EQ(timings.timings(0).phase(), "load");
  v1::SamplesResponse samples;
  ASSERT_TRUE(jobs_->GetSamples(&c3, ref, &samples).ok());
  ASSERT_EQ(samples.samples_size(), 1);
  EXPECT_EQ(samples.samples(0).worker_id(), "node-a");
  v1::LogsRequest logs_request;
  logs_request.set_id(job.id());
  v1::LogsResponse logs;
  ASSERT_TRUE(jobs_->GetLogs(&c4, logs_request, &logs).ok());
  ASSERT_EQ(logs.lines_size(), 1);
  EXPECT_EQ(logs.lines(0).line(), "loading");

  watcher.join();
  EXPECT_TRUE(watch_status.ok()) << watch_status.error_message();
  ASSERT_GE(events.size(), 3u);
  EXPECT_EQ(events.front().what_case(), v1::WatchEvent::kState);
  EXPECT_EQ(events.back().state(), v1::SUCCEEDED);
  bool saw_log = false, saw_progress = false;
  for (const v1::WatchEvent& e : events) {
    saw_log |= e.has_log() && e.log().line() == "loading";
    saw_progress |= e.has_progress() && e.progress().done() == 1;
  }
  EXPECT_TRUE(saw_log);
  EXPECT_TRUE(saw_progress);

  grpc::ClientContext c5;
  v1::ListWorkersResponse workers;
  ASSERT_TRUE(jobs_->ListWorkers(&c5, v1::ListWorkersRequest(), &workers).ok());
  ASSERT_EQ(workers.workers_size(), 1);
  EXPECT_EQ(workers.workers(0).state(), "ONLINE");
}

TEST_F(FujidServerTest, BadInputGetsItsCodeAndMessageAndTheServerKeepsServing) {
  auto expect = [&](const std::string& spec, grpc::StatusCode code, const std::string& text,
                    const std::string& kind = "infer") {
    grpc::Status status = Submit(spec, nullptr, kind);
    EXPECT_EQ(status.error_code(), code) << spec.substr(0, 200) << ": " << status.error_message();
    EXPECT_THAT(status.error_message(), HasSubstr(text));
  };
  expect("{not json", grpc::StatusCode::INVALID_ARGUMENT, "JSON");
  // Once a stack overflow that took fujid down: a spec nested 400,000 deep (0.8 MB).
  std::string deep = Spec();
  deep.pop_back();  // the closing brace
  deep += R"(, "deep": )" + std::string(400000, '[') + std::string(400000, ']') + "}";
  expect(deep, grpc::StatusCode::INVALID_ARGUMENT, "spec_json nests arrays and objects deeper than 64 levels");
  expect(Spec({{"model", dir_ + "/nowhere"}}), grpc::StatusCode::NOT_FOUND,
         "model path " + dir_ + "/nowhere not found");
  // Outside fujid's read roots, whether it exists or not, the answer is the same and names the roots.
  for (const std::string& outside : std::vector<std::string>{"/etc", "/nonexistent/model", dir_ + "/../elsewhere"}) {
    grpc::Status status = Submit(Spec({{"model", outside}}), nullptr);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << outside;
    EXPECT_EQ(status.error_message(), "model path " + outside + " is outside fujid's read roots (" + dir_ + ")");
  }
  expect(Spec({{"max_new_tokens", -1}}), grpc::StatusCode::INVALID_ARGUMENT, "max_new_tokens");
  expect(Spec({{"max_new_tokens", int64_t{1} << 40}}), grpc::StatusCode::INVALID_ARGUMENT,
         "max_new_tokens");
  expect(Spec({{"prompt", std::string(2 << 20, 'a')}}), grpc::StatusCode::INVALID_ARGUMENT,
         "prompt");
  // One table of limits (lib/common/limits.h): a spec over its bytes, new tokens past the model's
  // positions (the test model's config is GPT-2's: 1024), a priority or an attempt budget out of range.
  expect(Spec({{"prompt", std::string(5 << 20, 'a')}}), grpc::StatusCode::INVALID_ARGUMENT,
         "spec_json has 52430");
  expect(Spec({{"max_new_tokens", 1024}}), grpc::StatusCode::INVALID_ARGUMENT,
         "max_new_tokens 1024 with a prompt of at least 1 token exceeds the model's 1024 positions");
  nlohmann::json ids = nlohmann::json::parse(Spec({{"max_new_tokens", 1020}, {"prompt_ids", std::vector<int>(5, 1)}}));
  ids.erase("prompt");
  expect(ids.dump(), grpc::StatusCode::INVALID_ARGUMENT,
         "max_new_tokens 1020 with a prompt of 5 tokens exceeds the model's 1024 positions");
  {
    grpc::ClientContext context;
    v1::SubmitRequest request;
    request.set_kind("infer");
    request.set_spec_json(Spec());
    request.set_priority(limits::kMaxPriority + 1);
    v1::SubmitResponse response;
    grpc::Status status = jobs_->Submit(&context, request, &response);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_THAT(status.error_message(), HasSubstr("priority 1001 is outside -1000..1000"));
  }
  expect(Spec({{"temperature", "hot"}}), grpc::StatusCode::INVALID_ARGUMENT, "temperature");
  expect(Spec(), grpc::StatusCode::INVALID_ARGUMENT, "field 'data' is required", "finetune");

  grpc::ClientContext c1;
  v1::GetJobRequest get;
  get.set_id(999);
  v1::Job job;
  grpc::Status status = jobs_->GetJob(&c1, get, &job);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(status.error_message(), "job 999 not found");

  grpc::ClientContext c2;
  v1::ListJobsRequest list;
  list.set_state("BOGUS");
  v1::ListJobsResponse listed;
  status = jobs_->ListJobs(&c2, list, &listed);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(), HasSubstr("QUEUED"));

  grpc::ClientContext c3;
  v1::JobRef ref;
  ref.set_id(999);
  v1::ResultResponse result;
  EXPECT_EQ(jobs_->GetResult(&c3, ref, &result).error_code(), grpc::StatusCode::NOT_FOUND);

  grpc::ClientContext c4;
  v1::HealthResponse health;
  ASSERT_TRUE(jobs_->Health(&c4, v1::HealthRequest(), &health).ok());
  EXPECT_FALSE(health.version().empty());
  EXPECT_TRUE(Submit(Spec(), nullptr).ok());
}

TEST_F(FujidServerTest, AModelReachedThroughALinkIsCheckedWhereItLeadsAndKeptAsWritten) {
  ASSERT_EQ(::symlink((dir_ + "/model").c_str(), (dir_ + "/model-link").c_str()), 0);
  ASSERT_EQ(::symlink("/etc", (dir_ + "/etc-link").c_str()), 0);
  v1::Job job;
  ASSERT_TRUE(Submit(Spec({{"model", dir_ + "/model-link"}}), &job).ok());
  EXPECT_EQ(nlohmann::json::parse(job.spec_json())["model"], dir_ + "/model-link");
  grpc::Status out = Submit(Spec({{"model", dir_ + "/etc-link"}}), nullptr);
  EXPECT_EQ(out.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(out.error_message(), "model path " + dir_ + "/etc-link is outside fujid's read roots (" + dir_ + ")");
}

TEST_F(FujidServerTest, CancelsQueuedAndRunningJobs) {
  v1::Job queued;
  ASSERT_TRUE(Submit(Spec(), &queued).ok());
  grpc::ClientContext c1;
  v1::CancelJobRequest cancel;
  cancel.set_id(queued.id());
  v1::Job cancelled;
  ASSERT_TRUE(jobs_->CancelJob(&c1, cancel, &cancelled).ok());
  EXPECT_EQ(cancelled.state(), v1::CANCELLED);
  grpc::ClientContext c2;
  EXPECT_EQ(jobs_->CancelJob(&c2, cancel, &cancelled).error_code(),
            grpc::StatusCode::FAILED_PRECONDITION);

  Register("node-a", 1);
  v1::Job running;
  ASSERT_TRUE(Submit(Spec(), &running).ok());
  v1::PollAssignmentsResponse polled = Poll("node-a", kPatienceMs);
  ASSERT_EQ(polled.assignments_size(), 1);
  const int64_t epoch = polled.assignments(0).lease_epoch();
  v1::JobReport report;
  report.set_worker_id("node-a");
  report.set_job_id(running.id());
  report.set_lease_epoch(epoch);
  report.set_started(true);
  {
    grpc::ClientContext context;
    v1::ReportResponse response;
    AsWorker(&context, report.worker_id());
    ASSERT_TRUE(workers_->Report(&context, report, &response).ok());
  }
  grpc::ClientContext c3;
  cancel.set_id(running.id());
  ASSERT_TRUE(jobs_->CancelJob(&c3, cancel, &cancelled).ok());
  EXPECT_EQ(cancelled.state(), v1::RUNNING);  // until the agent stops it

  grpc::ClientContext c4;
  v1::HeartbeatRequest beat;
  beat.set_worker_id("node-a");
  v1::RunningJob* r = beat.add_running();
  r->set_job_id(running.id());
  r->set_lease_epoch(epoch);
  v1::HeartbeatResponse beat_response;
  AsWorker(&c4, beat.worker_id());
  ASSERT_TRUE(workers_->Heartbeat(&c4, beat, &beat_response).ok());
  ASSERT_EQ(beat_response.cancel_job_ids_size(), 1);
  EXPECT_EQ(beat_response.cancel_job_ids(0), running.id());
  {
    grpc::ClientContext context;
    v1::ReportResponse response;
    report.set_started(false);
    AsWorker(&context, report.worker_id());
    ASSERT_TRUE(workers_->Report(&context, report, &response).ok());
    EXPECT_TRUE(response.cancel());
  }
  v1::CompleteRequest done;
  done.set_worker_id("node-a");
  done.set_job_id(running.id());
  done.set_lease_epoch(epoch);
  done.set_failure_kind("signal");
  done.set_signal(15);
  ASSERT_TRUE(Complete(done).ok());
  EXPECT_EQ(GetJob(running.id()).state(), v1::CANCELLED);

  grpc::ClientContext c5;
  v1::HeartbeatRequest stranger;
  stranger.set_worker_id("node-z");
  AsWorker(&c5, stranger.worker_id());
  ASSERT_TRUE(workers_->Heartbeat(&c5, stranger, &beat_response).ok());
  EXPECT_TRUE(beat_response.reregister());
}

// A full disk under fujid's database (a tmpfs the test mounts, as root): submits fail UNAVAILABLE
// with the reason, Health answers NOT_SERVING until a write commits again, and every acknowledged
// job is kept.
TEST_F(FujidServerTest, AFullDiskMakesSubmitsUnavailableAndHealthNotServing) {
  if (::geteuid() != 0) GTEST_SKIP() << "mounting a tmpfs needs root";
  StopServer();  // started by the fixture: this one runs on the small disk, with a user of its own
  user_token_.clear();
  if (::mount("tmpfs", dir_.c_str(), "tmpfs", 0, "size=6m,mode=0700") != 0) GTEST_SKIP() << "no tmpfs here";
  struct Unmount {
    std::string dir;
    ~Unmount() { ::umount2(dir.c_str(), MNT_DETACH); }
  } unmount{dir_};
  ASSERT_EQ(::mkdir((dir_ + "/model").c_str(), 0700), 0);
  std::ofstream(dir_ + "/model/config.json") << "{}\n";
  StartServer();
  auto health = [&] {
    grpc::ClientContext context;
    v1::HealthResponse response;
    grpc::Status status = jobs_->Health(&context, v1::HealthRequest(), &response);
    EXPECT_TRUE(status.ok()) << status.error_message();
    return response;
  };
  EXPECT_EQ(health().status(), "SERVING");
  std::vector<int64_t> acknowledged;
  const std::string spec = Spec({{"prompt", std::string(64 << 10, 'p')}});
  {
    std::ofstream ballast(dir_ + "/ballast", std::ios::binary);
    const std::string block(64 << 10, 'x');
    while (ballast.write(block.data(), block.size())) {
    }
  }
  grpc::Status full;
  for (int i = 0; i < 100 && full.ok(); ++i) {
    v1::Job job;
    full = Submit(spec, &job);
    if (full.ok()) acknowledged.push_back(job.id());
  }
  EXPECT_EQ(full.error_code(), grpc::StatusCode::UNAVAILABLE) << full.error_message();
  EXPECT_EQ(full.error_message(), "fujid cannot write its database: the database's disk is full; try again once it is cleared");
  v1::HealthResponse sick = health();
  EXPECT_EQ(sick.status(), "NOT_SERVING");
  EXPECT_EQ(sick.reason(), "the database's disk is full");

  ASSERT_EQ(::unlink((dir_ + "/ballast").c_str()), 0);
  v1::Job after;
  ASSERT_TRUE(Submit(spec, &after).ok());
  acknowledged.push_back(after.id());
  EXPECT_EQ(health().status(), "SERVING");
  for (int64_t id : acknowledged) EXPECT_EQ(GetJob(id).id(), id);
}

TEST_F(FujidServerTest, RefusesAtSubmitWhatNoAgentCouldEverHold) {
  v1::Job waits;
  EXPECT_TRUE(Submit(Spec({{"device", "cuda"}}), &waits).ok());  // no agent yet: it waits
  Register("node-a", 2, "cpu");
  grpc::Status status = Submit(Spec({{"device", "cuda:0"}}), nullptr);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_THAT(status.error_message(), HasSubstr("cuda"));
  EXPECT_TRUE(Submit(Spec({{"device", "cpu"}}), nullptr).ok());
}

TEST_F(FujidServerTest, FailedAttemptCarriesItsReasonAndBadInputIsNotRetried) {
  Register("node-a", 1);
  v1::Job job;
  ASSERT_TRUE(Submit(Spec(), &job).ok());
  v1::PollAssignmentsResponse first = Poll("node-a", kPatienceMs);
  ASSERT_EQ(first.assignments_size(), 1);
  v1::CompleteRequest failed;
  failed.set_worker_id("node-a");
  failed.set_job_id(job.id());
  failed.set_lease_epoch(first.assignments(0).lease_epoch());
  failed.set_failure_kind("cuda_oom");
  failed.set_message("CUDA out of memory. Tried to allocate 2.00 GiB");
  ASSERT_TRUE(Complete(failed).ok());
  EXPECT_EQ(GetJob(job.id()).attempts(), 1);
  // The next pass may have placed it again already: the retry's reason is in its events.
  auto events = store_->Events(job.id());
  ASSERT_TRUE(events.ok());
  bool retry_explained = false;
  for (const store::JobEvent& e : *events) {
    retry_explained |= e.to == store::JobState::kRetrying &&
                       e.message.find("cuda_oom: CUDA out of memory") != std::string::npos &&
                       e.message.find("requeued for attempt 2 of 3") != std::string::npos;
  }
  EXPECT_TRUE(retry_explained);

  v1::PollAssignmentsResponse again = Poll("node-a", kPatienceMs);
  ASSERT_EQ(again.assignments_size(), 1);
  EXPECT_EQ(again.assignments(0).attempt(), 1);
  ASSERT_TRUE(Complete(failed).ok());  // attempt 0 again: stale, ignored
  EXPECT_EQ(GetJob(job.id()).attempts(), 1);
  failed.set_attempt(1);
  failed.set_lease_epoch(again.assignments(0).lease_epoch());
  failed.set_failure_kind("bad_input");
  failed.set_message("prompt is longer than the model's 2048 positions");
  ASSERT_TRUE(Complete(failed).ok());
  v1::Job final_view = GetJob(job.id());
  EXPECT_EQ(final_view.state(), v1::FAILED);
  EXPECT_EQ(final_view.reason(), "bad_input: prompt is longer than the model's 2048 positions");
}

}  // namespace
}  // namespace fuji::testing
