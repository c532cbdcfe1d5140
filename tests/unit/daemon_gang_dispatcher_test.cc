// The Dispatcher with a gang across agents (policy 8), on fake time: one pass hands every member
// agent its part, the members' reports and completions, and the attempt ending for all when one
// member is lost, fails, forgets it or is cancelled.
#include <algorithm>
#include <optional>

#include <gtest/gtest.h>

#include "daemon/server/dispatcher.h"
#include "daemon/server/grpc_status.h"
#include "fuji/v1/worker_contract.h"
#include "tests/unit/daemon_store_fixture.h"

namespace fuji::daemon {
namespace {

using store::JobState;

constexpr int64_t kLeaseMs = 1000;
const int64_t kRequeueMs = v1::RequeueAfterMs(kLeaseMs);

class GangDispatcherTest : public testing::StoreTest {
 protected:
  GangDispatcherTest() : StoreTest("daemon_gang_dispatcher") {}
  void SetUp() override {
    StoreTest::SetUp();
    dispatcher_ = std::make_unique<Dispatcher>(store_.get(), &clock_, &lease_clock_, &hub_,
                                               DispatcherOptions{kLeaseMs, 30000});
  }
  void TearDown() override {
    dispatcher_.reset();
    StoreTest::TearDown();
  }

  v1::RegisterRequest Registration(const std::string& id, const std::string& addr = "127.0.0.1") {
    v1::RegisterRequest request;
    request.set_worker_id(id);
    request.set_advertise_addr(addr);
    if (!addr.empty()) {
      request.set_gang_port_lo(29500);
      request.set_gang_port_hi(29503);
    }
    for (int i = 0; i < 2; ++i) {
      v1::Device* device = request.add_devices();
      device->set_index(i);
      device->set_kind("cpu");
    }
    return request;
  }
  void Register(const std::string& id, const std::string& addr = "127.0.0.1") {
    ASSERT_TRUE(dispatcher_->Register(Registration(id, addr)).ok());
  }
  int64_t SubmitFinetune(int ranks, int max_attempts = 1, int nodes = 0) {
    store::JobRecord job;
    job.kind = store::JobKind::kFinetune;
    job.spec = R"({"model":"/m","data":"/d","device":"cpu","ranks":)" + std::to_string(ranks) +
               R"(,"nodes":)" + std::to_string(nodes) + "}";
    job.devices = ranks;
    job.max_attempts = max_attempts;
    auto id = store_->Submit(job);
    EXPECT_TRUE(id.ok());
    dispatcher_->Enqueued(*store_->Get(*id));
    return *id;
  }
  std::vector<v1::Assignment> PollNow(const std::string& id) {
    std::vector<v1::Assignment> got;
    dispatcher_->Poll(id, 0, [&](std::vector<v1::Assignment> a) { got = std::move(a); });
    return got;
  }
  void Advance(int64_t ms) {
    clock_.AdvanceMs(ms);
    lease_clock_.AdvanceMs(ms);
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
  static bool Cancels(const v1::HeartbeatResponse& response, int64_t job_id) {
    return std::count(response.cancel_job_ids().begin(), response.cancel_job_ids().end(), job_id) > 0;
  }
  Status Complete(const std::string& worker, const v1::Assignment& a, bool succeeded) {
    v1::CompleteRequest request;
    request.set_worker_id(worker);
    request.set_job_id(a.job_id());
    request.set_attempt(a.attempt());
    request.set_lease_epoch(a.lease_epoch());
    request.set_succeeded(succeeded);
    if (succeeded) {
      request.set_result_json(R"({"from":")" + worker + R"("})");
    } else {
      request.set_failure_kind("exit_code");
      request.set_exit_code(1);
    }
    return dispatcher_->Complete(request);
  }
  // Places a 4-rank fine-tune on node-a and node-b; their assignments.
  std::pair<v1::Assignment, v1::Assignment> PlaceGang(int64_t id) {
    dispatcher_->RunPass();
    std::vector<v1::Assignment> a = PollNow("node-a"), b = PollNow("node-b");
    EXPECT_EQ(a.size(), 1u);
    EXPECT_EQ(b.size(), 1u);
    if (a.size() != 1 || b.size() != 1) return {};
    EXPECT_EQ(a[0].job_id(), id);
    return {a[0], b[0]};
  }

  store::FakeClock lease_clock_{5'000'000};
  EventHub hub_;
  std::unique_ptr<Dispatcher> dispatcher_;
};

TEST_F(GangDispatcherTest, OnePassHandsEveryMemberItsPart) {
  Register("node-a");
  Register("node-b");
  const int64_t id = SubmitFinetune(4);
  auto [a, b] = PlaceGang(id);
  EXPECT_EQ(a.world_size(), 4);
  EXPECT_EQ(b.world_size(), 4);
  EXPECT_EQ(a.first_rank(), 0);
  EXPECT_EQ(b.first_rank(), 2);
  EXPECT_EQ(a.device_indices_size(), 2);
  EXPECT_EQ(b.device_indices_size(), 2);
  EXPECT_EQ(a.rendezvous(), b.rendezvous());
  ASSERT_EQ(a.rendezvous().rfind("tcp:127.0.0.1:", 0), 0u) << a.rendezvous();
  const int port = std::stoi(a.rendezvous().substr(14));
  EXPECT_GE(port, 29500);
  EXPECT_LE(port, 29503);
  ASSERT_EQ(b.members_size(), 2);
  EXPECT_EQ(b.members(0).worker_id(), "node-a");
  EXPECT_EQ(b.members(0).ranks(), 2);
  EXPECT_EQ(b.members(1).worker_id(), "node-b");
  EXPECT_EQ(b.members(1).first_rank(), 2);
  EXPECT_EQ(b.members(1).advertise_addr(), "127.0.0.1");
  EXPECT_EQ(a.lease_epoch(), b.lease_epoch());

  auto job = store_->Get(id);
  EXPECT_EQ(job->state, JobState::kAssigned);
  EXPECT_EQ(job->worker_id, "node-a");
  const v1::Job proto = JobToProto(*job);
  ASSERT_EQ(proto.gang_size(), 2);
  EXPECT_EQ(proto.gang(1).worker_id(), "node-b");
  // Every member's devices are held: the next pass sees both agents busy.
  auto agents = dispatcher_->CurrentAgents();
  ASSERT_TRUE(agents.ok());
  for (const sched::AgentView& agent : *agents) {
    for (const sched::DeviceView& device : agent.devices) EXPECT_EQ(device.jobs, (std::vector<int64_t>{id}));
  }

  // Reports from every member; the first "started" makes it RUNNING.
  v1::JobReport started;
  started.set_worker_id("node-b");
  started.set_job_id(id);
  started.set_attempt(b.attempt());
  started.set_lease_epoch(b.lease_epoch());
  started.set_started(true);
  auto report = dispatcher_->Report(started);
  ASSERT_TRUE(report.ok());
  EXPECT_FALSE(*report);
  EXPECT_EQ(store_->Get(id)->state, JobState::kRunning);
  // Both members heartbeat it: nothing is cancelled, both leases live on.
  for (int i = 0; i < 3; ++i) {
    Advance(kLeaseMs / 2);
    EXPECT_FALSE(Cancels(Beat("node-a", {a}), id));
    EXPECT_FALSE(Cancels(Beat("node-b", {b}), id));
    dispatcher_->CheckLeases();
  }
  // node-b's success ends its part only; rank 0's ends the job with its result.
  ASSERT_TRUE(Complete("node-b", b, true).ok());
  EXPECT_EQ(store_->Get(id)->state, JobState::kRunning);
  EXPECT_EQ(store_->ActiveGangMembers()->size(), 1u);
  ASSERT_TRUE(Complete("node-a", a, true).ok());
  EXPECT_EQ(store_->Get(id)->state, JobState::kSucceeded);
  auto results = store_->Results(id);
  ASSERT_EQ(results->size(), 1u);
  EXPECT_EQ((*results)[0].result, R"({"from":"node-a"})");
  EXPECT_TRUE(store_->ActiveGangMembers()->empty());
}

TEST_F(GangDispatcherTest, AMemberLostEndsTheAttemptForAllAndTheRetryTakesAnotherPort) {
  Register("node-a");
  Register("node-b");
  const int64_t id = SubmitFinetune(4, /*max_attempts=*/2);
  auto [a, b] = PlaceGang(id);
  // node-b goes silent; node-a heartbeats on.
  for (int64_t t = 0; t < kRequeueMs; t += kLeaseMs / 2) {
    Advance(kLeaseMs / 2);
    Beat("node-a", {a});
    dispatcher_->CheckLeases();
  }
  auto job = store_->Get(id);
  EXPECT_EQ(job->state, JobState::kQueued);
  EXPECT_EQ(job->attempts, 1);
  EXPECT_NE(job->reason.find("agent node-b lost"), std::string::npos) << job->reason;
  // node-a is told to stop its part.
  EXPECT_TRUE(Cancels(Beat("node-a", {a}), id));
  // node-b comes back: the retry is a gang again, on another port.
  Register("node-b");
  auto [a2, b2] = PlaceGang(id);
  EXPECT_EQ(a2.attempt(), 1);
  EXPECT_NE(a2.rendezvous(), a.rendezvous());
  EXPECT_EQ(a2.lease_epoch(), a.lease_epoch() + 1);
  // A report of the old attempt is stale.
  v1::JobReport old;
  old.set_worker_id("node-b");
  old.set_job_id(id);
  old.set_attempt(b.attempt());
  old.set_lease_epoch(b.lease_epoch());
  EXPECT_TRUE(*dispatcher_->Report(old));
}

TEST_F(GangDispatcherTest, AMemberFailureOrForgettingEndsTheAttemptForAll) {
  Register("node-a");
  Register("node-b");
  const int64_t id = SubmitFinetune(4, /*max_attempts=*/3);
  auto [a, b] = PlaceGang(id);
  ASSERT_TRUE(Complete("node-b", b, false).ok());
  auto job = store_->Get(id);
  EXPECT_EQ(job->state, JobState::kQueued);
  EXPECT_NE(job->reason.find("exit code 1"), std::string::npos) << job->reason;
  EXPECT_TRUE(Cancels(Beat("node-a", {a}), id));
  // The retry waits until node-b, whose part failed, has been heard from since: an agent that
  // died a moment ago still looks connected, and a gang placed on it could not form.
  dispatcher_->RunPass();
  EXPECT_TRUE(PollNow("node-a").empty());
  EXPECT_NE(dispatcher_->WaitingReason(id, false).find("node-b has been heard from"), std::string::npos)
      << dispatcher_->WaitingReason(id, false);
  Advance(1);
  Beat("node-b", {});
  // Placed again; node-b registers again (restarted) without it: over for node-a too.
  auto [a2, b2] = PlaceGang(id);
  Advance(kLeaseMs + 1);  // past the hand-out's grace
  Beat("node-a", {a2});
  Register("node-b");
  job = store_->Get(id);
  EXPECT_EQ(job->state, JobState::kQueued);  // never started: back to the queue
  EXPECT_TRUE(Cancels(Beat("node-a", {a2}), id));
}

TEST_F(GangDispatcherTest, ARetryWaitsForASilentMemberUntilItIsLostOrTwoLeasesPass) {
  Register("node-a");
  Register("node-b");
  Register("node-c");
  const int64_t id = SubmitFinetune(4, /*max_attempts=*/3, /*nodes=*/2);
  dispatcher_->RunPass();
  std::vector<v1::Assignment> parts;
  std::vector<std::string> members;
  for (const char* w : {"node-a", "node-b", "node-c"}) {
    for (auto& a : PollNow(w)) {
      parts.push_back(a);
      members.push_back(w);
    }
  }
  ASSERT_EQ(parts.size(), 2u);
  // One member fails at once (its peer was killed); the killed one says nothing more.
  ASSERT_TRUE(Complete(members[0], parts[0], false).ok());
  EXPECT_EQ(store_->Get(id)->state, JobState::kQueued);
  Advance(1);
  Beat(members[0], {});
  for (const char* w : {"node-a", "node-b", "node-c"}) {
    if (w != members[1]) Beat(w, {});
  }
  dispatcher_->RunPass();
  for (const char* w : {"node-a", "node-b", "node-c"}) EXPECT_TRUE(PollNow(w).empty()) << w;
  // Two leases later it is placed even so (by then a dead agent's lease has expired).
  Advance(2 * kLeaseMs);
  for (const char* w : {"node-a", "node-b", "node-c"}) {
    if (w != members[1]) Beat(w, {});
  }
  dispatcher_->RunPass();
  size_t placed = 0;
  for (const char* w : {"node-a", "node-b", "node-c"}) placed += PollNow(w).size();
  EXPECT_EQ(placed, 2u);
}

TEST_F(GangDispatcherTest, CancelReachesEveryMember) {
  Register("node-a");
  Register("node-b");
  const int64_t id = SubmitFinetune(4);
  auto [a, b] = PlaceGang(id);
  auto cancelled = dispatcher_->Cancel(id);
  ASSERT_TRUE(cancelled.ok());
  EXPECT_TRUE(Cancels(Beat("node-a", {a}), id));
  EXPECT_TRUE(Cancels(Beat("node-b", {b}), id));
}

TEST_F(GangDispatcherTest, AgentsWithoutAnAdvertiseAddressTakeNoPart) {
  Register("node-a");
  Register("node-b", "");
  const int64_t id = SubmitFinetune(4);
  dispatcher_->RunPass();
  EXPECT_TRUE(PollNow("node-a").empty());
  EXPECT_EQ(store_->Get(id)->state, JobState::kQueued);
  EXPECT_EQ(dispatcher_->WaitingReason(id, true),
            "waiting for 4 cpu devices across agents; ranks each agent can take now: node-a: 2 of 2, node-b has no "
            "advertise address");
  // A bad address or port range is refused at registration.
  v1::RegisterRequest bad = Registration("node-c", "a b");
  EXPECT_EQ(dispatcher_->Register(bad).status().code(), StatusCode::kInvalidArgument);
  bad = Registration("node-c");
  bad.set_gang_port_hi(10);
  EXPECT_EQ(dispatcher_->Register(bad).status().code(), StatusCode::kInvalidArgument);
}

TEST_F(GangDispatcherTest, ARestartedFujidKeepsTheGang) {
  Register("node-a");
  Register("node-b");
  const int64_t id = SubmitFinetune(4);
  auto [a, b] = PlaceGang(id);
  dispatcher_ = std::make_unique<Dispatcher>(store_.get(), &clock_, &lease_clock_, &hub_,
                                             DispatcherOptions{kLeaseMs, 30000});
  ASSERT_TRUE(dispatcher_->Recover().ok());
  // Before the agents register again, the store says where they are: a 4-rank fine-tune is
  // satisfiable across them.
  sched::JobRequest four;
  four.devices = 4;
  four.may_span = true;
  EXPECT_TRUE(dispatcher_->CheckSatisfiable(four).ok());
  // Both agents re-register listing their parts: nothing is stopped.
  v1::RegisterRequest again_a = Registration("node-a"), again_b = Registration("node-b");
  for (const auto& [request, assignment] : {std::pair{&again_a, &a}, std::pair{&again_b, &b}}) {
    v1::RunningJob* running = request->add_running();
    running->set_job_id(id);
    running->set_attempt(assignment->attempt());
    running->set_lease_epoch(assignment->lease_epoch());
  }
  auto stop_a = dispatcher_->Register(again_a);
  auto stop_b = dispatcher_->Register(again_b);
  ASSERT_TRUE(stop_a.ok() && stop_b.ok());
  EXPECT_TRUE(stop_a->empty());
  EXPECT_TRUE(stop_b->empty());
  EXPECT_EQ(store_->Get(id)->state, JobState::kAssigned);
  // Another gang goes on another port, and node-b's devices count as held.
  auto agents = dispatcher_->CurrentAgents();
  ASSERT_TRUE(agents.ok());
  EXPECT_EQ((*agents)[1].devices[0].jobs, (std::vector<int64_t>{id}));
  // node-a goes silent: the attempt ends, node-b is told.
  for (int64_t t = 0; t < v1::RecoveredLeaseMs(kLeaseMs) + kRequeueMs; t += kLeaseMs / 2) {
    Advance(kLeaseMs / 2);
    Beat("node-b", {b});
    dispatcher_->CheckLeases();
  }
  EXPECT_EQ(store_->Get(id)->state, JobState::kFailed);
  EXPECT_TRUE(Cancels(Beat("node-b", {b}), id));
}

}  // namespace
}  // namespace fuji::daemon

namespace fuji::daemon {
namespace {

TEST_F(GangDispatcherTest, AMemberWhosePartSucceededMayGoSilent) {
  Register("node-a");
  Register("node-b");
  const int64_t id = SubmitFinetune(4);
  auto [a, b] = PlaceGang(id);
  ASSERT_TRUE(Complete("node-b", b, true).ok());
  // node-b goes quiet after its part; rank 0's agent runs on and heartbeats.
  for (int64_t t = 0; t < 2 * kRequeueMs; t += kLeaseMs / 2) {
    Advance(kLeaseMs / 2);
    EXPECT_FALSE(Cancels(Beat("node-a", {a}), id));
    dispatcher_->CheckLeases();
  }
  EXPECT_EQ(store_->Get(id)->state, JobState::kAssigned);
  ASSERT_TRUE(Complete("node-a", a, true).ok());
  EXPECT_EQ(store_->Get(id)->state, JobState::kSucceeded);
}

}  // namespace
}  // namespace fuji::daemon
