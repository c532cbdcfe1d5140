// fujid under failure and load: lost agents (lease expiry), many concurrent submitters, and a
// daemon restart while a job runs. Lease expiry runs on a fake clock the test moves: a lease of
// seconds that no stall of this machine can expire early, and no test that sleeps it out.
#include <chrono>
#include <mutex>
#include <set>
#include <thread>
#include <vector>

#include "fuji/v1/worker_contract.h"
#include "tests/integration/fujid_test_util.h"

namespace fuji::testing {
namespace {

using ::testing::HasSubstr;

class FujidRecoveryTest : public FujidTest {
 protected:
  static constexpr int64_t kLeaseMs = 10000;

  // The server on fake time: leases expire only when the test moves the clock; the lease checks
  // run often in real time, so that one notices an expiry soon after.
  void StartOnFakeTime() {
    UseFakeClock();
    daemon::ServerOptions options = Options();
    options.lease_ttl_ms = kLeaseMs;
    options.lease_check_interval_ms = 20;
    StartServer(options);
  }

  // The agent's heartbeat, listing nothing; returns the jobs it is told to stop.
  std::vector<int64_t> Heartbeat(const std::string& worker_id) {
    grpc::ClientContext context;
    v1::HeartbeatRequest beat;
    beat.set_worker_id(worker_id);
    v1::HeartbeatResponse response;
    AsWorker(&context, beat.worker_id());
    grpc::Status status = workers_->Heartbeat(&context, beat, &response);
    EXPECT_TRUE(status.ok()) << status.error_message();
    return {response.cancel_job_ids().begin(), response.cancel_job_ids().end()};
  }
};

TEST_F(FujidRecoveryTest, LostAgentsJobIsRequeuedThenFailsWhenRetriesRunOut) {
  StartOnFakeTime();
  Register("node-a", 1);
  grpc::ClientContext context;
  v1::SubmitRequest request;
  request.set_kind("infer");
  request.set_spec_json(Spec());
  request.set_max_attempts(2);
  v1::SubmitResponse submitted;
  ASSERT_TRUE(jobs_->Submit(&context, request, &submitted).ok());
  const int64_t id = submitted.job().id();

  ASSERT_EQ(Poll("node-a", kPatienceMs).assignments_size(), 1);
  // A lease and the fencing margin pass without a heartbeat: the lease runs out and the job waits
  // for a live agent.
  fake_clock_.AdvanceMs(v1::RequeueAfterMs(kLeaseMs) + 1000);
  v1::Job requeued = WaitForState(id, v1::QUEUED);
  ASSERT_EQ(requeued.state(), v1::QUEUED);
  EXPECT_EQ(requeued.attempts(), 1);
  grpc::ClientContext c1;
  v1::ListWorkersResponse workers;
  ASSERT_TRUE(jobs_->ListWorkers(&c1, v1::ListWorkersRequest(), &workers).ok());
  ASSERT_EQ(workers.workers_size(), 1);
  EXPECT_EQ(workers.workers(0).state(), "LOST");

  Register("node-a", 1);  // the agent comes back
  v1::PollAssignmentsResponse again = Poll("node-a", kPatienceMs);
  ASSERT_EQ(again.assignments_size(), 1);
  EXPECT_EQ(again.assignments(0).attempt(), 1);
  fake_clock_.AdvanceMs(v1::RequeueAfterMs(kLeaseMs) + 1000);  // and goes silent again
  v1::Job failed = WaitForState(id, v1::FAILED);
  ASSERT_EQ(failed.state(), v1::FAILED);
  EXPECT_THAT(failed.reason(), HasSubstr("agent node-a lost (no heartbeat for 16 s)"));
  EXPECT_THAT(failed.reason(), HasSubstr("retries exhausted (2 of 2)"));
}

TEST_F(FujidRecoveryTest, HandOutTheAgentNeverListsIsRequeuedWithoutUsingAnAttempt) {
  StartOnFakeTime();
  Register("node-a", 1);
  v1::Job job;
  ASSERT_TRUE(Submit(Spec(), &job).ok());
  ASSERT_EQ(Poll("node-a", kPatienceMs).assignments_size(), 1);
  // The agent keeps beating, each beat well inside its lease, but never lists the job (say the
  // answer to its poll was lost). A hand-out younger than a lease may still be on its way.
  EXPECT_TRUE(Heartbeat("node-a").empty());
  fake_clock_.AdvanceMs(kLeaseMs * 6 / 10);
  EXPECT_TRUE(Heartbeat("node-a").empty());
  // Older than a lease and still not listed: the agent is told to stop it, and it is requeued.
  fake_clock_.AdvanceMs(kLeaseMs * 6 / 10);
  EXPECT_EQ(Heartbeat("node-a"), std::vector<int64_t>{job.id()});
  v1::PollAssignmentsResponse again = Poll("node-a", kPatienceMs);
  ASSERT_EQ(again.assignments_size(), 1);
  EXPECT_EQ(again.assignments(0).job_id(), job.id());
  EXPECT_EQ(again.assignments(0).attempt(), 0);
  EXPECT_EQ(GetJob(job.id()).attempts(), 0);
}

TEST_F(FujidRecoveryTest, RestartedDaemonGivesAgentsTimeToReconnectBeforeRequeueing) {
  StartOnFakeTime();
  Register("node-a", 1);
  v1::Job job;
  ASSERT_TRUE(Submit(Spec(), &job).ok());
  ASSERT_EQ(Poll("node-a", kPatienceMs).assignments_size(), 1);
  StopServer();
  StartOnFakeTime();  // same database: the running job's lease is recovered
  // A whole lease passes while the agent is still reconnecting (its gRPC backoff): the job stays
  // with it, for the agent cannot have sent a heartbeat to a daemon that was down.
  fake_clock_.AdvanceMs(v1::RequeueAfterMs(kLeaseMs) + v1::kAgentReconnectCeilingMs);
  std::this_thread::sleep_for(std::chrono::milliseconds(200));  // lease checks run every 20 ms
  EXPECT_EQ(GetJob(job.id()).state(), v1::ASSIGNED);
  EXPECT_EQ(GetJob(job.id()).attempts(), 0);
  // An agent that never came back loses the job once the recovered lease runs out.
  fake_clock_.AdvanceMs(v1::RecoveredLeaseMs(kLeaseMs) - v1::RequeueAfterMs(kLeaseMs));
  v1::Job requeued = WaitForState(job.id(), v1::QUEUED);
  EXPECT_EQ(requeued.state(), v1::QUEUED);
}

TEST_F(FujidRecoveryTest, ConcurrentSubmitsAreEachListedExactlyOnce) {
  StartServer();
  constexpr int kThreads = 16, kPerThread = 200;
  std::mutex mu;
  std::vector<int64_t> acknowledged;
  std::vector<std::thread> threads;
  const std::string spec = Spec();
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < kPerThread; ++i) {
        v1::Job job;
        grpc::Status status = Submit(spec, &job);
        if (!status.ok()) continue;
        std::lock_guard<std::mutex> lock(mu);
        acknowledged.push_back(job.id());
      }
    });
  }
  for (std::thread& t : threads) t.join();
  ASSERT_EQ(acknowledged.size(), size_t{kThreads * kPerThread});

  std::multiset<int64_t> listed;
  int64_t token = 0;
  do {
    grpc::ClientContext context;
    v1::ListJobsRequest request;
    request.set_limit(1000);
    request.set_page_token(token);
    v1::ListJobsResponse page;
    ASSERT_TRUE(jobs_->ListJobs(&context, request, &page).ok());
    for (const v1::Job& job : page.jobs()) listed.insert(job.id());
    token = page.next_page_token();
  } while (token != 0);
  EXPECT_EQ(listed.size(), acknowledged.size());
  for (int64_t id : acknowledged) EXPECT_EQ(listed.count(id), 1u) << id;
}

TEST_F(FujidRecoveryTest, ACancelOfARunningJobOutlivesARestart) {
  StartServer();
  Register("node-a", 1);
  v1::Job job;
  ASSERT_NO_FATAL_FAILURE(SubmitAndStart("node-a", &job));
  {
    grpc::ClientContext context;
    v1::CancelJobRequest cancel;
    cancel.set_id(job.id());
    v1::Job cancelled;
    ASSERT_TRUE(jobs_->CancelJob(&context, cancel, &cancelled).ok());
    EXPECT_EQ(cancelled.state(), v1::RUNNING);  // until the agent stops it
  }
  // fujid goes down before the agent heard of the cancel; the cancel is a row.
  StopServer();
  StartServer();
  auto row = store_->Get(job.id());
  ASSERT_TRUE(row.ok());
  EXPECT_GT(row->cancel_requested_at_ms, 0);
  Register("node-a", 1, "cpu", {{job.id(), 0}});
  grpc::ClientContext context;
  v1::HeartbeatRequest beat;
  beat.set_worker_id("node-a");
  beat.add_running()->set_job_id(job.id());
  beat.mutable_running(0)->set_lease_epoch(1);
  v1::HeartbeatResponse beat_response;
  AsWorker(&context, beat.worker_id());
  ASSERT_TRUE(workers_->Heartbeat(&context, beat, &beat_response).ok());
  ASSERT_EQ(beat_response.cancel_job_ids_size(), 1) << "the restarted fujid forgot the cancel";
  EXPECT_EQ(beat_response.cancel_job_ids(0), job.id());
  // The agent stops it; however the attempt ends, the job ends CANCELLED and never runs again.
  v1::CompleteRequest done;
  done.set_worker_id("node-a");
  done.set_job_id(job.id());
  done.set_lease_epoch(1);
  done.set_failure_kind("signal");
  done.set_signal(15);
  ASSERT_TRUE(Complete(done).ok());
  EXPECT_EQ(GetJob(job.id()).state(), v1::CANCELLED);
  EXPECT_EQ(Poll("node-a", 300).assignments_size(), 0);
}

TEST_F(FujidRecoveryTest, RunningJobContinuesAcrossADaemonRestartAndCompletesOnce) {
  StartServer();
  Register("node-a", 1);
  v1::Job job;
  ASSERT_NO_FATAL_FAILURE(SubmitAndStart("node-a", &job));

  StopServer();
  StartServer();
  v1::RegisterResponse registered = Register("node-a", 1, "cpu", {{job.id(), 0}});
  EXPECT_EQ(registered.stop_job_ids_size(), 0);
  EXPECT_GT(registered.lease_ttl_ms(), 0);
  EXPECT_EQ(GetJob(job.id()).state(), v1::RUNNING);
  EXPECT_EQ(Poll("node-a", 300).assignments_size(), 0);  // not handed out a second time

  v1::CompleteRequest done;
  done.set_worker_id("node-a");
  done.set_job_id(job.id());
  done.set_lease_epoch(job.lease_epoch());
  done.set_succeeded(true);
  done.set_result_json(R"({"text":"once"})");
  ASSERT_TRUE(Complete(done).ok());
  done.set_result_json(R"({"text":"twice"})");
  ASSERT_TRUE(Complete(done).ok());  // a duplicate: ignored
  EXPECT_EQ(GetJob(job.id()).state(), v1::SUCCEEDED);
  auto results = store_->Results(job.id());
  ASSERT_TRUE(results.ok());
  ASSERT_EQ(results->size(), 1u);
  EXPECT_EQ(results->front().result, R"({"text":"once"})");

  // An agent that reports a job the daemon no longer wants is told to stop it.
  registered = Register("node-a", 1, "cpu", {{job.id(), 0}});
  ASSERT_EQ(registered.stop_job_ids_size(), 1);
  EXPECT_EQ(registered.stop_job_ids(0), job.id());
}

}  // namespace
}  // namespace fuji::testing
