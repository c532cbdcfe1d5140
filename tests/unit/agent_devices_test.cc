// The --devices, --gang-ports and --advertise-addr flags, NVML loading when the library is absent,
// and the CPU devices offered instead.
#include <gtest/gtest.h>

#include "worker/agent/agent_config.h"
#include "worker/agent/devices.h"
#include "lib/common/proc_stats.h"

namespace fuji::agent {
namespace {

TEST(AgentDevicesTest, ParsesAutoAndCpuCounts) {
  auto a = ParseDeviceFlag("auto");
  ASSERT_TRUE(a.ok());
  EXPECT_TRUE(a->auto_detect);
  EXPECT_EQ(a->cpu_count, 1);
  auto c = ParseDeviceFlag("cpu:4");
  ASSERT_TRUE(c.ok());
  EXPECT_FALSE(c->auto_detect);
  EXPECT_EQ(c->cpu_count, 4);
}

TEST(AgentDevicesTest, RejectsBadValuesClearly) {
  for (const char* bad : {"", "gpu", "cpu", "cpu:", "cpu:0", "cpu:-1", "cpu:x", "cpu:4x", "cpu:99999", "AUTO",
                          "cuda:0"}) {
    SCOPED_TRACE(bad);
    auto r = ParseDeviceFlag(bad);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
    EXPECT_NE(r.status().message().find("expected 'auto' or 'cpu:N'"), std::string::npos) << r.status().message();
  }
}

// --gang-ports LO-HI and --advertise-addr (agent_config.h).
TEST(AgentDevicesTest, ParsesGangPortsAndAdvertisedAddresses) {
  auto p = ParseGangPorts("29400-29499");
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(p->first, 29400);
  EXPECT_EQ(p->second, 29499);
  auto one = ParseGangPorts("7000-7000");
  ASSERT_TRUE(one.ok());
  EXPECT_EQ(one->first, 7000);
  for (const char* bad :
       {"", "29400", "-", "29499-29400", "0-10", "1-65536", "a-b", "1-2-3", "123456-123457", " 1-2"}) {
    SCOPED_TRACE(bad);
    auto r = ParseGangPorts(bad);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
    EXPECT_NE(r.status().message().find("--gang-ports: expected LO-HI"), std::string::npos) << r.status().message();
  }
  for (const char* good : {"", "10.0.0.1", "node-a.example.com", "fd00::1"}) {
    EXPECT_TRUE(CheckAdvertiseAddr(good).ok()) << good;
  }
  for (const std::string& bad : {std::string("10.0.0.1 "), std::string("a;b"), std::string("-x"), std::string(300, 'a'),
                                 std::string("node/a")}) {
    auto s = CheckAdvertiseAddr(bad);
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << bad;
    EXPECT_NE(s.message().find("--advertise-addr"), std::string::npos);
  }
}

TEST(AgentDevicesTest, AbsentNvmlSaysNoNvml) {
  auto loaded = nvml::Nvml::Load("libnvidia-ml-absent-for-fuji-test.so.1");
  ASSERT_FALSE(loaded.ok());
  EXPECT_EQ(loaded.status().code(), StatusCode::kUnavailable);
  EXPECT_EQ(loaded.status().message().rfind("no NVML", 0), 0u) << loaded.status().message();
}

TEST(AgentDevicesTest, AutoWithoutNvmlOffersOneCpuDevice) {
  DeviceInventory inv = DiscoverDevices(DeviceFlag{}, "libnvidia-ml-absent-for-fuji-test.so.1");
  EXPECT_FALSE(inv.is_cuda());
  EXPECT_EQ(inv.note.rfind("no NVML", 0), 0u) << inv.note;
  ASSERT_EQ(inv.devices.size(), 1u);
  const auto& d = inv.devices[0];
  EXPECT_EQ(d.index(), 0);
  EXPECT_EQ(d.kind(), "cpu");
  EXPECT_EQ(d.name(), "cpu (host memory)");
  EXPECT_EQ(d.total_mib(), ReadHostMemory().total_bytes / (1024 * 1024));
  EXPECT_GT(d.total_mib(), 0);
}

TEST(AgentDevicesTest, CpuFlagOffersNDevicesWithoutTouchingNvml) {
  DeviceFlag flag;
  flag.auto_detect = false;
  flag.cpu_count = 4;
  DeviceInventory inv = DiscoverDevices(flag, "libnvidia-ml.so.1");
  EXPECT_FALSE(inv.is_cuda());
  ASSERT_EQ(inv.devices.size(), 4u);
  for (int i = 0; i < 4; ++i) {
    EXPECT_EQ(inv.devices[i].index(), i);
    EXPECT_EQ(inv.devices[i].kind(), "cpu");
  }
}

}  // namespace
}  // namespace fuji::agent
