// Tests of workers, assignments and leases (on a fake clock) and of telemetry in the store.
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "daemon/store/job_store.h"

namespace fuji::store {
namespace {

class StoreWorkersTest : public testing::Test {
 protected:
  void SetUp() override {
    const testing::TestInfo* test = testing::UnitTest::GetInstance()->current_test_info();
    std::string dir = std::string(FUJI_BINARY_DIR) + "/store_workers_test_" +
                      std::to_string(getpid()) + "_" + test->name();
    std::string rm = "rm -rf '" + dir + "'";
    ASSERT_EQ(std::system(rm.c_str()), 0);
    ASSERT_EQ(::mkdir(dir.c_str(), 0755), 0);
    auto store = JobStore::Open(dir + "/fuji.db", &clock_);
    ASSERT_TRUE(store.ok()) << store.status().ToString();
    store_ = std::move(store).value();
    WorkerRecord w1{"w1", "node1",
                    0,    0,
                    "",   {{0, "NVIDIA H100", 81559, "cuda"}, {1, "NVIDIA H100", 81559, "cuda"}}};
    WorkerRecord w2{"w2", "node2", 0, 0, "", {{0, "cpu", 65536, "cpu"}}};
    ASSERT_TRUE(store_->RegisterWorker(w1).ok());
    ASSERT_TRUE(store_->RegisterWorker(w2).ok());
  }

  int64_t MustSubmit(int devices = 1) {
    JobRecord job;
    job.spec = R"({"model":"111M"})";
    job.devices = devices;
    auto id = store_->Submit(job);
    EXPECT_TRUE(id.ok()) << id.status().ToString();
    return id.ok() ? *id : 0;
  }

  static std::vector<int64_t> JobIds(const Result<std::vector<Assignment>>& assignments) {
    EXPECT_TRUE(assignments.ok()) << assignments.status().ToString();
    std::vector<int64_t> ids;
    if (assignments.ok()) {
      for (const Assignment& a : *assignments) ids.push_back(a.job_id);
    }
    return ids;
  }

  FakeClock clock_;
  std::unique_ptr<JobStore> store_;
};

TEST_F(StoreWorkersTest, RegisterHeartbeatAndList) {
  int64_t t0 = clock_.NowMs();
  clock_.AdvanceMs(500);
  ASSERT_TRUE(store_->Heartbeat("w1").ok());
  ASSERT_TRUE(store_->MarkWorkerLost("w2").ok());
  EXPECT_EQ(store_->Heartbeat("nobody").code(), StatusCode::kNotFound);
  auto workers = store_->ListWorkers();
  ASSERT_TRUE(workers.ok()) << workers.status().ToString();
  ASSERT_EQ(workers->size(), 2u);
  const WorkerRecord& w1 = (*workers)[0];
  EXPECT_EQ(w1.id, "w1");
  EXPECT_EQ(w1.registered_at_ms, t0);
  EXPECT_EQ(w1.last_heartbeat_ms, t0 + 500);
  EXPECT_EQ(w1.state, "ONLINE");
  ASSERT_EQ(w1.devices.size(), 2u);
  EXPECT_EQ(w1.devices[1].index, 1);
  EXPECT_EQ(w1.devices[1].total_mib, 81559);
  EXPECT_EQ((*workers)[1].state, "LOST");

  // Re-registering replaces the device list and brings the worker back ONLINE.
  WorkerRecord again{"w2", "node2", 0, 0, "", {}};
  ASSERT_TRUE(store_->RegisterWorker(again).ok());
  workers = store_->ListWorkers();
  EXPECT_EQ((*workers)[1].state, "ONLINE");
  EXPECT_TRUE((*workers)[1].devices.empty());

  WorkerRecord bad{"w3", "node3", 0, 0, "", {{0, "tpu", 1, "tpu"}}};
  EXPECT_EQ(store_->RegisterWorker(bad).code(), StatusCode::kInvalidArgument);
}

TEST_F(StoreWorkersTest, AssignValidatesJobWorkerAndDevices) {
  int64_t two = MustSubmit(2);
  int64_t lease = clock_.NowMs() + 10000;
  EXPECT_EQ(store_->Assign(two, "w1", {0}, lease).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(store_->Assign(two, "w1", {0, 0}, lease).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(store_->Assign(two, "nobody", {0, 1}, lease).code(), StatusCode::kNotFound);
  EXPECT_EQ(store_->Assign(two, "w1", {0, 7}, lease).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(store_->Assign(999, "w1", {0, 1}, lease).code(), StatusCode::kNotFound);
  ASSERT_TRUE(store_->Assign(two, "w1", {0, 1}, lease).ok());
  EXPECT_EQ(store_->Assign(two, "w1", {0, 1}, lease).code(), StatusCode::kFailedPrecondition);
  auto job = store_->Get(two);
  EXPECT_EQ(job->state, JobState::kAssigned);
  EXPECT_EQ(job->worker_id, "w1");
  auto active = store_->ActiveAssignments();
  ASSERT_EQ(active->size(), 1u);
  EXPECT_EQ((*active)[0].device_indices, (std::vector<int>{0, 1}));
  EXPECT_EQ((*active)[0].lease_expires_ms, lease);
}

TEST_F(StoreWorkersTest, LeasesExpireOnTheFakeClock) {
  int64_t a = MustSubmit();
  int64_t b = MustSubmit();
  int64_t c = MustSubmit();
  int64_t now = clock_.NowMs();
  ASSERT_TRUE(store_->Assign(a, "w1", {0}, now + 10000).ok());
  ASSERT_TRUE(store_->Assign(b, "w1", {1}, now + 10000).ok());
  ASSERT_TRUE(store_->Assign(c, "w2", {0}, now + 5000).ok());
  EXPECT_TRUE(JobIds(store_->ExpiredAssignments(clock_.NowMs())).empty());

  clock_.AdvanceMs(6000);
  EXPECT_EQ(JobIds(store_->ExpiredAssignments(clock_.NowMs())), (std::vector<int64_t>{c}));

  auto renewed = store_->RenewLeases("w1", clock_.NowMs() + 10000);
  ASSERT_TRUE(renewed.ok());
  EXPECT_EQ(*renewed, 2);
  clock_.AdvanceMs(6000);  // 12 s after assignment: w1's original leases would have expired
  EXPECT_EQ(JobIds(store_->ExpiredAssignments(clock_.NowMs())), (std::vector<int64_t>{c}));

  // A job that leaves ASSIGNED/RUNNING gives its lease up.
  ASSERT_TRUE(store_->Transition(c, JobState::kAssigned, JobState::kRetrying, "lease lost").ok());
  EXPECT_TRUE(JobIds(store_->ExpiredAssignments(clock_.NowMs())).empty());
  ASSERT_TRUE(store_->Transition(a, JobState::kAssigned, JobState::kRunning, "").ok());
  EXPECT_EQ(JobIds(store_->ActiveAssignments()), (std::vector<int64_t>{a, b}));
  clock_.AdvanceMs(5000);
  EXPECT_EQ(JobIds(store_->ExpiredAssignments(clock_.NowMs())), (std::vector<int64_t>{a, b}));
}

TEST_F(StoreWorkersTest, SamplesBatchRoundTrip) {
  int64_t job = MustSubmit();
  std::vector<MemorySample> batch;
  for (int i = 0; i < 5000; ++i) {
    MemorySample s;
    s.job_id = job;
    s.worker_id = "w1";
    s.device_index = i % 2;
    s.device_name = "NVIDIA H100 80GB HBM3";
    s.used_mib = 4096 + i;
    s.total_mib = 81559;
    s.utilization_pct = i % 100;
    s.process_mib = 4000;
    s.at_ms = 1000 + i;
    batch.push_back(s);
  }
  batch.back().host_memory = true;
  batch.back().device_index = -1;
  ASSERT_TRUE(store_->InsertSamples(batch).ok());
  auto samples = store_->Samples(job);
  ASSERT_TRUE(samples.ok()) << samples.status().ToString();
  ASSERT_EQ(samples->size(), batch.size());
  EXPECT_EQ((*samples)[7].used_mib, 4096 + 7);
  EXPECT_EQ((*samples)[7].device_name, "NVIDIA H100 80GB HBM3");
  EXPECT_EQ((*samples)[7].utilization_pct, 7);
  EXPECT_TRUE(samples->back().host_memory);
  EXPECT_EQ(samples->back().device_index, -1);

  // A batch naming an unknown job is refused whole.
  std::vector<MemorySample> bad(3, batch[0]);
  bad[2].job_id = 12345;
  Status refused = store_->InsertSamples(bad);
  EXPECT_EQ(refused.code(), StatusCode::kFailedPrecondition) << refused.ToString();
  EXPECT_NE(refused.message().find("job 12345"), std::string::npos) << refused.message();
  EXPECT_EQ(store_->Samples(job)->size(), batch.size());
}

TEST_F(StoreWorkersTest, TimingsLossesLogsAndResults) {
  int64_t job = MustSubmit();
  ASSERT_TRUE(
      store_->RecordTimings({{job, 0, 1, "load", 100, 350}, {job, 0, 0, "load", 100, 300}}).ok());
  EXPECT_EQ(store_->RecordTimings({{job, 0, 0, "bad", 10, 5}}).code(),
            StatusCode::kInvalidArgument);
  auto timings = store_->Timings(job);
  ASSERT_EQ(timings->size(), 2u);
  EXPECT_EQ((*timings)[0].rank, 0);
  EXPECT_EQ((*timings)[1].duration_ms(), 250);

  ASSERT_TRUE(store_->RecordLosses({{job, 0, 1, "train", 3.5, 1000, 1},
                                    {job, 0, 2, "train", 3.1, 1100, 2}})
                  .ok());
  // A retry resumed at step 2.
  ASSERT_TRUE(store_->RecordLosses({{job, 1, 2, "train", 3.0, 1200, 3}}).ok());
  auto losses = store_->Losses(job);
  ASSERT_TRUE(losses.ok()) << losses.status().ToString();
  ASSERT_EQ(losses->losses.size(), 2u);
  EXPECT_DOUBLE_EQ(losses->losses[1].loss, 3.0);

  ASSERT_TRUE(
      store_->AppendLogs(job, {{0, 0, 1, "rank0/stdout", "a"}, {0, 0, 2, "rank0/stdout", "b"}})
          .ok());
  ASSERT_TRUE(store_->AppendLogs(job, {{0, 0, 3, "rank0/stderr", "c"}}).ok());
  auto logs = store_->Logs(job, 1);
  ASSERT_TRUE(logs.ok());
  ASSERT_EQ(logs->size(), 2u);
  EXPECT_EQ((*logs)[0].seq, 2);
  EXPECT_EQ((*logs)[1].line, "c");
  EXPECT_EQ((*logs)[1].stream, "rank0/stderr");
  EXPECT_EQ(
      store_->AppendLogs(job, {{0, 0, 4, "x", std::string(JobStore::kMaxLogLineBytes + 1, 'x')}})
          .code(),
      StatusCode::kResourceExhausted);

  ASSERT_TRUE(store_->SaveResult(job, 0, R"({"text":"Mount Everest"})").ok());
  Status twice = store_->SaveResult(job, 0, R"({"text":"K2"})");
  EXPECT_EQ(twice.code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(store_->SaveResult(job, 1, "not json").code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(store_->SaveResult(999, 0, "{}").code(), StatusCode::kNotFound);
  auto results = store_->Results(job);
  ASSERT_EQ(results->size(), 1u);
  EXPECT_EQ((*results)[0].result, R"({"text":"Mount Everest"})");
}

}  // namespace
}  // namespace fuji::store

namespace fuji::store {
namespace {

GangMemberRecord Member(const std::string& worker, int first_rank, std::vector<int> devices, int port = 0) {
  GangMemberRecord m;
  m.worker_id = worker;
  m.advertise_addr = "10.0.0." + worker.substr(1);
  m.first_rank = first_rank;
  m.device_indices = std::move(devices);
  m.port = port;
  return m;
}

TEST_F(StoreWorkersTest, AWorkersGangAddressIsKeptFromItsLatestRegistration) {
  WorkerRecord w3{"w3", "node3", 0, 0, "", {{0, "c", 1, "cpu"}}};
  w3.advertise_addr = "10.0.0.3";
  w3.gang_port_lo = 29400;
  w3.gang_port_hi = 29499;
  ASSERT_TRUE(store_->RegisterWorker(w3).ok());
  auto workers = store_->ListWorkers();
  ASSERT_EQ(workers->size(), 3u);
  EXPECT_EQ((*workers)[2].advertise_addr, "10.0.0.3");
  EXPECT_EQ((*workers)[2].gang_port_lo, 29400);
  EXPECT_EQ((*workers)[2].gang_port_hi, 29499);
  EXPECT_EQ((*workers)[0].advertise_addr, "");
  EXPECT_EQ((*workers)[0].gang_port_hi, 0);
  w3.gang_port_lo = 29500;  // above hi
  EXPECT_EQ(store_->RegisterWorker(w3).code(), StatusCode::kInvalidArgument);
  w3.gang_port_lo = 0;
  w3.gang_port_hi = 0;
  w3.advertise_addr = std::string(256, 'a');
  EXPECT_EQ(store_->RegisterWorker(w3).code(), StatusCode::kInvalidArgument);
  w3.advertise_addr.clear();
  ASSERT_TRUE(store_->RegisterWorker(w3).ok());  // no longer in gangs
  EXPECT_EQ((*store_->ListWorkers())[2].advertise_addr, "");
}

TEST_F(StoreWorkersTest, AGangIsAssignedReadAndReleasedWithItsAttempt) {
  WorkerRecord w3{"w3", "node3", 0, 0, "", {{0, "NVIDIA H100", 81559, "cuda"}, {1, "NVIDIA H100", 81559, "cuda"}}};
  ASSERT_TRUE(store_->RegisterWorker(w3).ok());
  const int64_t job = MustSubmit(4);
  const int64_t lease = clock_.NowMs() + 10000;
  // Refused, writing nothing: one member, ranks out of order, an agent twice, devices not the job's.
  EXPECT_EQ(store_->AssignGang(job, {Member("w1", 0, {0, 1})}, lease).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(store_->AssignGang(job, {Member("w1", 0, {0, 1}), Member("w3", 1, {0, 1})}, lease).code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(store_->AssignGang(job, {Member("w1", 0, {0, 1}), Member("w1", 2, {0, 1})}, lease).code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(store_->AssignGang(job, {Member("w1", 0, {0, 1}), Member("w3", 2, {0})}, lease).code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(store_->AssignGang(job, {Member("w1", 0, {0, 1}), Member("w3", 2, {0, 5})}, lease).code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(store_->AssignGang(job, {Member("w1", 0, {0, 1}, 70000), Member("w3", 2, {0, 1})}, lease).code(),
            StatusCode::kInvalidArgument);
  ASSERT_TRUE(store_->Get(job)->gang.empty());

  ASSERT_TRUE(store_->AssignGang(job, {Member("w1", 0, {0, 1}, 29500), Member("w3", 2, {0, 1})}, lease).ok());
  auto read = store_->Get(job);
  ASSERT_TRUE(read.ok()) << read.status().ToString();
  EXPECT_EQ(read->state, JobState::kAssigned);
  EXPECT_EQ(read->worker_id, "w1");  // rank 0's agent
  ASSERT_EQ(read->gang.size(), 2u);
  EXPECT_EQ(read->gang[0].worker_id, "w1");
  EXPECT_EQ(read->gang[0].port, 29500);
  EXPECT_EQ(read->gang[1].worker_id, "w3");
  EXPECT_EQ(read->gang[1].advertise_addr, "10.0.0.3");
  EXPECT_EQ(read->gang[1].first_rank, 2);
  EXPECT_EQ(read->gang[1].device_indices, (std::vector<int>{0, 1}));
  auto active = store_->ActiveAssignments();
  ASSERT_EQ(active->size(), 1u);
  EXPECT_EQ((*active)[0].worker_id, "w1");
  auto live = store_->ActiveGangMembers();
  ASSERT_TRUE(live.ok()) << live.status().ToString();
  ASSERT_EQ(live->size(), 2u);
  EXPECT_EQ((*live)[1].lease_expires_ms, lease);
  ASSERT_EQ(*store_->RenewLeases("w3", lease + 5000), 0);  // no assignments row of its own
  EXPECT_EQ((*store_->ActiveGangMembers())[1].lease_expires_ms, lease + 5000);
  auto events = store_->Events(job);
  EXPECT_EQ(events->back().message,
            "assigned to a gang of 2 agents: w1 devices [0,1] (ranks 0-1), w3 devices [0,1] (ranks 2-3)");

  // One member's part ends alone; the attempt's end releases the rest, and Get still shows it.
  ASSERT_TRUE(store_->ReleaseGangMember(job, 0, "w3").ok());
  EXPECT_EQ(store_->ActiveGangMembers()->size(), 1u);
  ASSERT_TRUE(store_->Transition(job, JobState::kAssigned, JobState::kRetrying, "lost").ok());
  EXPECT_TRUE(store_->ActiveGangMembers()->empty());
  EXPECT_EQ(store_->Get(job)->gang.size(), 2u);
  // The retry placed on one agent shows no gang.
  ASSERT_TRUE(store_->Transition(job, JobState::kRetrying, JobState::kQueued, "again").ok());
  WorkerRecord w4{"w4", "node4", 0, 0, "", {{0, "c", 1, "cpu"}, {1, "c", 1, "cpu"}, {2, "c", 1, "cpu"}, {3, "c", 1, "cpu"}}};
  ASSERT_TRUE(store_->RegisterWorker(w4).ok());
  ASSERT_TRUE(store_->Assign(job, "w4", {0, 1, 2, 3}, lease).ok());
  EXPECT_TRUE(store_->Get(job)->gang.empty());
}

}  // namespace
}  // namespace fuji::store
