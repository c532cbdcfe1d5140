// Tests of assignment leases in fake time and of the retry decision for jobs of a lost agent.
#include <gtest/gtest.h>

#include "daemon/scheduler/lease_table.h"

namespace fuji::sched {
namespace {

constexpr int64_t kTtlMs = 15'000;

TEST(LeaseTableTest, HeartbeatsKeepLeasesAliveAndSilenceExpiresThem) {
  LeaseTable leases;
  leases.Grant(1, "node-a", 0, kTtlMs);
  leases.Grant(2, "node-a", 1'000, kTtlMs);
  leases.Grant(3, "node-b", 0, kTtlMs);
  EXPECT_TRUE(leases.Expired(14'999).empty());

  EXPECT_EQ(leases.Renew("node-b", 10'000, kTtlMs), 1);
  EXPECT_EQ(leases.Renew("node-c", 10'000, kTtlMs), 0);
  const std::vector<ExpiredLease> expired = leases.Expired(15'000);
  ASSERT_EQ(expired.size(), 1u);
  EXPECT_EQ(expired[0].job_id, 1);
  EXPECT_EQ(expired[0].worker_id, "node-a");
  EXPECT_EQ(expired[0].Reason(), "agent node-a lost (no heartbeat for 15 s)");

  // Expired leases stay until the daemon releases them.
  const std::vector<ExpiredLease> later = leases.Expired(16'500);
  ASSERT_EQ(later.size(), 2u);
  EXPECT_EQ(later[0].Reason(), "agent node-a lost (no heartbeat for 16.5 s)");
  EXPECT_EQ(later[1].job_id, 2);
  EXPECT_EQ(later[1].Reason(), "agent node-a lost (no heartbeat for 15.5 s)");
  leases.Release(1);
  leases.Release(2);
  leases.Release(42);  // unknown: ignored
  EXPECT_TRUE(leases.Expired(16'500).empty());
  EXPECT_EQ(leases.size(), 1u);
  EXPECT_EQ(leases.Expired(25'000).at(0).job_id, 3);
}

TEST(LeaseTableTest, AGrantReplacesTheJobsEarlierLease) {
  LeaseTable leases;
  leases.Grant(1, "node-a", 0, kTtlMs);
  leases.Grant(1, "node-b", 10'000, kTtlMs);
  EXPECT_EQ(leases.size(), 1u);
  EXPECT_EQ(leases.Renew("node-a", 20'000, kTtlMs), 0);
  const std::vector<ExpiredLease> expired = leases.Expired(25'000);
  ASSERT_EQ(expired.size(), 1u);
  EXPECT_EQ(expired[0].worker_id, "node-b");
}

TEST(RetryDecisionTest, RequeuesUntilTheBudgetIsSpent) {
  const std::string lost = "agent node-a lost (no heartbeat for 15 s)";
  const RetryDecision retry = DecideRetry(lost, 1, 3);
  EXPECT_TRUE(retry.requeue);
  EXPECT_EQ(retry.reason, "agent node-a lost (no heartbeat for 15 s); requeued for attempt 2 of 3");

  const RetryDecision last = DecideRetry(lost, 3, 3);
  EXPECT_FALSE(last.requeue);
  EXPECT_EQ(last.reason, "agent node-a lost (no heartbeat for 15 s); retries exhausted (3 of 3)");

  EXPECT_FALSE(DecideRetry(lost, 1, 1).requeue);
}

}  // namespace
}  // namespace fuji::sched
