// Tests of memory-aware placement with fake agents: a job's plans (from the memory planner) are
// tried in order against the free memory of the devices and the host; nothing is placed where no
// plan fits; memory promised in a pass is gone for later jobs; sharing needs every job's consent;
// and jobs that fit nowhere are refused with the numbers.
#include <gtest/gtest.h>

#include <memory>

#include "daemon/scheduler/scheduler.h"

namespace fuji::sched {
namespace {

constexpr int64_t kNow = 1'000'000;

AgentView GpuAgent(const std::string& worker_id, int devices, int64_t free_mib, int64_t host_free_mib,
                   int64_t total_mib = 81920) {
  AgentView agent;
  agent.worker_id = worker_id;
  agent.device_kind = "cuda";
  for (int i = 0; i < devices; ++i) agent.devices.push_back({i, total_mib, free_mib, {}, true});
  agent.host_total_mib = host_free_mib;
  agent.host_free_mib = host_free_mib;
  return agent;
}

// A fine-tune's plans, fastest first: everything on the GPU, optimizer offload, parameter offload.
std::shared_ptr<const MemoryPlans> Plans(std::vector<MemoryOption> options,
                                         const std::string& label = "1.3b fine-tune") {
  auto plans = std::make_shared<MemoryPlans>();
  plans->label = label;
  plans->options = std::move(options);
  return plans;
}

JobRequest PlannedJob(int64_t id, int devices, std::shared_ptr<const MemoryPlans> plans,
                      const std::string& kind = "cuda") {
  JobRequest job;
  job.id = id;
  job.devices = devices;
  job.device_kind = kind;
  job.plans = std::move(plans);
  return job;
}

const std::vector<MemoryOption> kThreePlans = {
    {30000, 4000, "zero 0, offload none"},
    {12000, 40000, "zero 2, offload optimizer"},
    {5000, 60000, "zero 3, offload params"},
};

TEST(SchedulerMemoryTest, PicksTheFirstPlanThatFitsTheFreeMemory) {
  // 20000 MiB free per GPU and 50000 on the host: the optimizer-offload plan.
  PassResult result = Schedule({PlannedJob(1, 2, Plans(kThreePlans))},
                               {GpuAgent("gpu-a", 2, 20000, 50000)}, {}, kNow);
  ASSERT_EQ(result.placements.size(), 1u);
  EXPECT_EQ(result.placements[0].option, 1);
  EXPECT_EQ(result.placements[0].device_indices, (std::vector<int>{0, 1}));
  // Plenty of both: the fastest.
  result = Schedule({PlannedJob(1, 2, Plans(kThreePlans))}, {GpuAgent("gpu-a", 2, 80000, 500000)}, {}, kNow);
  ASSERT_EQ(result.placements.size(), 1u);
  EXPECT_EQ(result.placements[0].option, 0);
  // Little GPU memory but a large host: parameter offload.
  result = Schedule({PlannedJob(1, 2, Plans(kThreePlans))}, {GpuAgent("gpu-a", 2, 6000, 100000)}, {}, kNow);
  ASSERT_EQ(result.placements.size(), 1u);
  EXPECT_EQ(result.placements[0].option, 2);
}

TEST(SchedulerMemoryTest, NeverPlacesAJobWhereNoPlanFits) {
  // The GPUs are idle but other programs hold most of their memory; the host is small.
  for (const auto& [free, host] : std::vector<std::pair<int64_t, int64_t>>{{4000, 500000}, {80000, 3000}, {20000, 30000}}) {
    PassResult result = Schedule({PlannedJob(1, 2, Plans(kThreePlans))}, {GpuAgent("gpu-a", 2, free, host)}, {}, kNow);
    EXPECT_TRUE(result.placements.empty()) << free << " " << host;
    EXPECT_EQ(result.waiting_reasons.at(1).rfind("waiting for 2 free cuda devices with 4.9 GiB free each and 58.6 GiB "
                                                 "of host memory (its smallest plan: zero 3, offload params): gpu-a has 2 free",
                                                 0),
              0u)
        << result.waiting_reasons.at(1);
  }
  // Only one device has room: a two-device job does not start on it.
  AgentView agent = GpuAgent("gpu-a", 2, 80000, 500000);
  agent.devices[1].free_mib = 1000;
  EXPECT_TRUE(Schedule({PlannedJob(1, 2, Plans(kThreePlans))}, {agent}, {}, kNow).placements.empty());
  PassResult one = Schedule({PlannedJob(1, 1, Plans(kThreePlans))}, {agent}, {}, kNow);
  ASSERT_EQ(one.placements.size(), 1u);
  EXPECT_EQ(one.placements[0].device_indices, (std::vector<int>{0}));
}

TEST(SchedulerMemoryTest, MemoryPromisedInAPassIsGoneForLaterJobs) {
  // Two one-GPU jobs whose plans need 40000 MiB of host memory each; the host has 60000 free.
  const auto offload = Plans({{12000, 40000, "zero 2, offload optimizer"}});
  PassResult result = Schedule({PlannedJob(1, 1, offload), PlannedJob(2, 1, offload)},
                               {GpuAgent("gpu-a", 2, 80000, 60000)}, {}, kNow);
  EXPECT_EQ(result.placements.size(), 1u);
  EXPECT_NE(result.waiting_reasons.at(2).find("gpu-a has 1 free (job 1 holds 1), up to 78.1 GiB free per idle "
                                              "device, 19.5 GiB of host memory free"),
            std::string::npos)
      << result.waiting_reasons.at(2);
  // With 80000 free both start.
  EXPECT_EQ(Schedule({PlannedJob(1, 1, offload), PlannedJob(2, 1, offload)}, {GpuAgent("gpu-a", 2, 80000, 80000)},
                     {}, kNow)
                .placements.size(),
            2u);
}

TEST(SchedulerMemoryTest, PrefersTheAgentWhereAFasterPlanFits) {
  // gpu-a (listed first, and the better fit by count) has room only for parameter offload.
  std::vector<AgentView> agents = {GpuAgent("gpu-a", 1, 8000, 500000), GpuAgent("gpu-b", 2, 40000, 500000)};
  PassResult result = Schedule({PlannedJob(1, 1, Plans(kThreePlans))}, agents, {}, kNow);
  ASSERT_EQ(result.placements.size(), 1u);
  EXPECT_EQ(result.placements[0].worker_id, "gpu-b");
  EXPECT_EQ(result.placements[0].option, 0);
}

TEST(SchedulerMemoryTest, TwoJobsShareAGpuOnlyWhenBothAllowIt) {
  // Two inferences of 30000 MiB fit one 80 GiB GPU together.
  const auto infer = Plans({{30000, 2000, "offload none"}}, "1.3b inference");
  JobRequest a = PlannedJob(1, 1, infer), b = PlannedJob(2, 1, infer), c = PlannedJob(3, 1, infer);
  a.shareable = b.shareable = c.shareable = true;
  PassResult shared = Schedule({a, b, c}, {GpuAgent("gpu-a", 1, 81920, 500000)}, {}, kNow);
  EXPECT_EQ(shared.placements.size(), 2u);  // a third does not fit beside them
  for (const Placement& p : shared.placements) EXPECT_EQ(p.device_indices, (std::vector<int>{0}));
  EXPECT_TRUE(shared.waiting_reasons.count(3));

  // One of them does not allow sharing: they take turns.
  b.shareable = false;
  EXPECT_EQ(Schedule({a, b}, {GpuAgent("gpu-a", 1, 81920, 500000)}, {}, kNow).placements.size(), 1u);
  // Held by a running job that allows sharing, with what is left of the memory: only what fits joins.
  AgentView held = GpuAgent("gpu-a", 1, 81920 - 30000, 500000);
  held.devices[0].jobs = {9};
  const std::vector<RunningJob> running = {{9, true, kUnknownMs}};
  EXPECT_EQ(Schedule({a}, {held}, running, kNow).placements.size(), 1u);
  const auto big = Plans({{60000, 2000, "offload none"}}, "6.7b inference");
  JobRequest d = PlannedJob(4, 1, big);
  d.shareable = true;
  EXPECT_TRUE(Schedule({d}, {held}, running, kNow).placements.empty());
}

TEST(SchedulerMemoryTest, RefusesWithTheNumbersAJobThatFitsNowhere) {
  const std::vector<AgentView> agents = {GpuAgent("gpu-a", 8, 40960, 65536, 40960),
                                         GpuAgent("gpu-b", 2, 81920, 131072, 81920)};
  // Satisfiable on the totals even when little is free now.
  std::vector<AgentView> busy = agents;
  for (DeviceView& d : busy[0].devices) d.free_mib = 100;
  EXPECT_TRUE(CheckSatisfiable(PlannedJob(1, 8, Plans(kThreePlans)), busy).ok());

  // No GPU is large enough for any plan.
  const auto huge = Plans({{200000, 1000, "zero 0, offload none"}, {90000, 300000, "zero 3, offload params"}},
                          "13b fine-tune (12.85B parameters)");
  Status s = CheckSatisfiable(PlannedJob(1, 2, huge), agents);
  EXPECT_EQ(s.code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(s.message(),
            "13b fine-tune (12.85B parameters) needs at least 87.9 GiB on each of its 2 cuda devices (zero 3, "
            "offload params); the largest devices, on gpu-b, have 80.0 GiB");
  // The GPUs would do, the hosts are too small.
  const auto host_bound = Plans({{30000, 300000, "zero 2, offload optimizer"}, {5000, 400000, "zero 3, offload params"}},
                                "13b fine-tune (12.85B parameters)");
  s = CheckSatisfiable(PlannedJob(1, 2, host_bound), agents);
  EXPECT_EQ(s.message(),
            "13b fine-tune (12.85B parameters) needs at least 293.0 GiB of host memory (zero 2, offload "
            "optimizer); the largest agent, gpu-b, has 128.0 GiB");
  // More GPUs than any agent has.
  s = CheckSatisfiable(PlannedJob(1, 16, Plans(kThreePlans)), agents);
  EXPECT_EQ(s.message(), "job needs 16 cuda devices; the largest agent, gpu-a, has 8");
  // A plan needing negative memory is a bad request.
  EXPECT_EQ(CheckSatisfiable(PlannedJob(1, 1, Plans({{-1, 0, "zero 0, offload none"}})), agents).code(),
            StatusCode::kInvalidArgument);
}

TEST(SchedulerMemoryTest, CpuJobsAreBoundByTheHostsMemory) {
  AgentView cpu;
  cpu.worker_id = "cpu-a";
  cpu.device_kind = "cpu";
  for (int i = 0; i < 2; ++i) cpu.devices.push_back({i, 24000, 24000, {}, true});
  cpu.host_total_mib = 24000;
  cpu.host_free_mib = 20000;
  const auto tune = Plans({{0, 12000, "zero 0, offload none"}}, "111m fine-tune");
  PassResult result = Schedule({PlannedJob(1, 1, tune, "cpu"), PlannedJob(2, 1, tune, "cpu")}, {cpu}, {}, kNow);
  ASSERT_EQ(result.placements.size(), 1u);
  EXPECT_EQ(result.placements[0].job_id, 1);
  EXPECT_NE(result.waiting_reasons.at(2).find("and 11.7 GiB of host memory"), std::string::npos)
      << result.waiting_reasons.at(2);
  EXPECT_EQ(CheckSatisfiable(PlannedJob(1, 1, Plans({{0, 30000, "zero 0, offload none"}}, "2.7b fine-tune"), "cpu"),
                             {cpu})
                .message(),
            "2.7b fine-tune needs at least 29.3 GiB of host memory (zero 0, offload none); the largest agent, "
            "cpu-a, has 23.4 GiB");
}

TEST(SchedulerMemoryTest, TheReservationHoldsBackHostMemoryForTheJobItServes) {
  // A CPU agent of 2 devices and 24,000 MiB: job 7 holds device 0 and 10,000 MiB until T (+100 s).
  AgentView cpu;
  cpu.worker_id = "cpu-a";
  cpu.device_kind = "cpu";
  for (int i = 0; i < 2; ++i) cpu.devices.push_back({i, 24000, 14000, {}, true});
  cpu.devices[0].jobs = {7};
  cpu.host_total_mib = 24000;
  cpu.host_free_mib = 14000;
  RunningJob holder;
  holder.job_id = 7;
  holder.expected_end_ms = kNow + 100'000;
  holder.host_mib = 10000;
  const std::vector<RunningJob> running = {holder};
  // The big job needs 20,000 MiB: it waits for T, when 24,000 are free.
  JobRequest big = PlannedJob(1, 1, Plans({{0, 20000, "zero 0, offload none"}}, "big"), "cpu");
  big.priority = 1;
  // A small one of 10,000 MiB would fit now, but past T it would leave the big job 14,000.
  JobRequest small = PlannedJob(2, 1, Plans({{0, 10000, "zero 0, offload none"}}, "small"), "cpu");
  PassResult result = Schedule({big, small}, {cpu}, running, kNow);
  EXPECT_TRUE(result.placements.empty());
  EXPECT_EQ(result.waiting_reasons.at(2), "held for job 1 (priority 1), which reserved cpu-a");
  // One that ends by T, or needs little enough, starts beside it.
  small.estimated_run_ms = 50'000;
  result = Schedule({big, small}, {cpu}, running, kNow);
  ASSERT_EQ(result.placements.size(), 1u);
  EXPECT_EQ(result.placements[0].job_id, 2);
  JobRequest tiny = PlannedJob(3, 1, Plans({{0, 4000, "zero 0, offload none"}}, "tiny"), "cpu");
  result = Schedule({big, tiny}, {cpu}, running, kNow);
  ASSERT_EQ(result.placements.size(), 1u);
  EXPECT_EQ(result.placements[0].job_id, 3);
  // Without the big job, the small one starts at once.
  small.estimated_run_ms = kUnknownMs;
  EXPECT_EQ(Schedule({small}, {cpu}, running, kNow).placements.size(), 1u);
}

}  // namespace
}  // namespace fuji::sched
