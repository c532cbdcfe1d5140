// Tests of the placement policy with fake agents and fake time: queue order, best fit, backfill
// under a reservation, sharing, refusals and the waiting reasons `fuji show` prints.
#include <gtest/gtest.h>

#include "daemon/scheduler/scheduler.h"

namespace fuji::sched {
namespace {

constexpr int64_t kNow = 1'000'000;

AgentView Agent(const std::string& worker_id, int devices, const std::string& kind = "cpu") {
  AgentView agent;
  agent.worker_id = worker_id;
  agent.device_kind = kind;
  for (int i = 0; i < devices; ++i) agent.devices.push_back({i, 16384, 16384, {}, false});
  return agent;
}

JobRequest Job(int64_t id, int devices, int priority = 0, const std::string& kind = "cpu") {
  JobRequest job;
  job.id = id;
  job.devices = devices;
  job.priority = priority;
  job.device_kind = kind;
  return job;
}

// Marks `job_id` as holding the given devices of `agent`.
void Hold(AgentView& agent, int64_t job_id, std::vector<int> indices) {
  for (int i : indices) agent.devices[static_cast<size_t>(i)].jobs.push_back(job_id);
}

std::vector<int64_t> PlacedIds(const PassResult& result) {
  std::vector<int64_t> ids;
  for (const Placement& p : result.placements) ids.push_back(p.job_id);
  return ids;
}

TEST(SchedulerTest, TakesJobsByPriorityThenSubmitOrder) {
  const std::vector<JobRequest> queued = {Job(3, 1), Job(1, 1), Job(2, 1, /*priority=*/5)};
  PassResult one = Schedule(queued, {Agent("node-a", 1)}, {}, kNow);
  EXPECT_EQ(PlacedIds(one), (std::vector<int64_t>{2}));
  EXPECT_EQ(one.waiting_reasons.size(), 2u);

  PassResult all = Schedule(queued, {Agent("node-a", 3)}, {}, kNow);
  EXPECT_EQ(PlacedIds(all), (std::vector<int64_t>{2, 1, 3}));
  EXPECT_TRUE(all.waiting_reasons.empty());
  EXPECT_EQ(all.placements[0].worker_id, "node-a");
  EXPECT_EQ(all.placements[0].device_indices, (std::vector<int>{0}));
  EXPECT_EQ(all.placements[2].device_indices, (std::vector<int>{2}));
}

TEST(SchedulerTest, BestFitKeepsTheLargeAgentForTheLargeJob) {
  // One- and two-device jobs on a two-device and a one-device agent, in both agent orders.
  for (bool small_first : {false, true}) {
    std::vector<AgentView> agents = {Agent("node-a", 2), Agent("node-b", 1)};
    if (small_first) std::swap(agents[0], agents[1]);
    PassResult result = Schedule({Job(1, 1), Job(2, 2)}, agents, {}, kNow);
    ASSERT_EQ(result.placements.size(), 2u);
    EXPECT_EQ(result.placements[0].worker_id, "node-b");
    EXPECT_EQ(result.placements[1].worker_id, "node-a");
    EXPECT_EQ(result.placements[1].device_indices, (std::vector<int>{0, 1}));
  }
}

TEST(SchedulerTest, AllRanksOfAJobGoOnOneAgent) {
  std::vector<AgentView> agents = {Agent("node-a", 2), Agent("node-b", 2)};
  Hold(agents[0], 7, {0});
  Hold(agents[1], 8, {1});
  // Two devices are free, but on different agents.
  PassResult result = Schedule({Job(1, 2)}, agents, {}, kNow);
  EXPECT_TRUE(result.placements.empty());
  EXPECT_EQ(result.waiting_reasons.at(1),
            "waiting for 2 free cpu devices: node-a has 1 free (job 7 holds 1), "
            "node-b has 1 free (job 8 holds 1); node-a is reserved for it");
}

TEST(SchedulerTest, BackfillsSmallJobsAroundTheReservation) {
  AgentView agent = Agent("node-a", 4);
  Hold(agent, 7, {0, 1});  // ends in 100 s: then the big job's 3 devices are free
  const std::vector<RunningJob> running = {{7, false, kNow + 100'000}};
  JobRequest big = Job(10, 3);
  JobRequest unknown_run = Job(11, 1);
  JobRequest another_unknown = Job(12, 1);
  JobRequest long_run = Job(13, 1);
  long_run.estimated_run_ms = 200'000;
  JobRequest short_run = Job(14, 1);
  short_run.estimated_run_ms = 100'000;

  PassResult result =
      Schedule({big, unknown_run, another_unknown, long_run, short_run}, {agent}, running, kNow);
  // At T, 4 devices are free and the big job needs 3: one may be kept past T, and job 11 takes it.
  // Job 14 ends by T, so it may use the last idle device.
  EXPECT_EQ(PlacedIds(result), (std::vector<int64_t>{11, 14}));
  EXPECT_EQ(result.waiting_reasons.at(10),
            "waiting for 3 free cpu devices: node-a has 2 free (job 7 holds 2); "
            "node-a is reserved for it, expected free in 100 s");
  EXPECT_EQ(result.waiting_reasons.at(12), "held for job 10 (priority 0), which reserved node-a");
  EXPECT_EQ(result.waiting_reasons.at(13), "held for job 10 (priority 0), which reserved node-a");
}

TEST(SchedulerTest, UnknownEndsKeepEveryDeviceTheReservationNeeds) {
  AgentView agent = Agent("node-a", 2);
  Hold(agent, 7, {0});
  PassResult result = Schedule({Job(1, 2), Job(2, 1)}, {agent}, {}, kNow);
  EXPECT_TRUE(result.placements.empty());
  EXPECT_EQ(result.waiting_reasons.at(2), "held for job 1 (priority 0), which reserved node-a");
}

TEST(SchedulerTest, ReservesTheAgentThatFreesUpSoonest) {
  std::vector<AgentView> agents = {Agent("node-a", 2), Agent("node-b", 2)};
  Hold(agents[0], 7, {0, 1});
  Hold(agents[1], 8, {0, 1});
  const std::vector<RunningJob> running = {{7, false, kNow + 60'000}, {8, false, kNow + 10'500}};
  PassResult result = Schedule({Job(1, 2, 5), Job(2, 2)}, agents, running, kNow);
  EXPECT_EQ(
      result.waiting_reasons.at(1),
      "waiting for 2 free cpu devices: node-a has 0 free (job 7 holds 2), "
      "node-b has 0 free (job 8 holds 2); node-b is reserved for it, expected free in 10.5 s");
  // Job 2 fits nowhere now, reservation or not.
  EXPECT_EQ(result.waiting_reasons.at(2),
            "waiting for 2 free cpu devices: node-a has 0 free (job 7 holds 2), "
            "node-b has 0 free (job 8 holds 2)");
}

TEST(SchedulerTest, OtherKindsAndOtherAgentsAreNotHeld) {
  std::vector<AgentView> agents = {Agent("node-a", 2), Agent("node-b", 1),
                                   Agent("gpu-a", 2, "cuda")};
  Hold(agents[0], 7, {0});
  // Job 1 reserves node-a; job 2 starts on node-b, job 3 on the cuda agent.
  PassResult result = Schedule({Job(1, 2), Job(2, 1), Job(3, 2, 0, "cuda")}, agents, {}, kNow);
  ASSERT_EQ(PlacedIds(result), (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(result.placements[0].worker_id, "node-b");
  EXPECT_EQ(result.placements[1].worker_id, "gpu-a");
}

TEST(SchedulerTest, RefusesJobsNoAgentCanHold) {
  std::vector<AgentView> agents = {Agent("node-a", 2, "cuda"), Agent("node-b", 1, "cuda"),
                                   Agent("node-c", 8)};
  Status too_large = CheckSatisfiable(Job(1, 4, 0, "cuda"), agents);
  EXPECT_EQ(too_large.code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(too_large.message(), "job needs 4 cuda devices; the largest agent, node-a, has 2");

  Status no_kind = CheckSatisfiable(Job(1, 1, 0, "tpu"), agents);
  EXPECT_EQ(no_kind.code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(no_kind.message(), "job needs 1 tpu device; no agent has tpu devices");

  Status no_device = CheckSatisfiable(Job(1, 0), agents);
  EXPECT_EQ(no_device.code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(no_device.message(), "job needs at least 1 device, asked for 0");

  EXPECT_TRUE(CheckSatisfiable(Job(1, 2, 0, "cuda"), agents).ok());
  // A disconnected agent may come back: it still counts.
  agents[2].connected = false;
  EXPECT_TRUE(CheckSatisfiable(Job(1, 8), agents).ok());
}

TEST(SchedulerTest, SaysWhyAJobCannotStartOnTheConnectedAgents) {
  std::vector<AgentView> agents = {Agent("node-a", 2), Agent("node-b", 4)};
  agents[1].connected = false;
  PassResult result = Schedule({Job(1, 4), Job(2, 1, 0, "cuda"), Job(3, 0)}, agents, {}, kNow);
  EXPECT_TRUE(result.placements.empty());
  EXPECT_EQ(result.waiting_reasons.at(1),
            "job needs 4 cpu devices; the largest connected agent, node-a, has 2");
  EXPECT_EQ(result.waiting_reasons.at(2),
            "job needs 1 cuda device; no connected agent has cuda devices");
  EXPECT_EQ(result.waiting_reasons.at(3), "job needs at least 1 device, asked for 0");
}

TEST(SchedulerTest, DisconnectedAgentsGetNothing) {
  std::vector<AgentView> agents = {Agent("node-a", 4), Agent("node-b", 4)};
  agents[0].connected = false;
  PassResult one = Schedule({Job(1, 4), Job(2, 1)}, agents, {}, kNow);
  ASSERT_EQ(one.placements.size(), 1u);
  EXPECT_EQ(one.placements[0].worker_id, "node-b");

  agents[1].connected = false;
  PassResult none = Schedule({Job(1, 1)}, agents, {}, kNow);
  EXPECT_TRUE(none.placements.empty());
  EXPECT_EQ(none.waiting_reasons.at(1), "no agent connected");
}

TEST(SchedulerTest, WaitingReasonsNameFreeDevicesAndHolders) {
  std::vector<AgentView> agents = {Agent("node-a", 2), Agent("node-b", 2)};
  Hold(agents[0], 7, {0});
  Hold(agents[1], 3, {0, 1});
  PassResult result = Schedule({Job(20, 2)}, agents, {}, kNow);
  EXPECT_EQ(result.waiting_reasons.at(20),
            "waiting for 2 free cpu devices: node-a has 1 free (job 7 holds 1), "
            "node-b has 0 free (job 3 holds 2); node-a is reserved for it");
}

TEST(SchedulerTest, WaitingReasonsSumUpManyHolders) {
  AgentView agent = Agent("node-a", 6);
  for (int i = 0; i < 6; ++i) Hold(agent, 100 + i, {i});
  Hold(agent, 105, {0});
  PassResult result = Schedule({Job(1, 1)}, {agent}, {}, kNow);
  EXPECT_EQ(result.waiting_reasons.at(1),
            "waiting for 1 free cpu device: node-a has 0 free (job 100 holds 1, job 105 holds 2, "
            "job 101 holds 1, 3 more jobs hold 3); node-a is reserved for it");
}

TEST(SchedulerTest, OnlyTheFirstWaitingJobsGetDetailedReasons) {
  AgentView agent = Agent("node-a", 1);
  Hold(agent, 7, {0});
  ScheduleOptions options;
  options.detailed_reasons = 1;
  PassResult result = Schedule({Job(1, 1, 1), Job(2, 1), Job(3, 1)}, {agent}, {}, kNow, options);
  EXPECT_EQ(result.waiting_reasons.at(1),
            "waiting for 1 free cpu device: node-a has 0 free (job 7 holds 1); "
            "node-a is reserved for it");
  EXPECT_EQ(result.waiting_reasons.at(3),
            "waiting for 1 free cpu device (2 waiting jobs ahead of it)");
}

TEST(SchedulerTest, WaitingJobsPastMaxReasonsGetNoEntry) {
  AgentView agent = Agent("node-a", 2);
  Hold(agent, 7, {0});
  ScheduleOptions options;
  options.max_reasons = 2;
  // Job 1 takes the free device; jobs 2-4 need both devices and wait.
  PassResult result = Schedule({Job(1, 1), Job(2, 2), Job(3, 2), Job(4, 2)}, {agent}, {}, kNow, options);
  ASSERT_EQ(result.placements.size(), 1u);
  EXPECT_EQ(result.placements[0].job_id, 1);
  EXPECT_EQ(result.waiting_reasons.size(), 2u);
  EXPECT_TRUE(result.waiting_reasons.count(2) && result.waiting_reasons.count(3));
  EXPECT_FALSE(result.waiting_reasons.count(4));
}

// A shareable device holding one job, with room for more.
AgentView SharedAgent(int64_t holder, int64_t free_mib) {
  AgentView agent = Agent("gpu-a", 1, "cuda");
  agent.devices[0].shareable = true;
  agent.devices[0].free_mib = free_mib;
  Hold(agent, holder, {0});
  return agent;
}

JobRequest SharingJob(int64_t id, int64_t memory_mib) {
  JobRequest job = Job(id, 1, 0, "cuda");
  job.shareable = true;
  job.memory_mib = memory_mib;
  return job;
}

TEST(SchedulerTest, SharesADeviceOnlyWhenEveryoneAllowsAndMemoryFits) {
  const std::vector<RunningJob> shareable_holder = {{7, true, kUnknownMs}};
  // Both fit: 4000 + 4000 <= 9000 MiB free.
  PassResult both = Schedule({SharingJob(1, 4000), SharingJob(2, 4000), SharingJob(3, 4000)},
                             {SharedAgent(7, 9000)}, shareable_holder, kNow);
  EXPECT_EQ(PlacedIds(both), (std::vector<int64_t>{1, 2}));

  // The holder does not allow sharing (or is unknown).
  EXPECT_TRUE(Schedule({SharingJob(1, 10)}, {SharedAgent(7, 9000)}, {{7, false, 0}}, kNow)
                  .placements.empty());
  EXPECT_TRUE(Schedule({SharingJob(1, 10)}, {SharedAgent(7, 9000)}, {}, kNow).placements.empty());
  // The job does not allow sharing, or declares no memory.
  JobRequest exclusive = SharingJob(1, 10);
  exclusive.shareable = false;
  EXPECT_TRUE(
      Schedule({exclusive}, {SharedAgent(7, 9000)}, shareable_holder, kNow).placements.empty());
  EXPECT_TRUE(Schedule({SharingJob(1, 0)}, {SharedAgent(7, 9000)}, shareable_holder, kNow)
                  .placements.empty());
  // The device does not allow sharing.
  AgentView unshared = SharedAgent(7, 9000);
  unshared.devices[0].shareable = false;
  EXPECT_TRUE(Schedule({SharingJob(1, 10)}, {unshared}, shareable_holder, kNow).placements.empty());
}

TEST(SchedulerTest, SharingJobsPackOntoSharedDevicesBeforeIdleOnes) {
  AgentView agent = Agent("gpu-a", 2, "cuda");
  for (DeviceView& d : agent.devices) d.shareable = true;
  // Two sharing jobs fill device 0 (8000 + 8000 of 16384 MiB); the third does not fit beside
  // them and takes device 1; an exclusive job then finds no idle device.
  PassResult result = Schedule(
      {SharingJob(1, 8000), SharingJob(2, 8000), SharingJob(3, 8000), Job(4, 1, 0, "cuda")},
      {agent}, {}, kNow);
  ASSERT_EQ(PlacedIds(result), (std::vector<int64_t>{1, 2, 3}));
  EXPECT_EQ(result.placements[0].device_indices, (std::vector<int>{0}));
  EXPECT_EQ(result.placements[1].device_indices, (std::vector<int>{0}));
  EXPECT_EQ(result.placements[2].device_indices, (std::vector<int>{1}));
}

}  // namespace
}  // namespace fuji::sched
