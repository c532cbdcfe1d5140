// fujid's plans of an inference job as the scheduler sees them: every inference option carries
// weights_mib (what a warm rank of its model already holds: on a GPU the weights and the rank's
// KV pool), ReadPlan takes it into MemoryOption
// and refuses one out of range, and with the planner's real numbers 16 requests of 13B batch on
// the one GPU that has the model loaded.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "daemon/scheduler/scheduler.h"
#include "daemon/server/job_plans.h"
#include "daemon/server/node_rates.h"

namespace fuji::daemon {
namespace {

nlohmann::json InferSpec(const std::string& model, const std::string& device, const std::string& precision) {
  return {{"model", model},         {"prompt_ids", std::vector<int>(10, 7)}, {"max_new_tokens", 54},
          {"device", device},       {"precision", precision},                {"offload", "auto"}};
}

TEST(SchedulerJobPlansTest, InferenceOptionsCarryTheirWeights) {
  NodeRates rates;
  Result<std::string> plans = PlanJob(store::JobKind::kInfer, InferSpec("13b", "cuda", "bf16"), 1, rates);
  ASSERT_TRUE(plans.ok()) << plans.status().message();
  const nlohmann::json j = nlohmann::json::parse(*plans);
  ASSERT_EQ(j["options"].size(), 2u);
  for (const nlohmann::json& option : j["options"]) {
    // All but the request's activations: the rank's KV pool (4 GiB) is loaded with the weights.
    const int64_t request = option["device_mib"].get<int64_t>() - option["weights_mib"].get<int64_t>();
    EXPECT_GE(request, 1) << option.dump();
    EXPECT_LE(request, 50) << option.dump();
    EXPECT_GE(option["weights_mib"].get<int64_t>(), 4096) << option.dump();
  }
  std::shared_ptr<const sched::MemoryPlans> read = ReadPlans(*plans);
  ASSERT_TRUE(read);
  EXPECT_EQ(read->options[0].weights_mib, j["options"][0]["weights_mib"].get<int64_t>());
  // Requests with equal plans share one object: a pass knows them by it.
  EXPECT_EQ(ReadPlans(std::string(*plans)).get(), read.get());
  // On a CPU, of the host's memory.
  plans = PlanJob(store::JobKind::kInfer, InferSpec("111m", "cpu", "fp32"), 1, rates);
  ASSERT_TRUE(plans.ok()) << plans.status().message();
  read = ReadPlans(*plans);
  ASSERT_TRUE(read);
  EXPECT_EQ(read->options[0].device_mib, 0);
  EXPECT_GT(read->options[0].weights_mib, 0);
  EXPECT_LT(read->options[0].weights_mib, read->options[0].host_mib);
  // Fine-tunes have none.
  const nlohmann::json finetune = {{"model", "111m"}, {"data", "/tmp/x.txt"}, {"device", "cpu"}};
  plans = PlanJob(store::JobKind::kFinetune, finetune, 1, rates);
  ASSERT_TRUE(plans.ok()) << plans.status().message();
  EXPECT_FALSE(nlohmann::json::parse(*plans)["options"][0].contains("weights_mib"));
}

TEST(SchedulerJobPlansTest, ReadPlanRefusesWeightsOutOfRange) {
  EXPECT_EQ(ReadPlan(std::string(R"({"device_mib": 100, "host_mib": 50, "weights_mib": 90})"))->weights_mib, 90);
  EXPECT_EQ(ReadPlan(std::string(R"({"device_mib": 0, "host_mib": 50, "weights_mib": 40})"))->weights_mib, 40);
  EXPECT_EQ(ReadPlan(std::string(R"({"device_mib": 100, "host_mib": 50})"))->weights_mib, 0);
  EXPECT_FALSE(ReadPlan(std::string(R"({"device_mib": 100, "host_mib": 50, "weights_mib": 101})")));
  EXPECT_FALSE(ReadPlan(std::string(R"({"device_mib": 0, "host_mib": 50, "weights_mib": 51})")));
  EXPECT_FALSE(ReadPlan(std::string(R"({"device_mib": 100, "host_mib": 50, "weights_mib": -1})")));
  EXPECT_FALSE(ReadPlan(std::string(R"({"device_mib": 100, "host_mib": 50, "weights_mib": "90"})")));
  EXPECT_FALSE(ReadPlans(R"({"options": [{"device_mib": 100, "host_mib": 50, "weights_mib": 1.5}]})"));
}

TEST(SchedulerJobPlansTest, SixteenRequestsOfThirteenBillionBatchOnItsWarmGpu) {
  NodeRates rates;
  Result<std::string> plans = PlanJob(store::JobKind::kInfer, InferSpec("13b", "cuda", "bf16"), 1, rates);
  ASSERT_TRUE(plans.ok()) << plans.status().message();
  std::shared_ptr<const sched::MemoryPlans> read = ReadPlans(*plans);
  ASSERT_TRUE(read);
  const sched::MemoryOption& resident = read->options[0];  // offload none, the fastest
  ASSERT_EQ(resident.label, "offload none");
  // A 40 GiB GPU holding the model: its free memory is what the weights leave, one more copy of
  // which does not fit.
  sched::AgentView agent;
  agent.worker_id = "a100";
  agent.device_kind = "cuda";
  agent.host_total_mib = agent.host_free_mib = 65536;
  const int64_t free_mib = 40960 - resident.weights_mib;
  ASSERT_LT(free_mib, resident.device_mib);
  agent.devices.push_back(
      {0, 40960, free_mib, {}, true, {{"/m/13b|bf16|none", resident.weights_mib, 30000, 0, false}}});
  std::vector<sched::JobRequest> queue;
  for (int64_t id = 1; id <= 16; ++id) {
    sched::JobRequest job;
    job.id = id;
    job.device_kind = "cuda";
    job.plans = read;
    job.warm_key = "/m/13b|bf16|none";
    queue.push_back(job);
  }
  const sched::PassResult result = sched::Schedule(queue, {agent}, {}, 1000);
  ASSERT_EQ(result.placements.size(), 16u);
  for (const sched::Placement& p : result.placements) EXPECT_EQ(p.option, 0);
}

}  // namespace
}  // namespace fuji::daemon
