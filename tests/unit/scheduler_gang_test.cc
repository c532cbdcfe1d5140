// Policy 8: a fine-tune's gang of ranks across several agents, placed all or nothing in one pass.
#include <gtest/gtest.h>

#include <memory>

#include "daemon/scheduler/lease_table.h"
#include "daemon/scheduler/scheduler.h"

namespace fuji::sched {
namespace {

constexpr int64_t kNow = 1'000'000;

AgentView Agent(const std::string& worker_id, int devices, const std::string& addr = "127.0.0.1") {
  AgentView agent;
  agent.worker_id = worker_id;
  agent.device_kind = "cpu";
  agent.advertise_addr = addr;
  for (int i = 0; i < devices; ++i) agent.devices.push_back({i, 16384, 16384, {}, false});
  return agent;
}

JobRequest Finetune(int64_t id, int ranks, int nodes = 0) {
  JobRequest job;
  job.id = id;
  job.devices = ranks;
  job.device_kind = "cpu";
  job.may_span = true;
  job.nodes = nodes;
  return job;
}

JobRequest Job(int64_t id, int devices) {
  JobRequest job;
  job.id = id;
  job.devices = devices;
  job.device_kind = "cpu";
  return job;
}

std::shared_ptr<const MemoryPlans> Plans(int64_t device_mib, int64_t host_mib) {
  auto plans = std::make_shared<MemoryPlans>();
  plans->label = "tiny fine-tune";
  plans->options.push_back({device_mib, host_mib, "zero 0", 0});
  return plans;
}

void Hold(AgentView& agent, int64_t job_id, std::vector<int> indices) {
  for (int i : indices) agent.devices[static_cast<size_t>(i)].jobs.push_back(job_id);
}

TEST(SchedulerGangTest, FourRanksOnTwoTwoDeviceAgents) {
  PassResult result = Schedule({Finetune(1, 4)}, {Agent("node-a", 2), Agent("node-b", 2)}, {}, kNow);
  ASSERT_EQ(result.placements.size(), 1u);
  const Placement& p = result.placements[0];
  ASSERT_EQ(p.parts.size(), 2u);
  EXPECT_EQ(p.parts[0].worker_id, "node-a");
  EXPECT_EQ(p.parts[0].device_indices, (std::vector<int>{0, 1}));
  EXPECT_EQ(p.parts[0].first_rank, 0);
  EXPECT_EQ(p.parts[1].worker_id, "node-b");
  EXPECT_EQ(p.parts[1].device_indices, (std::vector<int>{0, 1}));
  EXPECT_EQ(p.parts[1].first_rank, 2);
  // Old readers see rank 0's part.
  EXPECT_EQ(p.worker_id, "node-a");
  EXPECT_EQ(p.device_indices, (std::vector<int>{0, 1}));
  EXPECT_TRUE(result.waiting_reasons.empty());
}

TEST(SchedulerGangTest, ThreeRanksTakeTheFewestAgentsAndTheBestFitForTheRest) {
  // 3 ranks: the 2-device agent, then the 1-device agent fits the remaining rank better than a
  // second 2-device one.
  PassResult result =
      Schedule({Finetune(1, 3)}, {Agent("node-a", 2), Agent("node-b", 2), Agent("node-c", 1)}, {}, kNow);
  ASSERT_EQ(result.placements.size(), 1u);
  ASSERT_EQ(result.placements[0].parts.size(), 2u);
  EXPECT_EQ(result.placements[0].parts[0].worker_id, "node-a");
  EXPECT_EQ(result.placements[0].parts[1].worker_id, "node-c");
  EXPECT_EQ(result.placements[0].parts[1].first_rank, 2);
}

TEST(SchedulerGangTest, NodesTwoSplitsEvenlyOnTwoLargeAgents) {
  PassResult result = Schedule({Finetune(1, 4, /*nodes=*/2)}, {Agent("node-a", 4), Agent("node-b", 4)}, {}, kNow);
  ASSERT_EQ(result.placements.size(), 1u);
  const Placement& p = result.placements[0];
  ASSERT_EQ(p.parts.size(), 2u);  // 2 + 2, not 4 + 0
  EXPECT_EQ(p.parts[0].device_indices, (std::vector<int>{0, 1}));
  EXPECT_EQ(p.parts[1].device_indices, (std::vector<int>{0, 1}));
  EXPECT_NE(p.parts[0].worker_id, p.parts[1].worker_id);
  // Without nodes, 4 ranks fit one agent: no gang.
  PassResult one = Schedule({Finetune(1, 4)}, {Agent("node-a", 4), Agent("node-b", 4)}, {}, kNow);
  ASSERT_EQ(one.placements.size(), 1u);
  EXPECT_TRUE(one.placements[0].parts.empty());
  EXPECT_EQ(one.placements[0].device_indices.size(), 4u);
}

TEST(SchedulerGangTest, AllOrNothing) {
  // node-b is busy: the gang cannot start, holds nothing, and node-a's devices stay free for a
  // later job in the same pass.
  AgentView b = Agent("node-b", 2);
  Hold(b, 99, {0, 1});
  PassResult result = Schedule({Finetune(1, 4), Job(2, 2)}, {Agent("node-a", 2), b}, {}, kNow);
  ASSERT_EQ(result.placements.size(), 1u);
  EXPECT_EQ(result.placements[0].job_id, 2);
  EXPECT_EQ(result.placements[0].worker_id, "node-a");
  ASSERT_TRUE(result.waiting_reasons.count(1));
  EXPECT_EQ(result.waiting_reasons.at(1),
            "waiting for 4 cpu devices across agents; ranks each agent can take now: node-a: 2 of 2, node-b: 0 of 2 "
            "(2 held)");
}

TEST(SchedulerGangTest, AgentsWithoutAnAdvertiseAddressAreNeverUsed) {
  PassResult result =
      Schedule({Finetune(1, 4)}, {Agent("node-a", 2), Agent("node-b", 2, ""), Agent("node-c", 2)}, {}, kNow);
  ASSERT_EQ(result.placements.size(), 1u);
  ASSERT_EQ(result.placements[0].parts.size(), 2u);
  EXPECT_EQ(result.placements[0].parts[0].worker_id, "node-a");
  EXPECT_EQ(result.placements[0].parts[1].worker_id, "node-c");

  PassResult none = Schedule({Finetune(1, 4)}, {Agent("node-a", 2), Agent("node-b", 2, "")}, {}, kNow);
  EXPECT_TRUE(none.placements.empty());
  EXPECT_EQ(none.waiting_reasons.at(1),
            "waiting for 4 cpu devices across agents; ranks each agent can take now: node-a: 2 of 2, node-b has no "
            "advertise address");
  // A job that is not allowed to span agents never gangs.
  JobRequest plain = Finetune(2, 4);
  plain.may_span = false;
  EXPECT_TRUE(Schedule({plain}, {Agent("node-a", 2), Agent("node-b", 2)}, {}, kNow).placements.empty());
}

TEST(SchedulerGangTest, EachAgentNeedsItsShareOfTheHostMemory) {
  // 4 ranks, 8000 MiB of host memory for all: 2 ranks need 4000 on their agent.
  JobRequest job = Finetune(1, 4);
  job.plans = Plans(0, 8000);
  AgentView a = Agent("node-a", 2), b = Agent("node-b", 2), c = Agent("node-c", 2);
  a.host_total_mib = b.host_total_mib = c.host_total_mib = 16000;
  a.host_free_mib = 4000;
  b.host_free_mib = 3999;  // one short
  c.host_free_mib = 4000;
  PassResult result = Schedule({job}, {a, b, c}, {}, kNow);
  ASSERT_EQ(result.placements.size(), 1u);
  ASSERT_EQ(result.placements[0].parts.size(), 2u);
  EXPECT_EQ(result.placements[0].parts[0].worker_id, "node-a");
  EXPECT_EQ(result.placements[0].parts[1].worker_id, "node-c");
  EXPECT_EQ(result.placements[0].option, 0);
  // 3 ranks: 2 on one agent need ceil(8000 * 2 / 3) = 5334, 1 needs 2667.
  job.devices = 3;
  a.host_free_mib = 5333;
  b.host_free_mib = 2667;
  c.host_free_mib = 5334;
  PassResult three = Schedule({job}, {a, b, c}, {}, kNow);
  ASSERT_EQ(three.placements.size(), 1u);
  ASSERT_EQ(three.placements[0].parts.size(), 2u);
  EXPECT_EQ(three.placements[0].parts[0].worker_id, "node-c");
  EXPECT_EQ(three.placements[0].parts[0].device_indices.size(), 2u);
  EXPECT_EQ(three.placements[0].parts[1].device_indices.size(), 1u);
}

TEST(SchedulerGangTest, IsDeterministic) {
  const std::vector<AgentView> agents = {Agent("node-a", 2), Agent("node-b", 3), Agent("node-c", 2), Agent("node-d", 2)};
  const std::vector<JobRequest> queued = {Finetune(1, 5), Finetune(2, 4), Job(3, 1)};
  PassResult first = Schedule(queued, agents, {}, kNow);
  for (int i = 0; i < 5; ++i) {
    PassResult again = Schedule(queued, agents, {}, kNow);
    ASSERT_EQ(again.placements.size(), first.placements.size());
    for (size_t p = 0; p < first.placements.size(); ++p) {
      ASSERT_EQ(again.placements[p].parts.size(), first.placements[p].parts.size());
      for (size_t k = 0; k < first.placements[p].parts.size(); ++k) {
        EXPECT_EQ(again.placements[p].parts[k].worker_id, first.placements[p].parts[k].worker_id);
        EXPECT_EQ(again.placements[p].parts[k].device_indices, first.placements[p].parts[k].device_indices);
      }
    }
    EXPECT_EQ(again.waiting_reasons, first.waiting_reasons);
  }
  // 5 ranks: node-b's 3 and the first 2-device agent; then 4 ranks: the other two.
  ASSERT_EQ(first.placements.size(), 2u);
  EXPECT_EQ(first.waiting_reasons.count(3), 1u);
  EXPECT_EQ(first.placements[0].parts[0].worker_id, "node-b");
  EXPECT_EQ(first.placements[0].parts[1].worker_id, "node-a");
  EXPECT_EQ(first.placements[1].parts[0].worker_id, "node-c");
  EXPECT_EQ(first.placements[1].parts[1].worker_id, "node-d");
}

TEST(SchedulerGangTest, CheckSatisfiableCountsTheAgentsTogether) {
  const std::vector<AgentView> agents = {Agent("node-a", 2), Agent("node-b", 2), Agent("node-c", 2, "")};
  EXPECT_TRUE(CheckSatisfiable(Finetune(1, 4), agents).ok());
  Status six = CheckSatisfiable(Finetune(1, 6), agents);
  EXPECT_EQ(six.code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(six.message(),
            "job needs 6 cpu devices across agents; the agents hold node-a: 2, node-b: 2, node-c has no advertise "
            "address");
  EXPECT_TRUE(CheckSatisfiable(Finetune(1, 4, 2), agents).ok());
  EXPECT_EQ(CheckSatisfiable(Finetune(1, 6, 3), agents).code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(CheckSatisfiable(Finetune(1, 5, 2), agents).code(), StatusCode::kInvalidArgument);
  JobRequest plain = Finetune(1, 4);
  plain.may_span = false;
  EXPECT_EQ(CheckSatisfiable(plain, agents).message(), "job needs 4 cpu devices; the largest agent, node-a, has 2");
  // With no agent advertising an address no gang can form: the one-agent refusal, and why.
  const std::vector<AgentView> unadvertised = {Agent("node-a", 2, ""), Agent("node-b", 2, "")};
  EXPECT_EQ(CheckSatisfiable(Finetune(1, 4), unadvertised).message(),
            "job needs 4 cpu devices; the largest agent, node-a, has 2; no agent of its kind advertises an address "
            "for a gang across agents (fuji-agent --advertise-addr)");
  EXPECT_EQ(CheckSatisfiable(Finetune(1, 2, 2), unadvertised).code(), StatusCode::kFailedPrecondition);
  EXPECT_TRUE(CheckSatisfiable(Finetune(1, 2), unadvertised).ok());
  // Host memory: 4 ranks with 40000 MiB: 2 ranks need 20000 of an agent's host.
  JobRequest job = Finetune(1, 4);
  job.plans = Plans(0, 40000);
  std::vector<AgentView> small = {Agent("node-a", 2), Agent("node-b", 2)};
  small[0].host_total_mib = small[1].host_total_mib = 20000;
  EXPECT_TRUE(CheckSatisfiable(job, small).ok());
  small[1].host_total_mib = 19999;
  EXPECT_EQ(CheckSatisfiable(job, small).message(),
            "tiny fine-tune needs 4 cpu devices across agents (zero 0); the agents hold node-a: 2, node-b: 1");
}

TEST(SchedulerGangTest, WaitingReasonSaysWhatEachAgentLacks) {
  JobRequest job = Finetune(1, 4);
  job.plans = Plans(0, 8000);
  AgentView a = Agent("node-a", 2), b = Agent("node-b", 2);
  a.host_total_mib = b.host_total_mib = 16000;
  a.host_free_mib = 4000;
  b.host_free_mib = 2000;  // room for one rank's share only
  Hold(a, 7, {1});
  PassResult result = Schedule({job}, {a, b}, {}, kNow);
  EXPECT_TRUE(result.placements.empty());
  EXPECT_EQ(result.waiting_reasons.at(1),
            "waiting for 4 cpu devices across agents (zero 0); ranks each agent can take now: node-a: 1 of 2 (1 held), "
            "node-b: 1 of 2 (memory)");
}

TEST(SchedulerGangTest, EveryMemberHoldsALeaseOfItsOwn) {
  LeaseTable leases;
  leases.Grant(1, "node-a", 0, 1000);
  leases.Hold(1, "node-b", 0, 1000);
  leases.Grant(2, "node-b", 0, 1000);
  EXPECT_EQ(leases.size(), 3u);
  leases.Renew("node-a", 800, 1000);  // node-b goes silent
  const std::vector<ExpiredLease> expired = leases.Expired(1000);
  ASSERT_EQ(expired.size(), 2u);
  EXPECT_EQ(expired[0].job_id, 1);
  EXPECT_EQ(expired[0].worker_id, "node-b");
  EXPECT_EQ(expired[1].job_id, 2);
  leases.Release(1);  // the attempt ends for every member
  EXPECT_EQ(leases.size(), 1u);
  leases.Grant(2, "node-a", 1000, 1000);  // placed again elsewhere: the old holder is gone
  EXPECT_TRUE(leases.Expired(1999).empty());
  EXPECT_EQ(leases.size(), 1u);
}

TEST(SchedulerGangTest, LaterJobsOfThePassSeeTheGangsDevicesHeld) {
  // Each agent's device 0 keeps a pinned warm model (never unloaded); the gang takes both devices
  // of both agents. A request of that model later in the pass must not batch onto them.
  std::vector<AgentView> agents = {Agent("node-a", 2), Agent("node-b", 2)};
  for (AgentView& agent : agents) agent.devices[0].warm.push_back({"m|fp32|none", 0, 0, 0, true});
  JobRequest request = Job(2, 1);
  request.warm_key = "m|fp32|none";
  request.priority = -1;
  PassResult result = Schedule({Finetune(1, 4), request}, agents, {}, kNow);
  ASSERT_EQ(result.placements.size(), 1u);
  EXPECT_EQ(result.placements[0].job_id, 1);
  EXPECT_EQ(result.waiting_reasons.count(2), 1u);
}

}  // namespace
}  // namespace fuji::sched
