// The Dispatcher on fake time: scheduling passes, long polls, lease expiry and retries, with no
// gRPC server and no real waiting.
#include <optional>

#include <gtest/gtest.h>

#include "daemon/server/dispatcher.h"
#include "fuji/v1/worker_contract.h"
#include "tests/unit/daemon_store_fixture.h"

namespace fuji::daemon {
namespace {

constexpr int64_t kLeaseMs = 1000;
const int64_t kRequeueMs = v1::RequeueAfterMs(kLeaseMs);  // the lease and the fencing margin

class DispatcherTest : public testing::StoreTest {
 protected:
  DispatcherTest() : StoreTest("daemon_dispatcher") {}
  void SetUp() override {
    StoreTest::SetUp();
    dispatcher_ = std::make_unique<Dispatcher>(store_.get(), &clock_, &lease_clock_, &hub_,
                                               DispatcherOptions{kLeaseMs, 30000});
  }
  void TearDown() override {
    dispatcher_.reset();
    StoreTest::TearDown();
  }

  void Register(const std::string& id) {
    v1::RegisterRequest request;
    request.set_worker_id(id);
    v1::Device* device = request.add_devices();
    device->set_index(0);
    device->set_kind("cpu");
    ASSERT_TRUE(dispatcher_->Register(request).ok());
  }
  int64_t Submit(int max_attempts) {
    store::JobRecord job;
    job.spec = R"({"model":"/m","prompt":"hi"})";
    job.max_attempts = max_attempts;
    auto id = store_->Submit(job);
    EXPECT_TRUE(id.ok());
    // As the Submit RPC does once the store committed: the job joins the dispatcher's queue.
    dispatcher_->Enqueued(*store_->Get(*id));
    return *id;
  }
  // A poll that does not wait; what it got.
  std::vector<v1::Assignment> PollNow(const std::string& id) {
    std::vector<v1::Assignment> got;
    dispatcher_->Poll(id, 0, [&](std::vector<v1::Assignment> a) { got = std::move(a); });
    return got;
  }

  // Time passing: the time of day and the steady clock move together.
  void Advance(int64_t ms) {
    clock_.AdvanceMs(ms);
    lease_clock_.AdvanceMs(ms);
  }
  v1::HeartbeatRequest Beat(const std::string& worker, int64_t job_id, int attempt, int64_t lease_epoch) {
    v1::HeartbeatRequest beat;
    beat.set_worker_id(worker);
    v1::RunningJob* running = beat.add_running();
    running->set_job_id(job_id);
    running->set_attempt(attempt);
    running->set_lease_epoch(lease_epoch);
    return beat;
  }

  store::FakeClock lease_clock_{5'000'000};  // a steady clock: not the time of day
  EventHub hub_;
  std::unique_ptr<Dispatcher> dispatcher_;
};

TEST_F(DispatcherTest, LongPollEndsWhenAJobIsPlacedOrItsWaitIsOver) {
  Register("node-a");
  std::optional<std::vector<v1::Assignment>> got;
  dispatcher_->Poll("node-a", 500, [&](std::vector<v1::Assignment> a) { got = std::move(a); });
  Advance(499);
  dispatcher_->ExpirePolls();
  EXPECT_FALSE(got.has_value());
  Advance(1);
  dispatcher_->ExpirePolls();
  ASSERT_TRUE(got.has_value());
  EXPECT_TRUE(got->empty());

  got.reset();
  dispatcher_->Poll("node-a", 500, [&](std::vector<v1::Assignment> a) { got = std::move(a); });
  int64_t id = Submit(1);
  dispatcher_->RunPass();
  ASSERT_TRUE(got.has_value());
  ASSERT_EQ(got->size(), 1u);
  EXPECT_EQ(got->front().job_id(), id);
}

TEST_F(DispatcherTest, ExpiredLeasesRequeueThenFailWithTheReason) {
  Register("node-a");
  int64_t id = Submit(2);
  dispatcher_->RunPass();
  ASSERT_EQ(PollNow("node-a").size(), 1u);
  Advance(kLeaseMs + 1);
  dispatcher_->CheckLeases();
  // Silent for a lease: LOST (nothing new is placed there), but its job waits for the fencing
  // margin, in which the agent stops the ranks itself.
  EXPECT_EQ((*store_->ListWorkers())[0].state, "LOST");
  EXPECT_EQ(store_->Get(id)->state, store::JobState::kAssigned);
  Advance(kRequeueMs - kLeaseMs - 2);
  dispatcher_->CheckLeases();
  EXPECT_EQ(store_->Get(id)->state, store::JobState::kAssigned);
  Advance(1);
  dispatcher_->CheckLeases();
  auto job = store_->Get(id);
  EXPECT_EQ(job->state, store::JobState::kQueued);
  EXPECT_EQ(job->attempts, 1);

  dispatcher_->RunPass();  // nobody is connected: it waits, and says why
  EXPECT_EQ(store_->Get(id)->state, store::JobState::kQueued);
  EXPECT_EQ(dispatcher_->WaitingReason(id, true), "waiting for an agent: none is connected");

  Register("node-a");
  dispatcher_->RunPass();
  auto again = PollNow("node-a");
  ASSERT_EQ(again.size(), 1u);
  EXPECT_EQ(again[0].attempt(), 1);
  Advance(kRequeueMs);
  dispatcher_->CheckLeases();
  job = store_->Get(id);
  EXPECT_EQ(job->state, store::JobState::kFailed);
  EXPECT_NE(job->reason.find("agent node-a lost (no heartbeat for 6 s)"), std::string::npos)
      << job->reason;
  EXPECT_NE(job->reason.find("retries exhausted (2 of 2)"), std::string::npos) << job->reason;
}

TEST_F(DispatcherTest, EveryQueuedJobSaysWhyItWaitsEvenPastThePassesReasons) {
  Register("node-a");
  std::vector<int64_t> ids;
  for (int i = 0; i < 1003; ++i) ids.push_back(Submit(1));
  dispatcher_->RunPass();  // the first job takes the device; 1,002 wait
  EXPECT_EQ(store_->Get(ids[0])->state, store::JobState::kAssigned);
  EXPECT_EQ(dispatcher_->WaitingReason(ids[0], true), "");
  EXPECT_NE(dispatcher_->WaitingReason(ids[1], true).find("waiting for 1 free cpu device"), std::string::npos)
      << dispatcher_->WaitingReason(ids[1], true);
  // The pass wrote reasons for the first 1,000 waiting jobs; the last two are counted on demand.
  EXPECT_EQ(dispatcher_->WaitingReason(ids[1002], true),
            "waiting behind 1001 queued jobs of higher or equal priority");
  EXPECT_EQ(dispatcher_->WaitingReason(ids[1002], false), "waiting behind more than 1000 queued jobs");
}

TEST_F(DispatcherTest, HeartbeatsKeepTheLease) {
  Register("node-a");
  int64_t id = Submit(1);
  dispatcher_->RunPass();
  ASSERT_EQ(PollNow("node-a").size(), 1u);
  for (int i = 0; i < 5; ++i) {
    Advance(600);
    auto response = dispatcher_->Heartbeat(Beat("node-a", id, 0, 1));
    ASSERT_TRUE(response.ok());
    EXPECT_EQ(response->cancel_job_ids_size(), 0);
    dispatcher_->CheckLeases();
  }
  EXPECT_EQ(store_->Get(id)->state, store::JobState::kAssigned);
}

// Leases run on the steady clock: a step of the time of day forward requeues nothing, and a step
// back does not keep a dead agent's jobs.
TEST_F(DispatcherTest, StepsOfTheTimeOfDayNeitherRequeueNorHideDeadAgents) {
  Register("node-a");
  int64_t id = Submit(2);
  dispatcher_->RunPass();
  ASSERT_EQ(PollNow("node-a").size(), 1u);
  clock_.AdvanceMs(3600 * 1000);  // an hour forward (an NTP step, a clock set by hand)
  dispatcher_->CheckLeases();
  EXPECT_EQ(store_->Get(id)->state, store::JobState::kAssigned);
  EXPECT_EQ((*store_->ListWorkers())[0].state, "ONLINE");

  clock_.AdvanceMs(-2 * 3600 * 1000);  // and an hour back; then the agent dies
  lease_clock_.AdvanceMs(kRequeueMs);
  dispatcher_->CheckLeases();
  EXPECT_EQ(store_->Get(id)->state, store::JobState::kQueued);
  EXPECT_EQ((*store_->ListWorkers())[0].state, "LOST");
}

// Each placement carries a fencing token (attempt, lease epoch); what an agent says with another
// token is not taken: a placement handed back unstarted and placed again keeps its attempt number
// but not its epoch.
TEST_F(DispatcherTest, OnlyTheCurrentFencingTokenIsHeard) {
  Register("node-a");
  int64_t id = Submit(2);
  dispatcher_->RunPass();
  auto first = PollNow("node-a");
  ASSERT_EQ(first.size(), 1u);
  EXPECT_EQ(first[0].attempt(), 0);
  EXPECT_EQ(first[0].lease_epoch(), 1);
  // The agent restarts without it: the unstarted placement goes back to the queue, attempt 0.
  Advance(kLeaseMs + 1);
  Register("node-a");
  dispatcher_->RunPass();
  auto second = PollNow("node-a");
  ASSERT_EQ(second.size(), 1u);
  EXPECT_EQ(second[0].attempt(), 0);
  EXPECT_EQ(second[0].lease_epoch(), 2);

  // The first placement's token: its report is not taken (the agent is told to stop it), its
  // running entry is cancelled, its completion changes nothing.
  v1::JobReport stale;
  stale.set_worker_id("node-a");
  stale.set_job_id(id);
  stale.set_attempt(0);
  stale.set_lease_epoch(1);
  stale.set_started(true);
  auto taken = dispatcher_->Report(stale);
  ASSERT_TRUE(taken.ok());
  EXPECT_TRUE(*taken);
  EXPECT_EQ(store_->Get(id)->state, store::JobState::kAssigned);
  auto beat = dispatcher_->Heartbeat(Beat("node-a", id, 0, 1));
  ASSERT_TRUE(beat.ok());
  ASSERT_EQ(beat->cancel_job_ids_size(), 1);
  v1::CompleteRequest done;
  done.set_worker_id("node-a");
  done.set_job_id(id);
  done.set_attempt(0);
  done.set_lease_epoch(1);
  done.set_succeeded(true);
  done.set_result_json("{}");
  EXPECT_TRUE(dispatcher_->Complete(done).ok());
  EXPECT_EQ(store_->Get(id)->state, store::JobState::kAssigned);

  // The current token is heard.
  stale.set_lease_epoch(2);
  taken = dispatcher_->Report(stale);
  ASSERT_TRUE(taken.ok());
  EXPECT_FALSE(*taken);
  EXPECT_EQ(store_->Get(id)->state, store::JobState::kRunning);
  done.set_lease_epoch(2);
  EXPECT_TRUE(dispatcher_->Complete(done).ok());
  EXPECT_EQ(store_->Get(id)->state, store::JobState::kSucceeded);
}

}  // namespace
}  // namespace fuji::daemon
