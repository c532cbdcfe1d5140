// Tests of warm models in placement with fake agents (scheduler.h, policy 7): an inference job
// goes where its model is loaded, jobs of one model batch on one device needing only their KV
// caches there, idle warm models of other models are unloaded least recently used first and only
// as many as needed, busy and pinned ones never, a fine-tune unloads every idle one on its
// devices; and the free memory of a device batching one model counts its weights once.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <map>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "daemon/scheduler/free_memory.h"
#include "daemon/scheduler/scheduler.h"

namespace fuji::sched {
namespace {

constexpr int64_t kNow = 1'000'000;
const std::string kM13b = "/models/m13b|bf16|none";
const std::string kM1b = "/models/m1b|bf16|none";
const std::string kM111m = "/models/m111m|fp32|none";

AgentView GpuAgent(const std::string& worker_id, int devices, int64_t free_mib, int64_t host_free_mib = 500000) {
  AgentView agent;
  agent.worker_id = worker_id;
  agent.device_kind = "cuda";
  for (int i = 0; i < devices; ++i) agent.devices.push_back({i, 81920, free_mib, {}, true});
  agent.host_total_mib = 1000000;
  agent.host_free_mib = host_free_mib;
  return agent;
}

WarmView Warm(const std::string& key, int64_t mib, int64_t idle_ms, int active = 0, bool pinned = false) {
  return {key, mib, idle_ms, active, pinned};
}

// An inference on one GPU: `weights_mib` of its device_mib is the model's, the rest its KV cache
// and activations; host_mib is the rank's load.
JobRequest Inference(int64_t id, const std::string& key, int64_t device_mib, int64_t weights_mib,
                     int64_t host_mib = 30000, const std::string& kind = "cuda") {
  auto plans = std::make_shared<MemoryPlans>();
  plans->label = "inference";
  plans->options.push_back({device_mib, host_mib, "offload none", weights_mib});
  JobRequest job;
  job.id = id;
  job.device_kind = kind;
  job.plans = std::move(plans);
  job.warm_key = key;
  return job;
}

JobRequest Finetune(int64_t id, int devices, int64_t device_mib) {
  auto plans = std::make_shared<MemoryPlans>();
  plans->label = "1.3b fine-tune";
  plans->options.push_back({device_mib, 20000, "zero 2, offload none"});
  JobRequest job;
  job.id = id;
  job.devices = devices;
  job.device_kind = "cuda";
  job.plans = std::move(plans);
  return job;
}

using Evictions = std::vector<std::pair<int, std::string>>;

TEST(SchedulerWarmTest, WarmModelWinsOverBestFit) {
  // gpu-a has one idle device (the best fit); gpu-b has m13b loaded on its device 2.
  AgentView a = GpuAgent("gpu-a", 1, 60000);
  AgentView b = GpuAgent("gpu-b", 4, 60000);
  b.devices[2].warm.push_back(Warm(kM13b, 26000, 5000));
  PassResult result = Schedule({Inference(1, kM13b, 28000, 26000)}, {a, b}, {}, kNow);
  ASSERT_EQ(result.placements.size(), 1u);
  EXPECT_EQ(result.placements[0].worker_id, "gpu-b");
  EXPECT_EQ(result.placements[0].device_indices, (std::vector<int>{2}));
  EXPECT_TRUE(result.placements[0].evict.empty());
  // Another model's job is placed by best fit, as without warm models.
  result = Schedule({Inference(1, kM1b, 4000, 2600)}, {a, b}, {}, kNow);
  ASSERT_EQ(result.placements.size(), 1u);
  EXPECT_EQ(result.placements[0].worker_id, "gpu-a");
  // The warm device wins on its agent, even with held devices ahead of it there.
  b.devices[0].jobs = {50};
  result = Schedule({Inference(1, kM13b, 28000, 26000)}, {b}, {}, kNow);
  ASSERT_EQ(result.placements.size(), 1u);
  EXPECT_EQ(result.placements[0].device_indices, (std::vector<int>{2}));
}

TEST(SchedulerWarmTest, SixteenRequestsOfOneModelBatchOnItsDevice) {
  // Device 0 holds m13b (26000 MiB, already out of its free memory): 20000 MiB free holds 16
  // requests' KV caches (1000 MiB each) but not one more copy of the weights. Device 1 is idle
  // and empty: a cold request would go there and load.
  AgentView agent = GpuAgent("gpu-a", 2, 20000);
  agent.devices[0].warm.push_back(Warm(kM13b, 26000, 60000));
  agent.devices[1].free_mib = 30000;
  std::vector<JobRequest> queue;
  for (int64_t id = 1; id <= 16; ++id) queue.push_back(Inference(id, kM13b, 27000, 26000));
  PassResult result = Schedule(queue, {agent}, {}, kNow);
  ASSERT_EQ(result.placements.size(), 16u);
  for (const Placement& p : result.placements) {
    EXPECT_EQ(p.device_indices, (std::vector<int>{0})) << "job " << p.job_id;
    EXPECT_TRUE(p.evict.empty());
  }
  // A 21st request does not fit the KV caches left (20 x 1000 MiB): it loads on device 1.
  for (int64_t id = 17; id <= 21; ++id) queue.push_back(Inference(id, kM13b, 27000, 26000));
  result = Schedule(queue, {agent}, {}, kNow);
  ASSERT_EQ(result.placements.size(), 21u);
  EXPECT_EQ(result.placements[19].device_indices, (std::vector<int>{0}));
  EXPECT_EQ(result.placements[20].device_indices, (std::vector<int>{1}));
  // Without its weights loaded, 16 requests do not fit: one per device, the rest wait.
  AgentView cold = GpuAgent("gpu-a", 2, 30000);
  result = Schedule(std::vector<JobRequest>(queue.begin(), queue.begin() + 16), {cold}, {}, kNow);
  EXPECT_EQ(result.placements.size(), 2u);
}

TEST(SchedulerWarmTest, JoinsRunningRequestsOfItsModelOnly) {
  // Jobs 101 and 102 run on m13b's warm rank (2 active requests): a third joins.
  AgentView agent = GpuAgent("gpu-a", 1, 20000);
  agent.devices[0].jobs = {101, 102};
  agent.devices[0].warm.push_back(Warm(kM13b, 26000, 0, 2));
  PassResult result = Schedule({Inference(1, kM13b, 27000, 26000)}, {agent}, {}, kNow);
  ASSERT_EQ(result.placements.size(), 1u);
  EXPECT_EQ(result.placements[0].device_indices, (std::vector<int>{0}));
  // A third holder that is not one of its requests (a job of another kind): nobody joins.
  agent.devices[0].jobs = {101, 102, 103};
  agent.devices[0].shareable = false;
  result = Schedule({Inference(1, kM13b, 27000, 26000)}, {agent}, {}, kNow);
  EXPECT_TRUE(result.placements.empty());
  // Another model's request does not join m13b's batch.
  agent.devices[0].jobs = {101, 102};
  result = Schedule({Inference(1, kM1b, 3000, 2600)}, {agent}, {}, kNow);
  EXPECT_TRUE(result.placements.empty());
  // A request placed in the last pass that the agent has not reported active yet: known by its
  // warm_key, it is one of the batch; unknown, it could be anything.
  agent.devices[0].jobs = {101, 102, 104};
  RunningJob newest;
  newest.job_id = 104;
  newest.warm_key = kM13b;
  result = Schedule({Inference(1, kM13b, 27000, 26000)}, {agent}, {newest}, kNow);
  EXPECT_EQ(result.placements.size(), 1u);
  newest.warm_key = kM1b;
  result = Schedule({Inference(1, kM13b, 27000, 26000)}, {agent}, {newest}, kNow);
  EXPECT_TRUE(result.placements.empty());
}

TEST(SchedulerWarmTest, EvictsTheLeastRecentlyUsedIdleModelsOnlyAsNeeded) {
  // 10000 MiB free and three idle models of 20000 MiB: last used 5 s, 9 s and 1 s ago.
  AgentView agent = GpuAgent("gpu-a", 1, 10000);
  agent.devices[0].warm = {Warm(kM1b, 20000, 5000), Warm(kM111m, 20000, 9000), Warm("/m/c|bf16|none", 20000, 1000)};
  // 25000 MiB: unloading one (the least recently used, m111m) is enough.
  PassResult result = Schedule({Inference(1, kM13b, 25000, 24000)}, {agent}, {}, kNow);
  ASSERT_EQ(result.placements.size(), 1u);
  EXPECT_EQ(result.placements[0].evict, (Evictions{{0, kM111m}}));
  // 35000 MiB: two, least recently used first.
  result = Schedule({Inference(1, kM13b, 35000, 34000)}, {agent}, {}, kNow);
  ASSERT_EQ(result.placements.size(), 1u);
  EXPECT_EQ(result.placements[0].evict, (Evictions{{0, kM111m}, {0, kM1b}}));
  // 9000 MiB: nothing is unloaded.
  result = Schedule({Inference(1, kM13b, 9000, 8000)}, {agent}, {}, kNow);
  ASSERT_EQ(result.placements.size(), 1u);
  EXPECT_TRUE(result.placements[0].evict.empty());
  // A device where nothing must be unloaded wins over one where something must.
  AgentView roomy = GpuAgent("gpu-b", 4, 30000);
  result = Schedule({Inference(1, kM13b, 25000, 24000)}, {agent, roomy}, {}, kNow);
  ASSERT_EQ(result.placements.size(), 1u);
  EXPECT_EQ(result.placements[0].worker_id, "gpu-b");
  EXPECT_TRUE(result.placements[0].evict.empty());
  // Unloaded in this pass, a model is gone for later jobs: a second m111m job does not join it.
  result = Schedule({Inference(1, kM13b, 25000, 24000), Inference(2, kM111m, 21000, 20000)}, {agent}, {}, kNow);
  ASSERT_EQ(result.placements.size(), 1u);
  EXPECT_EQ(result.placements[0].job_id, 1);
}

TEST(SchedulerWarmTest, NeverEvictsBusyOrPinnedModels) {
  // 10000 MiB free; a pinned model (a serving job's) and a busy one hold the rest.
  AgentView agent = GpuAgent("gpu-a", 1, 10000);
  agent.devices[0].warm = {Warm(kM1b, 30000, 900000, 0, /*pinned=*/true), Warm(kM111m, 30000, 0, /*active=*/1)};
  PassResult result = Schedule({Inference(1, kM13b, 25000, 24000)}, {agent}, {}, kNow);
  EXPECT_TRUE(result.placements.empty());
  const std::string& reason = result.waiting_reasons.at(1);
  EXPECT_NE(reason.find("warm models in use (serving requests or pinned by a serving job, so not unloaded) hold "
                        "58.6 GiB on gpu-a"),
            std::string::npos)
      << reason;
  // With an idle one beside them, only the idle one goes.
  agent.devices[0].warm.push_back(Warm("/m/c|bf16|none", 20000, 1));
  result = Schedule({Inference(1, kM13b, 25000, 24000)}, {agent}, {}, kNow);
  ASSERT_EQ(result.placements.size(), 1u);
  EXPECT_EQ(result.placements[0].evict, (Evictions{{0, "/m/c|bf16|none"}}));
  // On a device running jobs hold, an idle model may be what one of them is about to use: a job
  // that may share the device does not unload it.
  agent.devices[0].jobs = {101};
  JobRequest sharing = Inference(1, kM13b, 25000, 24000);
  sharing.shareable = true;
  result = Schedule({sharing}, {agent}, {RunningJob{101, true}}, kNow);
  EXPECT_TRUE(result.placements.empty());
  agent.devices[0].jobs.clear();
  // A model a job of this pass was placed on is busy from then on: a job that may share the
  // device cannot have it unloaded.
  std::vector<JobRequest> queue = {Inference(1, "/m/c|bf16|none", 21000, 20000), Inference(2, kM13b, 25000, 24000)};
  for (JobRequest& job : queue) job.shareable = true;
  result = Schedule(queue, {agent}, {}, kNow);
  ASSERT_EQ(result.placements.size(), 1u);
  EXPECT_EQ(result.placements[0].job_id, 1);
}

TEST(SchedulerWarmTest, FinetuneEvictsEveryIdleModelOfItsDevices) {
  AgentView agent = GpuAgent("gpu-a", 3, 40000);
  agent.devices[0].warm = {Warm(kM1b, 3000, 2000), Warm(kM111m, 1000, 7000), Warm("/m/p|bf16|none", 3000, 1, 0, true)};
  agent.devices[1].warm = {Warm(kM13b, 26000, 4000)};
  // Two devices: the empty device 2 first, then device 0 (in index order): the job needs far less
  // than is free there, and still every idle model on it goes; the pinned one stays.
  PassResult result = Schedule({Finetune(1, 2, 30000)}, {agent}, {}, kNow);
  ASSERT_EQ(result.placements.size(), 1u);
  EXPECT_EQ(result.placements[0].device_indices, (std::vector<int>{0, 2}));
  EXPECT_EQ(result.placements[0].evict, (Evictions{{0, kM111m}, {0, kM1b}}));
  // One device: the empty one, nothing unloaded.
  result = Schedule({Finetune(1, 1, 30000)}, {agent}, {}, kNow);
  ASSERT_EQ(result.placements.size(), 1u);
  EXPECT_EQ(result.placements[0].device_indices, (std::vector<int>{2}));
  EXPECT_TRUE(result.placements[0].evict.empty());
  // All three: every idle model of the agent, least recently used first.
  result = Schedule({Finetune(1, 3, 30000)}, {agent}, {}, kNow);
  ASSERT_EQ(result.placements.size(), 1u);
  EXPECT_EQ(result.placements[0].evict, (Evictions{{0, kM111m}, {1, kM13b}, {0, kM1b}}));
}

TEST(SchedulerWarmTest, CpuAgentsEvictFromHostMemory) {
  // A CPU agent's device reads the host's free memory; its warm models live there.
  AgentView agent;
  agent.worker_id = "cpu-a";
  agent.device_kind = "cpu";
  agent.host_total_mib = 64000;
  agent.host_free_mib = 6000;
  agent.devices.push_back({0, 64000, 6000, {}, true});
  agent.devices[0].warm = {Warm(kM1b, 6000, 3000), Warm(kM111m, 1000, 8000)};
  // m13b's 9000 MiB of host memory: unloading m111m (1000 MiB) is not enough, m1b goes too.
  PassResult result = Schedule({Inference(1, kM13b, 0, 0, 9000, "cpu")}, {agent}, {}, kNow);
  ASSERT_EQ(result.placements.size(), 1u);
  EXPECT_EQ(result.placements[0].evict, (Evictions{{0, kM111m}, {0, kM1b}}));
  // 6500 MiB: the least recently used is enough.
  result = Schedule({Inference(1, kM13b, 0, 0, 6500, "cpu")}, {agent}, {}, kNow);
  ASSERT_EQ(result.placements.size(), 1u);
  EXPECT_EQ(result.placements[0].evict, (Evictions{{0, kM111m}}));
  // m1b's own requests need their plan less the weights: 8 of 6500 - 6000 MiB fit in 6000.
  std::vector<JobRequest> queue;
  for (int64_t id = 1; id <= 8; ++id) queue.push_back(Inference(id, kM1b, 0, 6000, 6500, "cpu"));
  result = Schedule(queue, {agent}, {}, kNow);
  ASSERT_EQ(result.placements.size(), 8u);
  for (const Placement& p : result.placements) EXPECT_TRUE(p.evict.empty());
}

// Random agents, warm models and queues: every pass's placements, replayed in order, never need
// more than a device's free memory and what they unload; only idle, unpinned models of other
// keys on devices no running job holds are unloaded, each once; a fine-tune leaves no evictable
// model on its devices.
TEST(SchedulerWarmTest, RandomPassesNeverOverCommitOrUnloadWhatIsInUse) {
  const std::vector<std::string> keys = {kM13b, kM1b, kM111m, "/m/c|bf16|none"};
  int placed = 0, on_warm = 0, unloaded = 0;
  for (uint32_t seed = 1; seed <= 300; ++seed) {
    std::mt19937 rng(seed);
    auto uniform = [&rng](int64_t lo, int64_t hi) { return std::uniform_int_distribution<int64_t>(lo, hi)(rng); };
    std::vector<AgentView> agents;
    for (int a = 0, n = static_cast<int>(uniform(1, 3)); a < n; ++a) {
      AgentView agent = GpuAgent("gpu-" + std::to_string(a), static_cast<int>(uniform(1, 4)), 0, 1 << 30);
      for (DeviceView& device : agent.devices) {
        device.free_mib = uniform(0, 60000);
        device.shareable = uniform(0, 1) == 1;
        if (uniform(0, 9) < 3) device.jobs = {1000 + a * 10 + device.index};
        std::vector<std::string> loaded = keys;  // a device holds a model once
        std::shuffle(loaded.begin(), loaded.end(), rng);
        for (int w = 0, m = static_cast<int>(uniform(0, 3)); w < m; ++w) {
          device.warm.push_back(Warm(loaded[static_cast<size_t>(w)], uniform(1000, 30000), uniform(0, 100000),
                                     uniform(0, 4) == 0 ? 1 : 0, uniform(0, 9) == 0));
        }
      }
      agents.push_back(std::move(agent));
    }
    std::vector<JobRequest> queue;
    for (int64_t id = 1, n = uniform(1, 20); id <= n; ++id) {
      if (uniform(0, 2) == 0) {
        queue.push_back(Finetune(id, static_cast<int>(uniform(1, 2)), uniform(5000, 60000)));
      } else {
        const int64_t device_mib = uniform(2000, 40000);
        queue.push_back(
            Inference(id, keys[static_cast<size_t>(uniform(0, 3))], device_mib, device_mib - uniform(100, 2000)));
      }
      queue.back().shareable = uniform(0, 3) == 0;
    }
    const PassResult result = Schedule(queue, agents, {}, kNow);

    // Replay: free memory, unloaded and busy models, per (agent, device).
    std::map<std::pair<std::string, int>, int64_t> free;
    std::set<std::tuple<std::string, int, std::string>> evicted, busy;
    for (const AgentView& agent : agents) {
      for (const DeviceView& device : agent.devices) free[{agent.worker_id, device.index}] = device.free_mib;
    }
    for (const Placement& p : result.placements) {
      const JobRequest& job = queue[static_cast<size_t>(p.job_id - 1)];
      const AgentView& agent = *std::find_if(agents.begin(), agents.end(),
                                             [&](const AgentView& a) { return a.worker_id == p.worker_id; });
      for (const auto& [index, key] : p.evict) {
        const DeviceView& device = agent.devices[static_cast<size_t>(index)];
        const auto warm = std::find_if(device.warm.begin(), device.warm.end(),
                                       [&](const WarmView& w) { return w.key == key; });
        ASSERT_NE(warm, device.warm.end()) << "seed " << seed;
        EXPECT_EQ(warm->active, 0) << "seed " << seed;
        EXPECT_FALSE(warm->pinned) << "seed " << seed;
        EXPECT_NE(key, job.warm_key) << "seed " << seed;
        EXPECT_TRUE(device.jobs.empty()) << "seed " << seed;
        EXPECT_TRUE(evicted.insert({agent.worker_id, index, key}).second) << "seed " << seed;
        EXPECT_FALSE(busy.count({agent.worker_id, index, key})) << "seed " << seed;
        free[{agent.worker_id, index}] += warm->mib;
        ++unloaded;
      }
      ++placed;
      const MemoryOption& option = job.options()[static_cast<size_t>(p.option)];
      for (int index : p.device_indices) {
        const DeviceView& device = agent.devices[static_cast<size_t>(index)];
        const bool warm = !job.warm_key.empty() &&
                          std::any_of(device.warm.begin(), device.warm.end(), [&](const WarmView& w) {
                            return w.key == job.warm_key && !evicted.count({agent.worker_id, index, w.key});
                          });
        if (warm) busy.insert({agent.worker_id, index, job.warm_key});
        on_warm += warm;
        int64_t& left = free[{agent.worker_id, index}];
        left -= warm ? option.device_mib - option.weights_mib : option.device_mib;
        EXPECT_GE(left, 0) << "seed " << seed << " job " << p.job_id << " device " << index;
        if (job.warm_key.empty() && !job.shareable) {
          for (const WarmView& w : device.warm) {
            EXPECT_TRUE(w.active > 0 || w.pinned || evicted.count({agent.worker_id, index, w.key}))
                << "seed " << seed << ": a fine-tune left " << w.key;
          }
        }
      }
    }
  }
  // The passes exercised what they check.
  std::printf("%d placements, %d on a warm model, %d models unloaded\n", placed, on_warm, unloaded);
  EXPECT_GT(on_warm, 50);
  EXPECT_GT(unloaded, 50);
}

TEST(SchedulerWarmTest, FreeMemoryCountsABatchsWeightsOnce) {
  AgentMemory agent;
  agent.worker_id = "gpu-a";
  agent.devices.push_back({0, "cuda", 81920, MemoryReading{30000, 30000}});
  agent.host = HostMemory{200000, MemoryReading{50000, 40000}};
  MemoryOption promise{27000, 30000, "offload none", 26000};
  // Three requests of m13b on its warm rank: 26000 + 3 x 1000 promised on the device, the rank's
  // load once on the host.
  std::vector<Holding> holdings;
  for (int64_t id = 1; id <= 3; ++id) holdings.push_back({id, "gpu-a", {0}, promise, kM13b});
  std::vector<AgentView> views = AgentsWithFreeMemory({agent}, holdings);
  EXPECT_EQ(views[0].devices[0].free_mib, 81920 - 30000);  // the reading (30000) is the larger
  EXPECT_EQ(views[0].host_free_mib, 200000 - 10000 - 40000);
  holdings.push_back({4, "gpu-a", {0}, promise, kM13b});
  holdings.push_back({5, "gpu-a", {0}, promise, kM13b});
  holdings.push_back({6, "gpu-a", {0}, promise, kM13b});
  holdings.push_back({7, "gpu-a", {0}, promise, kM13b});
  views = AgentsWithFreeMemory({agent}, holdings);
  EXPECT_EQ(views[0].devices[0].free_mib, 81920 - 33000);  // 26000 + 7 x 1000
  // Without a warm key each promise counts whole, as before.
  for (Holding& h : holdings) h.warm_key.clear();
  views = AgentsWithFreeMemory({agent}, holdings);
  EXPECT_EQ(views[0].devices[0].free_mib, 81920 - 7 * 27000);
  EXPECT_EQ(views[0].host_free_mib, 200000 - 10000 - 7 * 30000);
}

}  // namespace
}  // namespace fuji::sched
