// Tests of free-memory accounting (daemon/scheduler/free_memory.h) with made-up readings: other
// programs' use and the larger of a job's promise and its ranks' use come off the total; devices
// and hosts never sampled count only promises; a CPU device's memory is its host's; the holders of
// each device are listed whether or not they were promised memory.
#include <gtest/gtest.h>

#include "daemon/scheduler/free_memory.h"

namespace fuji::sched {
namespace {

MemoryOption Promise(int64_t device_mib, int64_t host_mib) {
  MemoryOption option;
  option.device_mib = device_mib;
  option.host_mib = host_mib;
  return option;
}

Holding Holds(int64_t job_id, const std::string& worker_id, std::vector<int> devices,
              std::optional<MemoryOption> promise) {
  return Holding{job_id, worker_id, std::move(devices), promise};
}

AgentMemory GpuAgent(const std::string& worker_id, int devices) {
  AgentMemory agent;
  agent.worker_id = worker_id;
  for (int i = 0; i < devices; ++i) agent.devices.push_back({i, "cuda", 80000, std::nullopt});
  return agent;
}

TEST(FreeMemoryTest, OthersAndTheLargerOfPromiseAndUseComeOffTheTotal) {
  // 10000 used, 4000 of it by fuji's ranks: others use 6000.
  const MemoryReading reading{10000, 4000};
  EXPECT_EQ(FreeMib(80000, reading, 3000), 80000 - 6000 - 4000);  // using more than promised
  EXPECT_EQ(FreeMib(80000, reading, 9000), 80000 - 6000 - 9000);  // still loading
  // A reading whose fuji share exceeds its total use (samples taken apart): others use nothing.
  EXPECT_EQ(FreeMib(80000, MemoryReading{1000, 2000}, 0), 80000 - 2000);
  // Never sampled: only promises count.
  EXPECT_EQ(FreeMib(80000, std::nullopt, 5000), 75000);
}

TEST(FreeMemoryTest, DevicesAndHostsSubtractWhatTheirHoldersWerePromised) {
  AgentMemory agent = GpuAgent("node-a", 2);
  agent.devices[0].reading = MemoryReading{20000, 12000};
  agent.host = HostMemory{512000, MemoryReading{100000, 30000}};
  const std::vector<AgentView> views =
      AgentsWithFreeMemory({agent}, {Holds(7, "node-a", {0, 1}, Promise(16000, 40000)),
                                     Holds(8, "node-a", {1}, Promise(10000, 5000))});
  ASSERT_EQ(views.size(), 1u);
  const AgentView& view = views[0];
  EXPECT_EQ(view.worker_id, "node-a");
  EXPECT_EQ(view.device_kind, "cuda");
  EXPECT_TRUE(view.connected);
  ASSERT_EQ(view.devices.size(), 2u);
  // Device 0: others 8000, promised 16000 > used 12000.
  EXPECT_EQ(view.devices[0].free_mib, 80000 - 8000 - 16000);
  EXPECT_EQ(view.devices[0].jobs, (std::vector<int64_t>{7}));
  // Device 1, never sampled: both promises.
  EXPECT_EQ(view.devices[1].free_mib, 80000 - 16000 - 10000);
  EXPECT_EQ(view.devices[1].jobs, (std::vector<int64_t>{7, 8}));
  EXPECT_TRUE(view.devices[0].shareable);
  // Host: others 70000, promised 45000 > used 30000.
  EXPECT_EQ(view.host_total_mib, 512000);
  EXPECT_EQ(view.host_free_mib, 512000 - 70000 - 45000);
}

TEST(FreeMemoryTest, HoldersWithoutAPlanHoldDevicesButNoMemory) {
  const std::vector<AgentView> views =
      AgentsWithFreeMemory({GpuAgent("node-a", 1)}, {Holds(3, "node-a", {0}, std::nullopt)});
  ASSERT_EQ(views[0].devices.size(), 1u);
  EXPECT_EQ(views[0].devices[0].free_mib, 80000);
  EXPECT_EQ(views[0].devices[0].jobs, (std::vector<int64_t>{3}));
  EXPECT_EQ(views[0].host_free_mib, kUnknownMib);  // a GPU agent's host never sampled
  EXPECT_EQ(views[0].host_total_mib, kUnknownMib);
}

TEST(FreeMemoryTest, ACpuDevicesMemoryIsItsHosts) {
  AgentMemory cpu;
  cpu.worker_id = "laptop";
  cpu.devices.push_back({0, "cpu", 16000, MemoryReading{1000, 0}});
  // Not sampled yet: the device's total stands for the host's.
  std::vector<AgentView> views =
      AgentsWithFreeMemory({cpu}, {Holds(1, "laptop", {0}, Promise(0, 6000))});
  EXPECT_EQ(views[0].device_kind, "cpu");
  EXPECT_EQ(views[0].host_total_mib, 16000);
  EXPECT_EQ(views[0].host_free_mib, 10000);
  EXPECT_EQ(views[0].devices[0].free_mib, 10000);
  // Sampled: the host's reading decides, for the device too.
  cpu.host = HostMemory{32000, MemoryReading{8000, 2000}};
  views = AgentsWithFreeMemory({cpu}, {Holds(1, "laptop", {0}, Promise(0, 6000))});
  EXPECT_EQ(views[0].host_total_mib, 32000);
  EXPECT_EQ(views[0].host_free_mib, 32000 - 6000 - 6000);
  EXPECT_EQ(views[0].devices[0].free_mib, views[0].host_free_mib);
}

TEST(FreeMemoryTest, AgentsKeepTheirOrderAndOnlyTheirOwnHolders) {
  AgentMemory lost = GpuAgent("node-b", 1);
  lost.connected = false;
  AgentMemory empty;
  empty.worker_id = "node-c";
  const std::vector<AgentView> views = AgentsWithFreeMemory(
      {GpuAgent("node-a", 1), lost, empty},
      {Holds(4, "node-b", {0}, Promise(30000, 0)), Holds(5, "node-x", {0}, Promise(1, 1))});
  ASSERT_EQ(views.size(), 3u);
  EXPECT_EQ(views[0].worker_id, "node-a");
  EXPECT_TRUE(views[0].devices[0].jobs.empty());
  EXPECT_EQ(views[0].devices[0].free_mib, 80000);
  EXPECT_EQ(views[1].worker_id, "node-b");
  EXPECT_FALSE(views[1].connected);
  EXPECT_EQ(views[1].devices[0].free_mib, 50000);
  EXPECT_EQ(views[1].devices[0].jobs, (std::vector<int64_t>{4}));
  // No devices: a CPU agent without a device or a host reading knows no memory.
  EXPECT_EQ(views[2].device_kind, "cpu");
  EXPECT_TRUE(views[2].devices.empty());
  EXPECT_EQ(views[2].host_free_mib, kUnknownMib);
}

}  // namespace
}  // namespace fuji::sched
