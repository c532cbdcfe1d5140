// Memory-aware placement through fujid: the plans of a submitted job come from the memory planner;
// a pass picks the fastest plan that fits the free memory the agent reported (device and host
// samples in Register and Heartbeat), records it on the job and hands the agent a spec with that
// plan; a job that fits no agent is refused at submit with the numbers; jobs share a GPU only
// when each allows it.
#include <limits>
#include <string>
#include <vector>

#include "tests/integration/fujid_test_util.h"
#include "lib/plan/plan.h"

namespace fuji::testing {
namespace {

using ::testing::ContainsRegex;
using ::testing::HasSubstr;

constexpr int64_t kMiB = int64_t{1} << 20;

class FujidPlacementTest : public FujidTest {
 protected:
  void SetUp() override {
    FujidTest::SetUp();
    std::ofstream(dir_ + "/corpus.txt") << "Mt. Fuji is the highest mountain in Japan.\n";
    // Cerebras-GPT 1.3B and 13B shapes (configs only: the planner needs no weights).
    WriteConfig("m1p3b", 24, 2048, 16);
    WriteConfig("m13b", 40, 5120, 40);
    StartServer();
  }

  void WriteConfig(const std::string& name, int layers, int width, int heads) {
    std::system(("mkdir -p " + dir_ + "/" + name).c_str());
    std::ofstream(dir_ + "/" + name + "/config.json")
        << nlohmann::json({{"n_layer", layers}, {"n_embd", width}, {"n_head", heads}, {"n_inner", 4 * width},
                           {"n_positions", 2048}, {"vocab_size", 50257}})
               .dump();
  }

  // The node's memory as an agent reports it: the host, then each GPU with `used_mib` in use by
  // other programs.
  static void AddSamples(google::protobuf::RepeatedPtrField<v1::MemorySample>* samples, int gpus,
                         int64_t gpu_total_mib, int64_t gpu_used_mib, int64_t host_total_mib,
                         int64_t host_used_mib) {
    v1::MemorySample* host = samples->Add();
    host->set_device_index(-1);
    host->set_host_memory(true);
    host->set_total_mib(host_total_mib);
    host->set_used_mib(host_used_mib);
    host->set_at_ms(1);
    for (int i = 0; i < gpus; ++i) {
      v1::MemorySample* gpu = samples->Add();
      gpu->set_device_index(i);
      gpu->set_total_mib(gpu_total_mib);
      gpu->set_used_mib(gpu_used_mib);
      gpu->set_at_ms(1);
    }
  }

  void RegisterGpus(const std::string& worker, int gpus, int64_t gpu_total_mib, int64_t gpu_used_mib,
                    int64_t host_total_mib, int64_t host_used_mib, const v1::Assignment* running = nullptr) {
    grpc::ClientContext context;
    v1::RegisterRequest request;
    request.set_worker_id(worker);
    request.set_host(worker);
    if (running != nullptr) {
      request.add_running()->set_job_id(running->job_id());
      request.mutable_running(0)->set_attempt(running->attempt());
      request.mutable_running(0)->set_lease_epoch(running->lease_epoch());
    }
    for (int i = 0; i < gpus; ++i) {
      v1::Device* device = request.add_devices();
      device->set_index(i);
      device->set_name("NVIDIA A100-SXM4-40GB");
      device->set_total_mib(gpu_total_mib);
      device->set_kind("cuda");
    }
    AddSamples(request.mutable_samples(), gpus, gpu_total_mib, gpu_used_mib, host_total_mib, host_used_mib);
    v1::RegisterResponse response;
    AsWorker(&context, request.worker_id());
    ASSERT_TRUE(workers_->Register(&context, request, &response).ok());
  }

  void Heartbeat(const std::string& worker, int gpus, int64_t gpu_total_mib, int64_t gpu_used_mib,
                 int64_t host_total_mib, int64_t host_used_mib) {
    grpc::ClientContext context;
    v1::HeartbeatRequest request;
    request.set_worker_id(worker);
    AddSamples(request.mutable_samples(), gpus, gpu_total_mib, gpu_used_mib, host_total_mib, host_used_mib);
    v1::HeartbeatResponse response;
    AsWorker(&context, request.worker_id());
    ASSERT_TRUE(workers_->Heartbeat(&context, request, &response).ok());
  }

  v1::ListWorkersResponse Workers() {
    grpc::ClientContext context;
    v1::ListWorkersResponse response;
    EXPECT_TRUE(jobs_->ListWorkers(&context, v1::ListWorkersRequest(), &response).ok());
    return response;
  }

  std::string Finetune(const std::string& model, nlohmann::json extra = nlohmann::json::object()) const {
    nlohmann::json spec = {{"model", dir_ + "/" + model}, {"data", dir_ + "/corpus.txt"}, {"device", "cuda"},
                           {"precision", "bf16"}, {"seq_len", 2048}, {"zero", "auto"}, {"offload", "auto"}};
    spec.update(extra);
    return spec.dump();
  }

  std::string Inference(const std::string& model, nlohmann::json extra = nlohmann::json::object()) const {
    nlohmann::json spec = {{"model", dir_ + "/" + model}, {"prompt", "There are famous mountain like Mt.Fuji"},
                           {"device", "cuda"}, {"precision", "bf16"}, {"offload", "auto"}};
    spec.update(extra);
    return spec.dump();
  }

  grpc::Status SubmitShared(const std::string& spec, v1::Job* job, bool shareable) {
    grpc::ClientContext context;
    v1::SubmitRequest request;
    request.set_kind("infer");
    request.set_spec_json(spec);
    request.set_shareable(shareable);
    v1::SubmitResponse response;
    grpc::Status status = jobs_->Submit(&context, request, &response);
    *job = response.job();
    return status;
  }

  // Ends an attempt: succeeded with failure_kind "", else failed with it.
  grpc::Status Finish(const std::string& worker, const v1::Assignment& a, const std::string& failure_kind) {
    v1::CompleteRequest request;
    request.set_worker_id(worker);
    request.set_job_id(a.job_id());
    request.set_attempt(a.attempt());
    request.set_lease_epoch(a.lease_epoch());
    request.set_succeeded(failure_kind.empty());
    if (failure_kind.empty()) request.set_result_json("{}");
    request.set_failure_kind(failure_kind);
    return Complete(request);
  }

  // Polls GetJob until its reason contains `text` (or kPatienceMs are up); returns the last view.
  v1::Job WaitForReason(int64_t id, const std::string& text) {
    const auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(kPatienceMs);
    v1::Job job = GetJob(id);
    while (job.reason().find(text) == std::string::npos && std::chrono::steady_clock::now() < end) {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
      job = GetJob(id);
    }
    return job;
  }
};

TEST_F(FujidPlacementTest, PicksThePlanThatFitsTheFreeMemoryAndRecordsIt) {
  // One 40 GiB GPU of which other programs use 39,000 MiB; a 256 GiB host.
  RegisterGpus("gpu-a", 1, 40960, 39000, 262144, 8192);
  v1::Job job;
  ASSERT_TRUE(Submit(Finetune("m1p3b", {{"ranks", 1}}), &job, "finetune").ok());
  // No plan of a 1.3B fine-tune fits 1.9 GiB: it waits, and says for what.
  v1::Job waiting = WaitForReason(job.id(), "free each");
  EXPECT_EQ(waiting.state(), v1::QUEUED);
  EXPECT_THAT(waiting.reason(), HasSubstr("waiting for 1 free cuda device with "));
  EXPECT_THAT(waiting.reason(), HasSubstr("up to 1.9 GiB free per idle device"));
  EXPECT_TRUE(waiting.plan_json().empty());
  EXPECT_TRUE(Poll("gpu-a", 0).assignments().empty());

  // The other programs end: 40 GiB free, and the host's 248 GiB.
  Heartbeat("gpu-a", 1, 40960, 0, 262144, 8192);
  v1::Job placed = WaitForState(job.id(), v1::ASSIGNED);
  ASSERT_EQ(placed.state(), v1::ASSIGNED) << placed.reason();
  const nlohmann::json plan = nlohmann::json::parse(placed.plan_json());

  // The planner's own recommendation for those free bytes.
  plan::PlanRequest request;
  int64_t checkpoint_bytes = 0;
  request.config = plan::ResolveModel(dir_ + "/m1p3b", &checkpoint_bytes).value();
  request.gpus = 1;
  request.precision = "bf16";
  request.seq_len = 2048;
  request.gpu_memory_bytes = 40960 * kMiB;
  request.host_memory_bytes = (262144 - 8192) * kMiB;
  const std::optional<plan::Plan> best = plan::Recommend(plan::PlanAll(request).value());
  ASSERT_TRUE(best.has_value());
  EXPECT_EQ(plan["zero"], best->zero);
  EXPECT_EQ(plan["offload"], best->offload);
  EXPECT_EQ(plan["gpu_bytes"], best->gpu_bytes);
  EXPECT_EQ(plan["label"], "zero " + std::to_string(best->zero) + ", offload " + best->offload);
  EXPECT_LE(plan["device_mib"].get<int64_t>(), 40960);

  // The agent gets the spec with the plan in place of "auto".
  v1::PollAssignmentsResponse polled = Poll("gpu-a", kPatienceMs);
  ASSERT_EQ(polled.assignments_size(), 1);
  const nlohmann::json spec = nlohmann::json::parse(polled.assignments(0).spec_json());
  EXPECT_EQ(spec["zero"], best->zero);
  EXPECT_EQ(spec["offload"], best->offload);
  // The submitted spec is kept as it was.
  EXPECT_EQ(nlohmann::json::parse(placed.spec_json())["zero"], "auto");

  // The promise counts against the device until the job ends.
  const v1::ListWorkersResponse workers = Workers();
  ASSERT_EQ(workers.workers_size(), 1);
  EXPECT_EQ(workers.workers(0).devices(0).free_mib(), 40960 - plan["device_mib"].get<int64_t>());
  EXPECT_EQ(workers.workers(0).host_free_mib(), 262144 - 8192 - plan["host_mib"].get<int64_t>());
}

TEST_F(FujidPlacementTest, PromisesOutliveADaemonRestart) {
  RegisterGpus("gpu-a", 1, 40960, 0, 262144, 8192);
  v1::Job job;
  ASSERT_TRUE(Submit(Finetune("m1p3b", {{"ranks", 1}}), &job, "finetune").ok());
  ASSERT_EQ(WaitForState(job.id(), v1::ASSIGNED).state(), v1::ASSIGNED);
  const v1::PollAssignmentsResponse polled = Poll("gpu-a", kPatienceMs);
  ASSERT_EQ(polled.assignments_size(), 1);
  const int64_t promised = nlohmann::json::parse(GetJob(job.id()).plan_json())["device_mib"].get<int64_t>();

  StopServer();
  StartServer();
  RegisterGpus("gpu-a", 1, 40960, 0, 262144, 8192, &polled.assignments(0));
  const v1::ListWorkersResponse workers = Workers();
  ASSERT_EQ(workers.workers_size(), 1);
  EXPECT_EQ(workers.workers(0).devices(0).free_mib(), 40960 - promised);
  EXPECT_EQ(GetJob(job.id()).state(), v1::ASSIGNED);
}

TEST_F(FujidPlacementTest, AfterRunningOutOfMemoryTheRetryTakesASmallerPlan) {
  RegisterGpus("gpu-a", 1, 81920, 0, 1048576, 8192);
  grpc::ClientContext context;
  v1::SubmitRequest request;
  request.set_kind("finetune");
  request.set_spec_json(Finetune("m1p3b", {{"ranks", 1}}));
  request.set_max_attempts(20);
  v1::SubmitResponse response;
  ASSERT_TRUE(jobs_->Submit(&context, request, &response).ok());
  const v1::Job job = response.job();
  int64_t last_device_mib = std::numeric_limits<int64_t>::max();
  // Each attempt runs out of GPU memory: each retry is placed with a plan that needs less of it,
  // until none is left and the job fails with the reason.
  for (int attempt = 0;; ++attempt) {
    ASSERT_LT(attempt, 12);
    const v1::Job placed = WaitForState(job.id(), v1::ASSIGNED);
    ASSERT_EQ(placed.state(), v1::ASSIGNED) << placed.reason();
    const int64_t device_mib = nlohmann::json::parse(placed.plan_json())["device_mib"].get<int64_t>();
    EXPECT_LT(device_mib, last_device_mib);
    last_device_mib = device_mib;
    const v1::PollAssignmentsResponse polled = Poll("gpu-a", kPatienceMs);
    ASSERT_EQ(polled.assignments_size(), 1);
    ASSERT_TRUE(Finish("gpu-a", polled.assignments(0), "cuda_oom").ok());
    const v1::Job after = GetJob(job.id());
    if (after.state() == v1::FAILED) {
      EXPECT_THAT(after.reason(), HasSubstr("no plan needs less memory than this one"));
      EXPECT_GE(attempt, 1);
      break;
    }
  }
}

TEST_F(FujidPlacementTest, ImplausibleReadingsAreIgnored) {
  RegisterGpus("gpu-a", 1, 40960, 1000, 262144, 8192);
  // Negative, larger than the total, absurdly large: each is skipped and the last good one stays.
  for (const auto& [gpu_used, host_total] : std::vector<std::pair<int64_t, int64_t>>{
           {-5, 262144}, {50000, 262144}, {1000, int64_t{1} << 62}, {1000, -1}}) {
    Heartbeat("gpu-a", 1, 40960, gpu_used, host_total, 8192);
  }
  const v1::ListWorkersResponse workers = Workers();
  ASSERT_EQ(workers.workers_size(), 1);
  EXPECT_EQ(workers.workers(0).devices(0).free_mib(), 40960 - 1000);
  EXPECT_EQ(workers.workers(0).host_total_mib(), 262144);
  EXPECT_EQ(workers.workers(0).host_free_mib(), 262144 - 8192);
}

TEST_F(FujidPlacementTest, AFixedStageLeavesOnlyTheOffloadToChoose) {
  RegisterGpus("gpu-a", 2, 40960, 0, 262144, 8192);
  v1::Job job;
  ASSERT_TRUE(Submit(Finetune("m1p3b", {{"ranks", 2}, {"zero", 1}}), &job, "finetune").ok());
  const v1::Job placed = WaitForState(job.id(), v1::ASSIGNED);
  ASSERT_EQ(placed.state(), v1::ASSIGNED) << placed.reason();
  EXPECT_EQ(nlohmann::json::parse(placed.plan_json())["zero"], 1);
  // A stage and offload that cannot go together are refused as the ranks would refuse them.
  grpc::Status bad = Submit(Finetune("m1p3b", {{"zero", 1}, {"offload", "params"}}), &job, "finetune");
  EXPECT_EQ(bad.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(bad.error_message(), HasSubstr("params needs zero 3"));
  bad = Submit(Finetune("m1p3b", {{"zero", "sometimes"}}), &job, "finetune");
  EXPECT_EQ(bad.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
}

TEST_F(FujidPlacementTest, RefusesAtSubmitWhatFitsNoAgentWithTheNumbers) {
  // The seed's machines: 40 GiB GPUs, here with a 64 GiB host.
  RegisterGpus("a100", 8, 40960, 0, 65536, 4096);
  v1::Job job;
  grpc::Status status = Submit(Finetune("m13b", {{"ranks", 1}}), &job, "finetune");
  EXPECT_EQ(status.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_THAT(status.error_message(), HasSubstr("m13b fine-tune (12.85B parameters) needs at least "));
  EXPECT_THAT(status.error_message(), HasSubstr(" GiB of host memory (zero 3, offload params)"));
  EXPECT_THAT(status.error_message(), HasSubstr("; the largest agent, a100, has 64.0 GiB"));
  // More GPUs than the agent has.
  status = Submit(Finetune("m1p3b", {{"ranks", 16}}), &job, "finetune");
  EXPECT_EQ(status.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_THAT(status.error_message(), HasSubstr("job needs 16 cuda devices; the largest agent, a100, has 8"));
  // 13B inference in bf16 on one 40 GiB GPU fits (the seed: fp32 did not); it is placed.
  ASSERT_TRUE(Submit(Inference("m13b"), &job).ok());
  const v1::Job placed = WaitForState(job.id(), v1::ASSIGNED);
  ASSERT_EQ(placed.state(), v1::ASSIGNED) << placed.reason();
  EXPECT_EQ(nlohmann::json::parse(placed.plan_json())["offload"], "none");
  // In fp32 its weights alone are 48 GiB: only parameter offload fits the GPU, and it needs one
  // copy of them in host memory (about 51 GiB), which the bf16 job's promise (about 26 GiB)
  // leaves short until that job ends.
  ASSERT_TRUE(Submit(Inference("m13b", {{"precision", "fp32"}}), &job).ok());
  const v1::Job short_of_host = WaitForReason(job.id(), "of host memory free");
  EXPECT_EQ(short_of_host.state(), v1::QUEUED);
  EXPECT_THAT(short_of_host.reason(),
              ContainsRegex("and 5[0-9]\\.[0-9] GiB of host memory \\(its smallest plan: offload params\\)"));
  const v1::PollAssignmentsResponse first = Poll("a100", kPatienceMs);
  ASSERT_EQ(first.assignments_size(), 1);
  ASSERT_TRUE(Finish("a100", first.assignments(0), "").ok());
  const v1::Job offloaded = WaitForState(job.id(), v1::ASSIGNED);
  ASSERT_EQ(offloaded.state(), v1::ASSIGNED) << offloaded.reason();
  EXPECT_EQ(nlohmann::json::parse(offloaded.plan_json())["offload"], "params");
  // No job was written for the refusals.
  EXPECT_EQ(offloaded.id(), placed.id() + 1);
}

// On a CPU device offload is no plan: an explicit one is stored and placed as none, and the job's
// first event says so. CPU jobs are planned with the rates the CPU agent measured.
TEST_F(FujidPlacementTest, ACpuDeviceRunsAnExplicitOffloadAsNoneWithTheNodesRates) {
  grpc::ClientContext context;
  v1::RegisterRequest request;
  request.set_worker_id("cpu-node");
  request.set_host("cpu-node");
  v1::Device* device = request.add_devices();
  device->set_index(0);
  device->set_name("cpu");
  device->set_total_mib(64 * 1024);
  device->set_kind("cpu");
  AddSamples(request.mutable_samples(), 0, 0, 0, 64 * 1024, 1024);
  // A slow node's memory: 1 GB/s, so a decode step of the 1.3B shape in bf16 (2.6 GB) takes 2.6 s.
  request.set_rates_json(R"({"cpu_flops": 5e10, "cpu_memory_bandwidth": 1e9})");
  v1::RegisterResponse response;
  AsWorker(&context, request.worker_id());
  ASSERT_TRUE(workers_->Register(&context, request, &response).ok());

  v1::Job job;
  ASSERT_TRUE(Submit(Inference("m1p3b", {{"device", "cpu"}, {"offload", "params"}}), &job).ok());
  EXPECT_EQ(nlohmann::json::parse(job.spec_json())["offload"], "none");
  const v1::Job placed = WaitForState(job.id(), v1::ASSIGNED);
  ASSERT_EQ(placed.state(), v1::ASSIGNED) << placed.reason();
  const nlohmann::json plan = nlohmann::json::parse(placed.plan_json());
  EXPECT_EQ(plan["offload"], "none");
  EXPECT_NEAR(plan["step_seconds"].get<double>(), 2.63, 0.05);
  auto events = store_->Events(job.id());
  ASSERT_TRUE(events.ok());
  ASSERT_FALSE(events->empty());
  EXPECT_EQ(events->front().message,
            "submitted; offload params runs as offload none on a CPU device: its host and device memory are the "
            "same memory");

  // A fine-tune's explicit optimizer offload too; its stage stays as given.
  ASSERT_TRUE(Submit(Finetune("m1p3b", {{"device", "cpu"}, {"precision", "fp32"}, {"seq_len", 64}, {"zero", 2},
                                        {"offload", "optimizer"}}),
                     &job, "finetune")
                  .ok());
  const nlohmann::json spec = nlohmann::json::parse(job.spec_json());
  EXPECT_EQ(spec["offload"], "none");
  EXPECT_EQ(spec["zero"], 2);
  // An offload that could not run on any device is still refused as before.
  EXPECT_EQ(Submit(Finetune("m1p3b", {{"device", "cpu"}, {"zero", 1}, {"offload", "params"}}), &job, "finetune")
                .error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
}

TEST_F(FujidPlacementTest, JobsShareAGpuOnlyWhenEachAllowsIt) {
  RegisterGpus("gpu-a", 1, 81920, 0, 262144, 8192);
  // Three 1.3B inferences (a few GiB each) that allow sharing go on the one GPU together.
  std::vector<int64_t> ids;
  for (int i = 0; i < 3; ++i) {
    v1::Job job;
    ASSERT_TRUE(SubmitShared(Inference("m1p3b"), &job, true).ok());
    ids.push_back(job.id());
  }
  for (int64_t id : ids) EXPECT_EQ(WaitForState(id, v1::ASSIGNED).state(), v1::ASSIGNED);
  // One that does not allow sharing waits for the GPU to be free of them.
  v1::Job alone;
  ASSERT_TRUE(SubmitShared(Inference("m1p3b"), &alone, false).ok());
  const v1::Job waiting = WaitForReason(alone.id(), "waiting for 1 free cuda device");
  EXPECT_EQ(waiting.state(), v1::QUEUED) << waiting.reason();
  EXPECT_TRUE(GetJob(ids[0]).shareable());
  EXPECT_FALSE(waiting.shareable());
  const v1::PollAssignmentsResponse polled = Poll("gpu-a", kPatienceMs);
  ASSERT_EQ(polled.assignments_size(), 3);
  for (const v1::Assignment& a : polled.assignments()) EXPECT_EQ(a.device_indices(0), 0);
}

}  // namespace
}  // namespace fuji::testing
