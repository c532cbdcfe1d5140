// Host-memory samples built from /proc for a live child process.
#include <sys/wait.h>
#include <unistd.h>

#include <csignal>
#include <cstdlib>

#include <gtest/gtest.h>

#include "worker/agent/samples.h"

namespace fuji::agent {
namespace {

TEST(AgentSamplesTest, HostSampleCountsTheChildsResidentMemory) {
  int ready[2];
  ASSERT_EQ(::pipe(ready), 0);
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    // Touch 64 MiB so that it is resident, say so, and wait to be killed.
    const size_t bytes = size_t{64} << 20;
    // volatile: the writes must happen (an unused malloc + memset may be optimized away).
    volatile char* p = static_cast<volatile char*>(std::malloc(bytes));
    for (size_t i = 0; i < bytes; i += 4096) p[i] = 1;
    char c = 'r';
    if (::write(ready[1], &c, 1) != 1) ::_exit(1);
    for (;;) ::pause();
  }
  ::close(ready[1]);
  char c = 0;
  ASSERT_EQ(::read(ready[0], &c, 1), 1);
  ::close(ready[0]);

  const fuji::v1::MemorySample s = HostSample({child}, "node-a", 1234);
  ::kill(child, SIGKILL);
  ::waitpid(child, nullptr, 0);

  EXPECT_EQ(s.at_ms(), 1234);
  EXPECT_EQ(s.worker_id(), "node-a");
  EXPECT_TRUE(s.host_memory());
  EXPECT_EQ(s.device_index(), -1);
  EXPECT_EQ(s.device_name(), "host memory");
  EXPECT_GE(s.process_mib(), 60);
  EXPECT_LT(s.process_mib(), 1024);
  EXPECT_GT(s.total_mib(), 0);
  EXPECT_GT(s.used_mib(), 0);
  EXPECT_LE(s.used_mib(), s.total_mib());
  EXPECT_EQ(s.utilization_pct(), 0);
}

TEST(AgentSamplesTest, GoneProcessCountsZero) {
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) ::_exit(0);
  ::waitpid(child, nullptr, 0);
  EXPECT_EQ(HostSample({child}, "n", 0).process_mib(), 0);
}

}  // namespace
}  // namespace fuji::agent
