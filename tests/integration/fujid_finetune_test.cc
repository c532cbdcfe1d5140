// Fine-tuning jobs through fujid: submit checks (spec errors, more ranks than any agent has),
// gang placement of every rank on one agent, losses reported by the agent stored once per
// (attempt, step) and read with GetLosses, progress on GetJob, and bad reports survived.
#include <cmath>
#include <limits>
#include <string>
#include <tuple>
#include <vector>

#include "daemon/store/job_store.h"
#include "tests/integration/fujid_test_util.h"

namespace fuji::testing {
namespace {

using ::testing::HasSubstr;

class FujidFinetuneTest : public FujidTest {
 protected:
  void SetUp() override {
    FujidTest::SetUp();
    std::ofstream(dir_ + "/corpus.txt") << "Mt. Fuji is the highest mountain in Japan.\n";
    StartServer();
  }

  std::string FinetuneSpec(nlohmann::json extra = nlohmann::json::object()) const {
    nlohmann::json spec = {{"model", dir_ + "/model"}, {"data", dir_ + "/corpus.txt"},
                           {"ranks", 2},               {"steps", 10}};
    spec.update(extra);
    return spec.dump();
  }

  v1::Job SubmitFinetune(nlohmann::json extra = nlohmann::json::object()) {
    v1::Job job;
    grpc::Status status = Submit(FinetuneSpec(extra), &job, "finetune");
    EXPECT_TRUE(status.ok()) << status.error_message();
    return job;
  }

  grpc::Status Report(const v1::JobReport& report) {
    grpc::ClientContext context;
    v1::ReportResponse response;
    AsWorker(&context, report.worker_id());
    return workers_->Report(&context, report, &response);
  }

  v1::JobReport LossReport(const v1::Assignment& a, const std::string& worker,
                           const std::vector<std::tuple<int64_t, std::string, double>>& points) {
    v1::JobReport report;
    report.set_worker_id(worker);
    report.set_job_id(a.job_id());
    report.set_attempt(a.attempt());
    report.set_lease_epoch(a.lease_epoch());
    report.set_started(true);
    for (const auto& [step, split, loss] : points) {
      v1::LossPoint* p = report.add_losses();
      p->set_step(step);
      p->set_split(split);
      p->set_loss(loss);
      if (split == "train") p->set_tokens_per_s(500.0 * step);
    }
    return report;
  }

  grpc::Status GetLosses(v1::GetLossesRequest request, v1::GetLossesResponse* response) {
    grpc::ClientContext context;
    return jobs_->GetLosses(&context, request, response);
  }

  // "step:split:attempt" of each point.
  static std::string Keys(const v1::GetLossesResponse& response) {
    std::string out;
    for (const v1::LossPoint& p : response.losses()) {
      if (!out.empty()) out += " ";
      out += std::to_string(p.step()) + ":" + p.split() + ":" + std::to_string(p.attempt());
    }
    return out;
  }
};

TEST_F(FujidFinetuneTest, AllRanksArePlacedOnOneAgentWithEnoughDevices) {
  Register("node-small", 2);
  Register("node-big", 4);
  v1::Job job = SubmitFinetune({{"ranks", 3}});
  EXPECT_EQ(job.kind(), "finetune");
  EXPECT_EQ(job.devices(), 3);
  EXPECT_EQ(job.device_kind(), "cpu");
  v1::PollAssignmentsResponse big = Poll("node-big", kPatienceMs);
  ASSERT_EQ(big.assignments_size(), 1);
  const v1::Assignment& a = big.assignments(0);
  EXPECT_EQ(a.job_id(), job.id());
  EXPECT_EQ(a.kind(), "finetune");
  EXPECT_EQ(a.device_indices_size(), 3);
  nlohmann::json spec = nlohmann::json::parse(a.spec_json());
  EXPECT_EQ(spec["ranks"], 3);
  EXPECT_EQ(spec["data"], dir_ + "/corpus.txt");
  EXPECT_EQ(Poll("node-small", 0).assignments_size(), 0);
  EXPECT_EQ(WaitForState(job.id(), v1::ASSIGNED).worker_id(), "node-big");

  // Two ranks fit both agents now (node-big has one device left): never split, best fit.
  v1::Job pair = SubmitFinetune({{"ranks", 2}});
  v1::PollAssignmentsResponse small = Poll("node-small", kPatienceMs);
  ASSERT_EQ(small.assignments_size(), 1);
  EXPECT_EQ(small.assignments(0).job_id(), pair.id());
  EXPECT_EQ(small.assignments(0).device_indices_size(), 2);

  // Four ranks fit only node-big, which has one device free: the job waits for all four there.
  v1::Job four = SubmitFinetune({{"ranks", 4}});
  EXPECT_EQ(WaitForState(four.id(), v1::QUEUED).state(), v1::QUEUED);
  EXPECT_EQ(Poll("node-big", 200).assignments_size(), 0);
}

TEST_F(FujidFinetuneTest, RefusesAtSubmitWhatCanBeRefusedWithoutTheData) {
  Register("node-a", 2);
  Register("node-b", 2);
  auto expect = [&](const std::string& spec, grpc::StatusCode code, const std::string& text) {
    grpc::Status status = Submit(spec, nullptr, "finetune");
    EXPECT_EQ(status.error_code(), code) << spec << ": " << status.error_message();
    EXPECT_THAT(status.error_message(), HasSubstr(text)) << spec;
  };
  const auto kInvalid = grpc::StatusCode::INVALID_ARGUMENT;
  expect(FinetuneSpec({{"zero", 4}}), kInvalid, "zero");
  expect(FinetuneSpec({{"zero", 4}}), kInvalid, "must be 0, 1, 2 or 3");
  expect(FinetuneSpec({{"micro_batch", 0}}), kInvalid, "micro_batch");
  expect(FinetuneSpec({{"micro_batch", 0}}), kInvalid, "at least 1");
  expect(FinetuneSpec({{"offload", "params"}, {"zero", 2}}), kInvalid, "params needs zero 3");
  expect(FinetuneSpec({{"ranks", 0}}), kInvalid, "ranks");
  expect(FinetuneSpec({{"model", dir_ + "/nowhere"}}), grpc::StatusCode::NOT_FOUND,
         "model path " + dir_ + "/nowhere not found");
  expect(FinetuneSpec({{"data", dir_ + "/missing.txt"}}), grpc::StatusCode::NOT_FOUND,
         "data path " + dir_ + "/missing.txt not found");
  // Two agents of 2 devices hold 4 together, but a gang never spans agents.
  expect(FinetuneSpec({{"ranks", 3}}), grpc::StatusCode::FAILED_PRECONDITION, "3");
  expect(FinetuneSpec({{"ranks", 3}}), grpc::StatusCode::FAILED_PRECONDITION, "has 2");
  expect(FinetuneSpec({{"device", "cuda"}}), grpc::StatusCode::FAILED_PRECONDITION, "cuda");
  v1::Job job;
  ASSERT_TRUE(Submit(FinetuneSpec({{"ranks", 2}, {"zero", 3}, {"offload", "params"}}), &job,
                     "finetune")
                  .ok());
  EXPECT_EQ(job.devices(), 2);
}

TEST_F(FujidFinetuneTest, LossesAreStoredOncePerAttemptAndStepAndPaged) {
  Register("node-a", 2);
  v1::Job job = SubmitFinetune();  // the daemon's default of 3 attempts
  v1::PollAssignmentsResponse polled = Poll("node-a", kPatienceMs);
  ASSERT_EQ(polled.assignments_size(), 1);
  v1::Assignment first = polled.assignments(0);

  ASSERT_TRUE(Report(LossReport(first, "node-a", {{1, "train", 4.0}, {2, "train", 3.8}})).ok());
  // The same points again (a report retried after a lost answer), then more, with an eval.
  ASSERT_TRUE(Report(LossReport(first, "node-a",
                                {{2, "train", 3.8}, {3, "train", 3.5}, {3, "eval", 3.6},
                                 {4, "train", 3.4}}))
                  .ok());
  v1::GetLossesRequest all;
  all.set_job_id(job.id());
  v1::GetLossesResponse losses;
  ASSERT_TRUE(GetLosses(all, &losses).ok());
  EXPECT_EQ(Keys(losses), "1:train:0 2:train:0 3:eval:0 3:train:0 4:train:0");
  EXPECT_FALSE(losses.more());
  EXPECT_DOUBLE_EQ(losses.losses(4).tokens_per_s(), 2000.0);
  EXPECT_GT(losses.losses(0).at_ms(), 0);  // stamped by the daemon

  // GetJob shows the progress the losses make and the last train loss.
  v1::Job running = GetJob(job.id());
  EXPECT_EQ(running.state(), v1::RUNNING);
  EXPECT_EQ(running.progress().phase(), "train");
  EXPECT_EQ(running.progress().done(), 4);
  EXPECT_EQ(running.progress().total(), 10);
  EXPECT_DOUBLE_EQ(running.progress().loss(), 3.4);
  EXPECT_DOUBLE_EQ(running.progress().tokens_per_s(), 2000.0);
  EXPECT_EQ(running.last_loss().step(), 4);

  // An explicit progress wins over the one made from losses.
  v1::JobReport progress;
  progress.set_worker_id("node-a");
  progress.set_job_id(job.id());
  progress.set_attempt(first.attempt());
  progress.set_lease_epoch(first.lease_epoch());
  v1::Progress* p = progress.add_progress();
  p->set_phase("train");
  p->set_done(5);
  p->set_total(10);
  p->set_loss(3.3);
  p->set_tokens_per_s(2500);
  p->set_corpus_tokens(123456);
  ASSERT_TRUE(Report(progress).ok());
  EXPECT_EQ(GetJob(job.id()).progress().done(), 5);
  EXPECT_EQ(GetJob(job.id()).progress().corpus_tokens(), 123456);
  EXPECT_DOUBLE_EQ(GetJob(job.id()).progress().loss(), 3.3);
  EXPECT_GT(GetJob(job.id()).progress().at_ms(), 0);
  // A progress with only done/total (as an agent may pass it on) takes the loss and rate of the
  // report's own losses.
  v1::JobReport bare = LossReport(first, "node-a", {{6, "train", 3.25}});
  v1::Progress* q = bare.add_progress();
  q->set_phase("train");
  q->set_done(6);
  q->set_total(10);
  ASSERT_TRUE(Report(bare).ok());
  EXPECT_DOUBLE_EQ(GetJob(job.id()).progress().loss(), 3.25);
  EXPECT_DOUBLE_EQ(GetJob(job.id()).progress().tokens_per_s(), 3000.0);
  EXPECT_EQ(GetJob(job.id()).progress().corpus_tokens(), 123456) << "the corpus size reported before is kept";

  // The attempt fails; the retry resumes from a checkpoint at step 2 and reports 3.. again.
  v1::CompleteRequest failed;
  failed.set_worker_id("node-a");
  failed.set_job_id(job.id());
  failed.set_attempt(first.attempt());
  failed.set_lease_epoch(first.lease_epoch());
  failed.set_failure_kind("exit_code");
  failed.set_exit_code(1);
  ASSERT_TRUE(Complete(failed).ok());
  polled = Poll("node-a", kPatienceMs);
  ASSERT_EQ(polled.assignments_size(), 1);
  v1::Assignment second = polled.assignments(0);
  EXPECT_EQ(second.attempt(), 1);
  EXPECT_EQ(GetJob(job.id()).progress().phase(), "");  // the new attempt reported nothing yet
  ASSERT_TRUE(Report(LossReport(second, "node-a",
                                {{3, "train", 3.45}, {4, "train", 3.3}, {5, "train", 3.2}}))
                  .ok());
  ASSERT_TRUE(GetLosses(all, &losses).ok());
  // Step 6 of attempt 0 stays: attempt 1 has not reached it yet.
  EXPECT_EQ(Keys(losses), "1:train:0 2:train:0 3:eval:0 3:train:1 4:train:1 5:train:1 6:train:0");
  EXPECT_DOUBLE_EQ(losses.losses(3).loss(), 3.45);
  EXPECT_EQ(store_->Losses(job.id())->losses.size(), 7u);

  // Pages of 2 end at step boundaries; the eval filter.
  v1::GetLossesRequest paged = all;
  paged.set_limit(2);
  std::string walked;
  for (int pages = 0; pages < 10; ++pages) {
    v1::GetLossesResponse page;
    ASSERT_TRUE(GetLosses(paged, &page).ok());
    walked += (walked.empty() ? "" : " ") + Keys(page);
    if (!page.more()) break;
    paged.set_after_step(page.losses(page.losses_size() - 1).step());
  }
  EXPECT_EQ(walked, "1:train:0 2:train:0 3:eval:0 3:train:1 4:train:1 5:train:1 6:train:0");
  v1::GetLossesRequest eval = all;
  eval.set_split("eval");
  ASSERT_TRUE(GetLosses(eval, &losses).ok());
  EXPECT_EQ(Keys(losses), "3:eval:0");
  eval.set_split("test");
  EXPECT_EQ(GetLosses(eval, &losses).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  v1::GetLossesRequest unknown;
  unknown.set_job_id(job.id() + 100);
  EXPECT_EQ(GetLosses(unknown, &losses).error_code(), grpc::StatusCode::NOT_FOUND);
}

TEST_F(FujidFinetuneTest, BadLossReportsAreDroppedAndTheDaemonKeepsServing) {
  Register("node-a", 2);
  v1::Job job = SubmitFinetune();
  v1::PollAssignmentsResponse polled = Poll("node-a", kPatienceMs);
  ASSERT_EQ(polled.assignments_size(), 1);
  const v1::Assignment& a = polled.assignments(0);
  const double nan = std::numeric_limits<double>::quiet_NaN();
  const double inf = std::numeric_limits<double>::infinity();
  v1::JobReport bad = LossReport(a, "node-a",
                                 {{1, "train", nan}, {-3, "train", 1.0}, {2, "test", 1.0},
                                  {3, "train", inf}, {4, "train", 2.5}});
  bad.mutable_losses(4)->set_tokens_per_s(-7);  // clamped to 0
  v1::LogLine* log = bad.add_logs();
  log->set_stream("rank0/stderr");
  log->set_line("step 4");
  ASSERT_TRUE(Report(bad).ok());
  v1::GetLossesRequest all;
  all.set_job_id(job.id());
  v1::GetLossesResponse losses;
  ASSERT_TRUE(GetLosses(all, &losses).ok());
  EXPECT_EQ(Keys(losses), "4:train:0");
  EXPECT_DOUBLE_EQ(losses.losses(0).tokens_per_s(), 0.0);
  auto logs = store_->Logs(job.id(), 0);
  ASSERT_TRUE(logs.ok());
  ASSERT_EQ(logs->size(), 2u);
  EXPECT_EQ((*logs)[0].line, "step 4");
  EXPECT_EQ((*logs)[1].stream, "fujid");
  EXPECT_THAT((*logs)[1].line, HasSubstr("dropped 4 of 5 reported loss points"));
  EXPECT_THAT((*logs)[1].line, HasSubstr("loss is not finite at step 1"));

  // A huge batch: only the last kMaxLossesPerCall points are kept.
  const int64_t total = static_cast<int64_t>(store::JobStore::kMaxLossesPerCall) + 5;
  v1::JobReport huge = LossReport(a, "node-a", {});
  for (int64_t step = 1; step <= total; ++step) {
    v1::LossPoint* p = huge.add_losses();
    p->set_step(step);
    p->set_split("train");
    p->set_loss(1.0);
  }
  ASSERT_TRUE(Report(huge).ok());
  auto stored = store_->Losses(job.id(), {"", std::nullopt, store::JobStore::kMaxLossPageSize});
  ASSERT_TRUE(stored.ok());
  EXPECT_EQ(stored->losses.front().step, 4);  // 1..5 dropped; step 4 came from the first report
  EXPECT_EQ(stored->losses[1].step, 6);
  EXPECT_THAT(store_->Logs(job.id(), 2)->back().line, HasSubstr("beyond the last"));

  // Still serving, and the job is still running.
  EXPECT_EQ(GetJob(job.id()).state(), v1::RUNNING);
  EXPECT_EQ(GetJob(job.id()).last_loss().step(), total);
}

}  // namespace
}  // namespace fuji::testing
