// ReportIngest with a real store and a recording lifecycle: reports of a run that is not current
// are refused; a report's logs, losses and progress are stored and kept; each way a Complete ends
// an attempt asks the lifecycle for the matching move.
#include <set>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "daemon/server/report_ingest.h"
#include "tests/unit/daemon_store_fixture.h"

namespace fuji::daemon {
namespace {

using store::JobState;

// Records what ingestion asks; every move succeeds.
class RecordingLifecycle : public ReportIngest::Lifecycle {
 public:
  bool CancelRequested(int64_t job_id) const override { return cancel_requested.count(job_id) > 0; }
  bool Move(int64_t job_id, JobState from, JobState to, const std::string& reason) override {
    calls.push_back("move " + std::to_string(job_id) + " " + store::JobStateName(from) + "->" +
                    store::JobStateName(to) + (reason.empty() ? "" : " " + reason));
    return true;
  }
  void Ended(int64_t job_id) override { calls.push_back("ended " + std::to_string(job_id)); }
  void Abandoned(const store::JobRecord& job, const std::string& cause) override {
    calls.push_back("abandoned " + std::to_string(job.id) + " " + cause);
  }
  void EndAttempt(const store::JobRecord& job, const std::string& cause, bool retryable) override {
    calls.push_back("end " + std::to_string(job.id) + " " + cause +
                    (retryable ? " (retryable)" : " (final)"));
  }
  void Preempted(const store::JobRecord& job, const std::string& cause) override {
    calls.push_back("preempted " + std::to_string(job.id) + " " + cause);
  }

  std::set<int64_t> cancel_requested;
  std::vector<std::string> calls;
};

class ReportIngestTest : public testing::StoreTest {
 protected:
  ReportIngestTest() : StoreTest("daemon_report_ingest") {}
  // A job ASSIGNED to node-a, attempt 0, its first placement (lease epoch 1).
  void SetUp() override {
    StoreTest::SetUp();
    store::WorkerRecord worker;
    worker.id = "node-a";
    worker.devices.push_back({0, "cpu", 16000, "cpu", std::nullopt});
    ASSERT_TRUE(store_->RegisterWorker(worker).ok());
    store::JobRecord job;
    job.spec = R"({"model":"/m","steps":40})";
    auto id = store_->Submit(job);
    ASSERT_TRUE(id.ok());
    job_id_ = *id;
    ASSERT_TRUE(store_->Assign(job_id_, "node-a", {0}, clock_.NowMs() + 1000).ok());
    ingest_ = std::make_unique<ReportIngest>(store_.get(), &clock_, &hub_, &lifecycle_);
  }
  void TearDown() override {
    ingest_.reset();
    StoreTest::TearDown();
  }
  v1::CompleteRequest Completion(bool succeeded, const std::string& kind = "") {
    v1::CompleteRequest request;
    request.set_job_id(job_id_);
    request.set_worker_id("node-a");
    request.set_attempt(0);
    request.set_lease_epoch(1);
    request.set_succeeded(succeeded);
    request.set_failure_kind(kind);
    return request;
  }

  EventHub hub_;
  RecordingLifecycle lifecycle_;
  std::unique_ptr<ReportIngest> ingest_;
  int64_t job_id_ = 0;
};

TEST_F(ReportIngestTest, AReportOfAnotherRunIsRefusedAndStoresNothing) {
  v1::JobReport report;
  report.set_job_id(job_id_);
  report.set_worker_id("node-b");
  report.set_started(true);
  report.add_logs()->set_line("hello");
  Result<bool> stop = ingest_->Report(report);
  ASSERT_TRUE(stop.ok()) << stop.status().ToString();
  EXPECT_TRUE(*stop);
  EXPECT_TRUE(lifecycle_.calls.empty());
  EXPECT_TRUE(store_->Logs(job_id_, 0)->empty());
}

TEST_F(ReportIngestTest, AReportStartsTheJobAndKeepsItsLogsLossesAndProgress) {
  v1::JobReport report;
  report.set_job_id(job_id_);
  report.set_worker_id("node-a");
  report.set_lease_epoch(1);
  report.set_started(true);
  report.add_logs()->set_line("step 1");
  v1::LossPoint* point = report.add_losses();
  point->set_step(3);
  point->set_loss(2.5);
  report.add_losses()->set_step(-1);  // dropped, and the drop is logged
  Result<bool> stop = ingest_->Report(report);
  ASSERT_TRUE(stop.ok()) << stop.status().ToString();
  EXPECT_FALSE(*stop);
  EXPECT_EQ(lifecycle_.calls,
            (std::vector<std::string>{"move " + std::to_string(job_id_) + " ASSIGNED->RUNNING"}));
  auto logs = store_->Logs(job_id_, 0);
  ASSERT_EQ(logs->size(), 2u);
  EXPECT_EQ((*logs)[0].line, "step 1");
  EXPECT_NE((*logs)[1].line.find("dropped 1 of 2 reported loss points"), std::string::npos);
  const v1::Progress progress = ingest_->LatestProgress(job_id_);
  EXPECT_EQ(progress.phase(), "train");
  EXPECT_EQ(progress.done(), 3);
  EXPECT_EQ(progress.total(), 40);
  EXPECT_EQ(progress.loss(), 2.5);
  ingest_->Forget(job_id_);
  EXPECT_EQ(ingest_->LatestProgress(job_id_).phase(), "");

  lifecycle_.cancel_requested.insert(job_id_);
  report.set_started(false);
  report.clear_logs();
  report.clear_losses();
  EXPECT_TRUE(*ingest_->Report(report));  // the agent is told to stop it
}

TEST_F(ReportIngestTest, ASuccessIsSavedAndEndsTheAttempt) {
  v1::CompleteRequest request = Completion(true);
  request.set_result_json(R"({"text":"hi"})");
  ASSERT_TRUE(ingest_->Complete(request).ok());
  const std::string id = std::to_string(job_id_);
  // It finished before its first report: it did run.
  EXPECT_EQ(lifecycle_.calls,
            (std::vector<std::string>{"move " + id + " ASSIGNED->RUNNING",
                                      "move " + id + " RUNNING->SUCCEEDED", "ended " + id}));
  auto results = store_->Results(job_id_);
  ASSERT_EQ(results->size(), 1u);
}

TEST_F(ReportIngestTest, EachFailureEndsTheAttemptItsWay) {
  const std::string id = std::to_string(job_id_);
  ASSERT_TRUE(ingest_->Complete(Completion(false, "cancelled")).ok());
  ASSERT_TRUE(ingest_->Complete(Completion(false, "bad_input")).ok());
  v1::CompleteRequest exited = Completion(false, "exit_code");
  exited.set_exit_code(3);
  exited.set_message("boom");
  ASSERT_TRUE(ingest_->Complete(exited).ok());
  lifecycle_.cancel_requested.insert(job_id_);
  ASSERT_TRUE(ingest_->Complete(Completion(false, "cancelled")).ok());
  EXPECT_EQ(lifecycle_.calls,
            (std::vector<std::string>{
                "abandoned " + id + " agent node-a stopped it", "end " + id + " bad_input (final)",
                "end " + id + " exit code 3: boom (retryable)",
                "move " + id + " ASSIGNED->CANCELLED cancelled by request", "ended " + id}));
  // A completion of another run changes nothing.
  lifecycle_.calls.clear();
  v1::CompleteRequest stale = Completion(false, "signal");
  stale.set_attempt(5);
  ASSERT_TRUE(ingest_->Complete(stale).ok());
  EXPECT_TRUE(lifecycle_.calls.empty());
}

// A run stopped at a step boundary for a drain with requeue is no failure: the lifecycle queues it
// again, told who drained it and where it resumes.
TEST_F(ReportIngestTest, APreemptedRunIsHandedToTheLifecycleWithWhereItResumes) {
  store::JobRecord tune;
  tune.kind = store::JobKind::kFinetune;
  tune.spec = R"({"model":"/m","data":"/d","steps":40})";
  const int64_t tune_id = *store_->Submit(tune);
  ASSERT_TRUE(store_->Assign(tune_id, "node-a", {0}, clock_.NowMs() + 1000).ok());
  const std::string id = std::to_string(tune_id);
  ASSERT_TRUE(store_->SetDrained("node-a", true, /*requeue=*/true).ok());
  v1::CompleteRequest preempted = Completion(false, "preempted");
  preempted.set_job_id(tune_id);
  preempted.set_preempted(true);
  preempted.set_checkpoint_step(12);
  ASSERT_TRUE(ingest_->Complete(preempted).ok());
  // Undrained meanwhile: the agent that stopped it is named instead.
  ASSERT_TRUE(store_->SetDrained("node-a", false).ok());
  preempted.set_checkpoint_step(0);
  ASSERT_TRUE(ingest_->Complete(preempted).ok());
  EXPECT_EQ(lifecycle_.calls,
            (std::vector<std::string>{
                "preempted " + id + " requeued: agent node-a drained (checkpointed at step 12)",
                "preempted " + id + " requeued: agent node-a stopped it at a step boundary (no checkpoint: it has "
                                    "no --save-to, so it starts again from the beginning)"}));
}

}  // namespace
}  // namespace fuji::daemon
