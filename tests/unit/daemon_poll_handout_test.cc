// PollHandout on fake time: a poll is answered at once with what is pending, else on delivery or
// when its wait (capped) is over; a newer poll of the same agent ends the older one; a withdrawn
// job is never handed out; once draining every poll is answered at once.
#include <optional>
#include <vector>

#include <gtest/gtest.h>

#include "daemon/server/poll_handout.h"

namespace fuji::daemon {
namespace {

v1::Assignment Job(int64_t id) {
  v1::Assignment assignment;
  assignment.set_job_id(id);
  return assignment;
}

std::vector<int64_t> Ids(const std::vector<v1::Assignment>& batch) {
  std::vector<int64_t> ids;
  for (const v1::Assignment& a : batch) ids.push_back(a.job_id());
  return ids;
}

class PollHandoutTest : public ::testing::Test {
 protected:
  // A poll whose answer lands in `got`.
  void Poll(const std::string& worker, int64_t wait_ms, std::optional<std::vector<int64_t>>* got) {
    handout_.Poll(worker, wait_ms, [got](std::vector<v1::Assignment> batch) { *got = Ids(batch); });
  }

  store::FakeClock clock_;
  PollHandout handout_{&clock_, /*max_wait_ms=*/1000};
};

TEST_F(PollHandoutTest, APollTakesWhatIsPendingAtOnce) {
  handout_.Add("node-a", Job(1));
  handout_.Add("node-a", Job(2));
  handout_.Add("node-b", Job(3));
  EXPECT_TRUE(handout_.IsPending("node-a", 1));
  EXPECT_FALSE(handout_.IsPending("node-a", 3));
  std::optional<std::vector<int64_t>> got;
  Poll("node-a", 500, &got);
  ASSERT_TRUE(got.has_value());
  EXPECT_EQ(*got, (std::vector<int64_t>{1, 2}));
  EXPECT_FALSE(handout_.IsPending("node-a", 1));
  EXPECT_TRUE(handout_.IsPending("node-b", 3));
}

TEST_F(PollHandoutTest, AWaitingPollGetsWhatIsDeliveredOrNothingAtItsCappedDeadline) {
  std::optional<std::vector<int64_t>> got;
  Poll("node-a", 500, &got);
  handout_.Add("node-a", Job(7));
  EXPECT_FALSE(got.has_value());  // added, not delivered yet
  handout_.Deliver("node-b");
  EXPECT_FALSE(got.has_value());
  handout_.Deliver("node-a");
  ASSERT_TRUE(got.has_value());
  EXPECT_EQ(*got, (std::vector<int64_t>{7}));

  // Asked to wait an hour, it waits max_wait_ms.
  got.reset();
  Poll("node-a", 3'600'000, &got);
  clock_.AdvanceMs(999);
  handout_.ExpirePolls();
  EXPECT_FALSE(got.has_value());
  clock_.AdvanceMs(1);
  handout_.ExpirePolls();
  ASSERT_TRUE(got.has_value());
  EXPECT_TRUE(got->empty());
}

TEST_F(PollHandoutTest, ANewerPollEndsTheOlderOneAndAPollThatDoesNotWaitIsAnsweredAtOnce) {
  std::optional<std::vector<int64_t>> older;
  std::optional<std::vector<int64_t>> newer;
  Poll("node-a", 500, &older);
  Poll("node-a", 500, &newer);
  ASSERT_TRUE(older.has_value());
  EXPECT_TRUE(older->empty());
  EXPECT_FALSE(newer.has_value());

  std::optional<std::vector<int64_t>> now;
  Poll("node-b", 0, &now);
  ASSERT_TRUE(now.has_value());
  EXPECT_TRUE(now->empty());
}

TEST_F(PollHandoutTest, AWithdrawnJobIsNeverHandedOut) {
  handout_.Add("node-a", Job(1));
  handout_.Add("node-a", Job(2));
  handout_.Withdraw(1);
  EXPECT_FALSE(handout_.IsPending("node-a", 1));
  std::optional<std::vector<int64_t>> got;
  Poll("node-a", 500, &got);
  ASSERT_TRUE(got.has_value());
  EXPECT_EQ(*got, (std::vector<int64_t>{2}));
}

TEST_F(PollHandoutTest, DrainingAnswersEveryPollAtOnce) {
  std::optional<std::vector<int64_t>> waiting;
  Poll("node-a", 500, &waiting);
  handout_.Drain();
  ASSERT_TRUE(waiting.has_value());
  EXPECT_TRUE(waiting->empty());
  std::optional<std::vector<int64_t>> later;
  Poll("node-b", 500, &later);
  ASSERT_TRUE(later.has_value());
  EXPECT_TRUE(later->empty());
}

}  // namespace
}  // namespace fuji::daemon
