// The translation of rank events into report entries (HandleEvent): a finetune's progress keeps
// its loss and tokens/s, an inference's has neither, losses come from rank 0 only.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "worker/agent/agent_job.h"

namespace fuji::agent {
namespace {

fuji::v1::JobReport Handle(const nlohmann::json& event, int32_t rank) {
  fuji::v1::JobReport part;
  HandleEvent(event, rank, 1000, &part, /*attempt=*/1);
  return part;
}

TEST(AgentEventsTest, FinetuneProgressKeepsLossAndTokensPerSecond) {
  auto part = Handle(nlohmann::json::parse(R"({"event":"progress","id":"7","phase":"train","done":3,
      "total":30,"loss":4.25,"tokens_per_s":1234.5})"), 0);
  ASSERT_EQ(part.progress_size(), 1);
  const fuji::v1::Progress& p = part.progress(0);
  EXPECT_EQ(p.phase(), "train");
  EXPECT_EQ(p.done(), 3);
  EXPECT_EQ(p.total(), 30);
  EXPECT_EQ(p.rank(), 0);
  EXPECT_DOUBLE_EQ(p.loss(), 4.25);
  EXPECT_DOUBLE_EQ(p.tokens_per_s(), 1234.5);
}

TEST(AgentEventsTest, InferenceProgressHasNoLoss) {
  auto part = Handle(nlohmann::json::parse(R"({"event":"progress","phase":"generate","done":2,"total":8})"), 0);
  ASSERT_EQ(part.progress_size(), 1);
  EXPECT_EQ(part.progress(0).done(), 2);
  EXPECT_EQ(part.progress(0).loss(), 0);
  EXPECT_EQ(part.progress(0).tokens_per_s(), 0);
}

TEST(AgentEventsTest, LossesOfRankZeroOnly) {
  const auto loss = nlohmann::json::parse(R"({"event":"loss","step":5,"loss":3.5,"split":"train","tokens_per_s":99})");
  auto part = Handle(loss, 0);
  ASSERT_EQ(part.losses_size(), 1);
  EXPECT_EQ(part.losses(0).step(), 5);
  EXPECT_DOUBLE_EQ(part.losses(0).loss(), 3.5);
  EXPECT_DOUBLE_EQ(part.losses(0).tokens_per_s(), 99);
  EXPECT_EQ(Handle(loss, 1).losses_size(), 0);
}

// An event is a rank's own words: a field of another type, or a number that does not fit, reads as
// absent rather than throwing or overflowing (a duration of 1e300 ms once cast to an integer).
TEST(AgentEventsTest, FieldsOfAnotherTypeOrOutOfRangeReadAsAbsent) {
  auto part = Handle(nlohmann::json::parse(R"({"event":"progress","phase":7,"done":1e300,"total":"8","loss":"x"})"), 0);
  ASSERT_EQ(part.progress_size(), 1);
  EXPECT_EQ(part.progress(0).phase(), "");
  EXPECT_EQ(part.progress(0).done(), 0);
  EXPECT_EQ(part.progress(0).total(), 0);
  EXPECT_EQ(part.progress(0).loss(), 0);
  part = Handle(nlohmann::json::parse(R"({"event":"timing","phase":"load","ms":1e300})"), 0);
  ASSERT_EQ(part.timings_size(), 1);
  EXPECT_EQ(part.timings(0).end_ms(), 1000);
  EXPECT_LT(part.timings(0).start_ms(), 1000);
  EXPECT_EQ(Handle(nlohmann::json::parse(R"({"event":["loss"]})"), 0).losses_size(), 0);
}

}  // namespace
}  // namespace fuji::agent
