// fujid's small pieces: the watchers' event hub and the Status -> gRPC code mapping.
#include <gtest/gtest.h>

#include "daemon/server/event_hub.h"
#include "daemon/server/grpc_status.h"

namespace fuji::daemon {
namespace {

TEST(EventHubTest, DeliversToTheJobsSubscribersUntilTheyLeave) {
  EventHub hub;
  int seen_a = 0, seen_b = 0;
  int64_t a = hub.Subscribe(1, [&](const EventHub::Event&) { ++seen_a; });
  hub.Subscribe(2, [&](const EventHub::Event&) { ++seen_b; });
  EXPECT_TRUE(hub.HasSubscribers(1));
  EXPECT_FALSE(hub.HasSubscribers(3));
  hub.Publish(1, EventHub::Event{});
  hub.Publish(3, EventHub::Event{});
  EXPECT_EQ(seen_a, 1);
  EXPECT_EQ(seen_b, 0);
  hub.Unsubscribe(a);
  hub.Publish(1, EventHub::Event{});
  EXPECT_EQ(seen_a, 1);
  EXPECT_FALSE(hub.HasSubscribers(1));
}

TEST(GrpcStatusTest, MapsCodesAndKeepsMessages) {
  EXPECT_TRUE(ToGrpcStatus(Status::Ok()).ok());
  grpc::Status status = ToGrpcStatus(InvalidArgument("field 'max_new_tokens' is negative"));
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(status.error_message(), "field 'max_new_tokens' is negative");
  EXPECT_EQ(ToGrpcStatus(NotFound("x")).error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(ToGrpcStatus(FailedPrecondition("x")).error_code(),
            grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_EQ(ToGrpcStatus(ResourceExhausted("x")).error_code(),
            grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_EQ(ToGrpcStatus(DataLoss("x")).error_code(), grpc::StatusCode::DATA_LOSS);
}

TEST(GrpcStatusTest, DeviceKindComesFromTheSpec) {
  EXPECT_EQ(DeviceKindOfSpec(R"({"device":"cuda:1"})"), "cuda");
  EXPECT_EQ(DeviceKindOfSpec(R"({"device":"cuda"})"), "cuda");
  EXPECT_EQ(DeviceKindOfSpec(R"({"device":"cpu"})"), "cpu");
  EXPECT_EQ(DeviceKindOfSpec(R"({})"), "cpu");
}

}  // namespace
}  // namespace fuji::daemon
