// A drain with requeue through the Dispatcher, on fake time: heartbeats ask the fine-tunes with a
// part on the drained agent (every member of a gang) to checkpoint and stop, and keep asking until
// the attempt ends, from the store (a restarted fujid asks too); the preempted completion queues
// the job again without using an attempt, its history says where it stopped, and the next pass
// places it elsewhere. Inference jobs and drains without requeue are left to finish.
#include <algorithm>
#include <map>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "daemon/server/dispatcher.h"
#include "tests/unit/daemon_store_fixture.h"

namespace fuji::daemon {
namespace {

using store::JobState;

constexpr int64_t kLeaseMs = 1000;

class DrainTest : public testing::StoreTest {
 protected:
  DrainTest() : StoreTest("daemon_drain") {}
  void SetUp() override {
    StoreTest::SetUp();
    StartDispatcher();
  }
  void TearDown() override {
    dispatcher_.reset();
    StoreTest::TearDown();
  }
  // A new Dispatcher over the same store, as a restarted fujid has.
  void StartDispatcher() {
    dispatcher_.reset();
    dispatcher_ = std::make_unique<Dispatcher>(store_.get(), &clock_, &clock_, &hub_, DispatcherOptions{kLeaseMs, 30000});
    ASSERT_TRUE(dispatcher_->Recover().ok());
  }

  // An agent with two CPU devices that takes part in gangs across agents.
  void Register(const std::string& id) {
    v1::RegisterRequest request;
    request.set_worker_id(id);
    request.set_advertise_addr("127.0.0.1");
    request.set_gang_port_lo(29500);
    request.set_gang_port_hi(29503);
    for (int i = 0; i < 2; ++i) {
      v1::Device* device = request.add_devices();
      device->set_index(i);
      device->set_kind("cpu");
    }
    ASSERT_TRUE(dispatcher_->Register(request).ok());
  }
  int64_t Submit(store::JobKind kind, int ranks, int max_attempts) {
    store::JobRecord job;
    job.kind = kind;
    job.spec = kind == store::JobKind::kFinetune
                   ? R"({"model":"/m","data":"/d","device":"cpu","ranks":)" + std::to_string(ranks) + "}"
                   : R"({"model":"/m","prompt":"hi"})";
    job.devices = ranks;
    job.max_attempts = max_attempts;
    auto id = store_->Submit(job);
    EXPECT_TRUE(id.ok());
    dispatcher_->Enqueued(*store_->Get(*id));
    return *id;
  }
  // One pass, then each agent's poll: what each got (agents that got nothing are left out).
  std::map<std::string, std::vector<v1::Assignment>> Place(const std::vector<std::string>& agents) {
    dispatcher_->RunPass();
    std::map<std::string, std::vector<v1::Assignment>> placed;
    for (const std::string& agent : agents) {
      dispatcher_->Poll(agent, 0, [&](std::vector<v1::Assignment> got) {
        if (!got.empty()) placed[agent] = std::move(got);
      });
    }
    return placed;
  }
  void Started(const std::string& worker, const v1::Assignment& a) {
    v1::JobReport report;
    report.set_worker_id(worker);
    report.set_job_id(a.job_id());
    report.set_attempt(a.attempt());
    report.set_lease_epoch(a.lease_epoch());
    report.set_started(true);
    ASSERT_TRUE(dispatcher_->Report(report).ok());
  }
  v1::HeartbeatResponse Beat(const std::string& worker, const std::vector<v1::Assignment>& running) {
    v1::HeartbeatRequest beat;
    beat.set_worker_id(worker);
    for (const v1::Assignment& a : running) {
      v1::RunningJob* r = beat.add_running();
      r->set_job_id(a.job_id());
      r->set_attempt(a.attempt());
      r->set_lease_epoch(a.lease_epoch());
    }
    auto response = dispatcher_->Heartbeat(beat);
    EXPECT_TRUE(response.ok()) << response.status().ToString();
    return response.ok() ? *response : v1::HeartbeatResponse();
  }
  static bool Preempts(const v1::HeartbeatResponse& response, int64_t job_id) {
    return std::count(response.preempt_job_ids().begin(), response.preempt_job_ids().end(), job_id) > 0;
  }
  // The completion of a run whose ranks stopped at a step boundary, checkpointed at `step` (0: none).
  Status CompletePreempted(const std::string& worker, const v1::Assignment& a, int64_t step) {
    v1::CompleteRequest request;
    request.set_worker_id(worker);
    request.set_job_id(a.job_id());
    request.set_attempt(a.attempt());
    request.set_lease_epoch(a.lease_epoch());
    request.set_succeeded(false);
    request.set_preempted(true);
    request.set_failure_kind("preempted");
    request.set_checkpoint_step(step);
    return dispatcher_->Complete(request);
  }
  std::string LastEvent(int64_t job_id) {
    auto events = store_->Events(job_id);
    EXPECT_TRUE(events.ok() && !events->empty());
    return events.ok() && !events->empty() ? events->back().message : "";
  }

  EventHub hub_;
  std::unique_ptr<Dispatcher> dispatcher_;
};

TEST_F(DrainTest, APreemptedFinetuneIsQueuedAgainWithoutUsingAnAttemptAndPlacedElsewhere) {
  Register("node-a");
  // One attempt only: a preemption counted as a failure would fail the job.
  const int64_t id = Submit(store::JobKind::kFinetune, 2, /*max_attempts=*/1);
  auto placed = Place({"node-a"});
  ASSERT_EQ(placed.count("node-a"), 1u);
  const v1::Assignment a = placed["node-a"].at(0);
  Started("node-a", a);
  Register("node-b");
  EXPECT_FALSE(Preempts(Beat("node-a", {a}), id)) << "not drained yet";

  ASSERT_TRUE(store_->SetDrained("node-a", true, /*requeue=*/true).ok());
  // Asked on every heartbeat until the attempt ends, and again by a restarted fujid.
  EXPECT_TRUE(Preempts(Beat("node-a", {a}), id));
  EXPECT_TRUE(Preempts(Beat("node-a", {a}), id));
  StartDispatcher();
  ASSERT_TRUE(Preempts(Beat("node-a", {a}), id));
  EXPECT_EQ(store_->Get(id)->state, JobState::kRunning);

  ASSERT_TRUE(CompletePreempted("node-a", a, 6).ok());
  auto job = store_->Get(id);
  EXPECT_EQ(job->state, JobState::kQueued);
  EXPECT_EQ(job->attempts, 0) << "a preemption uses no attempt";
  EXPECT_EQ(LastEvent(id), "requeued: agent node-a drained (checkpointed at step 6)");
  EXPECT_FALSE(Preempts(Beat("node-a", {}), id));

  // The retry: on node-b (node-a takes nothing new), as the same attempt with a new lease epoch.
  placed = Place({"node-a", "node-b"});
  ASSERT_EQ(placed.count("node-b"), 1u);
  EXPECT_EQ(placed.count("node-a"), 0u);
  const v1::Assignment b = placed["node-b"].at(0);
  EXPECT_EQ(b.attempt(), a.attempt());
  EXPECT_GT(b.lease_epoch(), a.lease_epoch());
  EXPECT_FALSE(Preempts(Beat("node-b", {b}), id));
  // The old run's completion, sent again, changes nothing now.
  (void)CompletePreempted("node-a", a, 6);
  EXPECT_EQ(store_->Get(id)->state, JobState::kAssigned);
}

TEST_F(DrainTest, WithoutACheckpointTheHistorySaysItStartsAgain) {
  Register("node-a");
  const int64_t id = Submit(store::JobKind::kFinetune, 2, 1);
  const v1::Assignment a = Place({"node-a"})["node-a"].at(0);
  Started("node-a", a);
  ASSERT_TRUE(store_->SetDrained("node-a", true, true).ok());
  ASSERT_TRUE(CompletePreempted("node-a", a, 0).ok());
  EXPECT_EQ(store_->Get(id)->state, JobState::kQueued);
  EXPECT_EQ(LastEvent(id),
            "requeued: agent node-a drained (no checkpoint: it has no --save-to, so it starts again from the beginning)");
}

TEST_F(DrainTest, InferenceJobsAndDrainsWithoutRequeueRunToTheirEnd) {
  Register("node-a");
  const int64_t infer = Submit(store::JobKind::kInfer, 1, 1);
  const int64_t tune = Submit(store::JobKind::kFinetune, 1, 1);
  // Both fit on the agent's two devices.
  std::vector<v1::Assignment> running = Place({"node-a"})["node-a"];
  ASSERT_EQ(running.size(), 2u);

  ASSERT_TRUE(store_->SetDrained("node-a", true, /*requeue=*/false).ok());
  v1::HeartbeatResponse beat = Beat("node-a", running);
  EXPECT_TRUE(beat.preempt_job_ids().empty());

  ASSERT_TRUE(store_->SetDrained("node-a", true, /*requeue=*/true).ok());
  beat = Beat("node-a", running);
  EXPECT_FALSE(Preempts(beat, infer)) << "an inference job runs to its end";
  EXPECT_TRUE(Preempts(beat, tune));

  // Undrained: nobody is asked any more, and requeue is forgotten with the drain.
  ASSERT_TRUE(store_->SetDrained("node-a", false).ok());
  EXPECT_TRUE(Beat("node-a", running).preempt_job_ids().empty());
  EXPECT_TRUE(store_->RequeueDrainedWorkers()->empty());
  ASSERT_TRUE(store_->SetDrained("node-a", true).ok());
  EXPECT_TRUE(Beat("node-a", running).preempt_job_ids().empty()) << "a later drain without requeue";
}

TEST_F(DrainTest, EveryMemberOfAGangIsAskedAndRankZerosCompletionRequeues) {
  Register("node-a");
  Register("node-b");
  const int64_t id = Submit(store::JobKind::kFinetune, 4, 1);  // two ranks on each agent
  auto placed = Place({"node-a", "node-b"});
  ASSERT_EQ(placed.size(), 2u);
  const v1::Assignment a = placed["node-a"].at(0), b = placed["node-b"].at(0);
  const std::string zero = a.first_rank() == 0 ? "node-a" : "node-b";
  const std::string member = zero == "node-a" ? "node-b" : "node-a";
  const v1::Assignment& za = zero == "node-a" ? a : b;
  const v1::Assignment& ma = zero == "node-a" ? b : a;
  Started(zero, za);
  Started(member, ma);

  // The member's agent is drained: both agents' ranks are asked, so the whole gang stops.
  ASSERT_TRUE(store_->SetDrained(member, true, true).ok());
  EXPECT_TRUE(Preempts(Beat(zero, {za}), id));
  EXPECT_TRUE(Preempts(Beat(member, {ma}), id));
  // The member's completion ends its part only; rank 0's agent's queues the job.
  ASSERT_TRUE(CompletePreempted(member, ma, 4).ok());
  EXPECT_EQ(store_->Get(id)->state, JobState::kRunning);
  ASSERT_TRUE(CompletePreempted(zero, za, 4).ok());
  auto job = store_->Get(id);
  EXPECT_EQ(job->state, JobState::kQueued);
  EXPECT_EQ(job->attempts, 0);
  EXPECT_EQ(LastEvent(id), "requeued: agent " + member + " drained (checkpointed at step 4)");
}

TEST_F(DrainTest, ACancelAskedMeanwhileEndsThePreemptedJobCancelled) {
  Register("node-a");
  const int64_t id = Submit(store::JobKind::kFinetune, 2, 3);
  const v1::Assignment a = Place({"node-a"})["node-a"].at(0);
  Started("node-a", a);
  ASSERT_TRUE(store_->SetDrained("node-a", true, true).ok());
  ASSERT_TRUE(dispatcher_->Cancel(id).ok());
  ASSERT_TRUE(CompletePreempted("node-a", a, 2).ok());
  EXPECT_EQ(store_->Get(id)->state, JobState::kCancelled);
}

}  // namespace
}  // namespace fuji::daemon
