// The Dispatcher on fake time: scheduling passes, long polls, lease expiry and retries, with no
// gRPC server and no real waiting.
#include <optional>

#include <gtest/gtest.h>

#include "daemon/server/dispatcher.h"
#include "tests/unit/daemon_store_fixture.h"

namespace fuji::daemon {
namespace {

class DispatcherTest : public testing::StoreTest {
 protected:
  DispatcherTest() : StoreTest("daemon_dispatcher") {}
  void SetUp() override {
    StoreTest::SetUp();
    dispatcher_ = std::make_unique<Dispatcher>(store_.get(), &clock_, &hub_,
                                               DispatcherOptions{1000, 30000});
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

  EventHub hub_;
  std::unique_ptr<Dispatcher> dispatcher_;
};

TEST_F(DispatcherTest, LongPollEndsWhenAJobIsPlacedOrItsWaitIsOver) {
  Register("node-a");
  std::optional<std::vector<v1::Assignment>> got;
  dispatcher_->Poll("node-a", 500, [&](std::vector<v1::Assignment> a) { got = std::move(a); });
  clock_.AdvanceMs(499);
  dispatcher_->ExpirePolls();
  EXPECT_FALSE(got.has_value());
  clock_.AdvanceMs(1);
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
  clock_.AdvanceMs(999);
  dispatcher_->CheckLeases();
  EXPECT_EQ(store_->Get(id)->state, store::JobState::kAssigned);
  clock_.AdvanceMs(1);
  dispatcher_->CheckLeases();
  auto job = store_->Get(id);
  EXPECT_EQ(job->state, store::JobState::kQueued);
  EXPECT_EQ(job->attempts, 1);
  EXPECT_EQ((*store_->ListWorkers())[0].state, "LOST");

  dispatcher_->RunPass();  // nobody is connected: it waits, and says why
  EXPECT_EQ(store_->Get(id)->state, store::JobState::kQueued);
  EXPECT_EQ(dispatcher_->WaitingReason(id, true), "waiting for an agent: none is connected");

  Register("node-a");
  dispatcher_->RunPass();
  auto again = PollNow("node-a");
  ASSERT_EQ(again.size(), 1u);
  EXPECT_EQ(again[0].attempt(), 1);
  clock_.AdvanceMs(1000);
  dispatcher_->CheckLeases();
  job = store_->Get(id);
  EXPECT_EQ(job->state, store::JobState::kFailed);
  EXPECT_NE(job->reason.find("agent node-a lost (no heartbeat for 1 s)"), std::string::npos)
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
    clock_.AdvanceMs(600);
    v1::HeartbeatRequest beat;
    beat.set_worker_id("node-a");
    beat.add_running()->set_job_id(id);
    auto response = dispatcher_->Heartbeat(beat);
    ASSERT_TRUE(response.ok());
    EXPECT_EQ(response->cancel_job_ids_size(), 0);
    dispatcher_->CheckLeases();
  }
  EXPECT_EQ(store_->Get(id)->state, store::JobState::kAssigned);
}

}  // namespace
}  // namespace fuji::daemon
