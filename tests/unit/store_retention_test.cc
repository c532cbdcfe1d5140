// Tests of what the store keeps and for how long, and of admins' persisted intent: retention
// deletes the logs, samples and losses of jobs that ended long ago (on fake time) in bounded
// batches; backups are databases the store opens; a new database file is private; priority
// changes and drains are rows that outlive the store.
#include <sys/stat.h>

#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "daemon/store/retention.h"
#include "lib/common/file_util.h"
#include "tests/unit/daemon_store_fixture.h"
#include "tests/unit/sqlite_integrity.h"

namespace fuji::daemon::testing {
namespace {

using store::JobState;

constexpr int64_t kDayMs = 24 * 3600 * 1000LL;

class StoreRetentionTest : public StoreTest {
 protected:
  StoreRetentionTest() : StoreTest("store_retention") {}

  void SetUp() override {
    StoreTest::SetUp();
    store::WorkerRecord worker{"w", "host", 0, 0, "ONLINE", {{0, "cpu", 1024, "cpu"}}};
    ASSERT_TRUE(store_->RegisterWorker(worker).ok());
  }

  int64_t SubmitJob(int64_t priority = 0) {
    store::JobRecord job;
    job.kind = store::JobKind::kFinetune;
    job.spec = R"({"model":"/m","data":"/d","steps":10})";
    job.priority = priority;
    auto id = store_->Submit(job);
    EXPECT_TRUE(id.ok()) << id.status().ToString();
    return id.ok() ? *id : 0;
  }

  // A job that runs now and reports `rows` of each telemetry.
  int64_t RunningJob(int rows) {
    const int64_t id = SubmitJob();
    EXPECT_TRUE(store_->Assign(id, "w", {0}, clock_.NowMs() + kDayMs).ok());
    EXPECT_TRUE(store_->Transition(id, JobState::kAssigned, JobState::kRunning, "").ok());
    std::vector<store::LogLine> lines;
    std::vector<store::MemorySample> samples;
    std::vector<store::Loss> losses;
    for (int i = 0; i < rows; ++i) {
      lines.push_back({0, 0, clock_.NowMs(), "rank0/stderr", "line " + std::to_string(i)});
      samples.push_back({id, "w", 0, "cpu", 10, 1024, 5, 1, clock_.NowMs() + i, false});
      losses.push_back({id, 0, i, "train", 1.0 / (i + 1), 100, clock_.NowMs()});
    }
    EXPECT_TRUE(store_->AppendLogs(id, lines).ok());
    EXPECT_TRUE(store_->InsertSamples(samples).ok());
    EXPECT_TRUE(store_->RecordLosses(losses).ok());
    return id;
  }

  int64_t EndedJob(int rows, JobState end = JobState::kSucceeded) {
    const int64_t id = RunningJob(rows);
    EXPECT_TRUE(store_->Transition(id, JobState::kRunning, end, "").ok());
    return id;
  }

  // Rows of logs, samples and losses the job has, as "logs/samples/losses".
  std::string Rows(int64_t id) {
    auto logs = store_->Logs(id, 0, 100000);
    auto samples = store_->Samples(id);
    store::LossQuery all;
    all.limit = store::JobStore::kMaxLossPageSize;
    auto losses = store_->Losses(id, all);
    EXPECT_TRUE(logs.ok() && samples.ok() && losses.ok());
    if (!logs.ok() || !samples.ok() || !losses.ok()) return "error";
    return std::to_string(logs->size()) + "/" + std::to_string(samples->size()) + "/" +
           std::to_string(losses->losses.size());
  }
};

TEST_F(StoreRetentionTest, SweepDeletesTelemetryOfJobsThatEndedLongAgoOnly) {
  const int64_t old_done = EndedJob(3);
  const int64_t old_failed = EndedJob(3, JobState::kFailed);
  const int64_t long_running = RunningJob(3);  // started as long ago, still running
  clock_.AdvanceMs(8 * kDayMs);
  const int64_t recent_done = EndedJob(3);
  clock_.AdvanceMs(kDayMs);

  store::RetentionPolicy policy;
  policy.logs_ms = policy.samples_ms = policy.losses_ms = 7 * kDayMs;
  store::Retention retention(store_.get(), &clock_, policy);
  auto deleted = retention.Sweep();
  ASSERT_TRUE(deleted.ok()) << deleted.status().ToString();
  EXPECT_EQ(*deleted, 2 * 9);
  EXPECT_EQ(Rows(old_done), "0/0/0");
  EXPECT_EQ(Rows(old_failed), "0/0/0");
  EXPECT_EQ(Rows(long_running), "3/3/3");
  EXPECT_EQ(Rows(recent_done), "3/3/3");
  // The jobs themselves stay, with their history.
  auto job = store_->Get(old_done);
  ASSERT_TRUE(job.ok());
  EXPECT_EQ(job->state, JobState::kSucceeded);
  EXPECT_EQ(store_->Events(old_done)->size(), 4u);

  // A later sweep takes what ended since, once it is old enough.
  EXPECT_EQ(*retention.Sweep(), 0);
  clock_.AdvanceMs(7 * kDayMs);
  EXPECT_EQ(*retention.Sweep(), 9);
  EXPECT_EQ(Rows(recent_done), "0/0/0");
  EXPECT_EQ(Rows(long_running), "3/3/3");
}

TEST_F(StoreRetentionTest, EachTableHasItsOwnRetention) {
  const int64_t id = EndedJob(2);
  clock_.AdvanceMs(3 * kDayMs);
  store::RetentionPolicy policy;
  policy.logs_ms = 1 * kDayMs;
  policy.losses_ms = 5 * kDayMs;
  store::Retention retention(store_.get(), &clock_, policy);
  ASSERT_TRUE(retention.Sweep().ok());
  EXPECT_EQ(Rows(id), "0/2/2");
  clock_.AdvanceMs(3 * kDayMs);
  ASSERT_TRUE(retention.Sweep().ok());
  EXPECT_EQ(Rows(id), "0/2/0");
}

TEST_F(StoreRetentionTest, APurgeDeletesAtMostItsBatch) {
  const int64_t id = EndedJob(1200);
  clock_.AdvanceMs(kDayMs);
  const int64_t before = clock_.NowMs();
  using Telemetry = store::JobStore::Telemetry;
  EXPECT_EQ(*store_->PurgeEnded(Telemetry::kLogs, 0, before, 500), 500);
  EXPECT_EQ(Rows(id), "700/1200/1200");
  EXPECT_EQ(*store_->PurgeEnded(Telemetry::kLogs, 0, before, 500), 500);
  EXPECT_EQ(*store_->PurgeEnded(Telemetry::kLogs, 0, before, 500), 200);
  EXPECT_EQ(*store_->PurgeEnded(Telemetry::kLogs, 0, before, 500), 0);
  EXPECT_EQ(Rows(id), "0/1200/1200");
  // Outside the range of end times: nothing.
  EXPECT_EQ(*store_->PurgeEnded(Telemetry::kSamples, before, before + kDayMs, 500), 0);
  EXPECT_EQ(store_->PurgeEnded(Telemetry::kSamples, 0, before, 0).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(store_->PurgeEnded(Telemetry::kSamples, 0, before, store::JobStore::kMaxPurgeRows + 1).status().code(),
            StatusCode::kInvalidArgument);

  // A sweep goes batch by batch to the end.
  store::RetentionPolicy policy;
  policy.samples_ms = 0;
  policy.batch_rows = 100;
  policy.pause_ms = 0;
  store::Retention retention(store_.get(), &clock_, policy);
  EXPECT_EQ(*retention.Sweep(), 1200);
  EXPECT_EQ(Rows(id), "0/0/1200");
}

TEST_F(StoreRetentionTest, ANewDatabaseIsPrivateWhateverTheUmask) {
  const mode_t old = ::umask(022);
  auto store = store::JobStore::Open(dir_ + "/other.db", &clock_);
  ::umask(old);
  ASSERT_TRUE(store.ok()) << store.status().ToString();
  store::JobRecord job;
  job.spec = "{}";
  ASSERT_TRUE((*store)->Submit(job).ok());
  for (const char* suffix : {"", "-wal"}) {
    struct stat st {};
    ASSERT_EQ(::stat((dir_ + "/other.db" + suffix).c_str(), &st), 0) << suffix;
    EXPECT_EQ(st.st_mode & 0777, 0600u) << suffix;
  }
}

TEST_F(StoreRetentionTest, ABackupIsADatabaseTheStoreOpens) {
  const int64_t done = EndedJob(2);
  const int64_t queued = SubmitJob(7);
  auto fd = CreateExclusiveFile(dir_ + "/copy.db", 0600);
  ASSERT_TRUE(fd.ok());
  ::close(*fd);
  ASSERT_TRUE(store_->BackupTo(dir_ + "/copy.db").ok());
  // Written after the copy: not in it.
  SubmitJob();

  EXPECT_EQ(::fuji::testing::IntegrityCheck(dir_ + "/copy.db"), "ok");

  auto copy = store::JobStore::Open(dir_ + "/copy.db", &clock_);
  ASSERT_TRUE(copy.ok()) << copy.status().ToString();
  auto page = (*copy)->List({});
  ASSERT_TRUE(page.ok());
  ASSERT_EQ(page->jobs.size(), 2u);
  EXPECT_EQ(page->jobs[0].id, queued);
  EXPECT_EQ(page->jobs[0].priority, 7);
  EXPECT_EQ(page->jobs[1].id, done);
  EXPECT_EQ((*copy)->Logs(done, 0)->size(), 2u);
  // Only into a file that is there (the caller makes it, privately).
  EXPECT_FALSE(store_->BackupTo(dir_ + "/missing.db").ok());
}

TEST_F(StoreRetentionTest, APriorityChangeIsARowForQueuedJobsOnly) {
  const int64_t first = SubmitJob(0);
  const int64_t second = SubmitJob(0);
  ASSERT_TRUE(store_->SetPriority(second, 5).ok());
  auto queue = store_->QueuedJobs(10);
  ASSERT_TRUE(queue.ok());
  ASSERT_EQ(queue->size(), 2u);
  EXPECT_EQ((*queue)[0].id, second);
  EXPECT_EQ((*queue)[1].id, first);
  EXPECT_EQ(store_->SetPriority(first, limits::kMaxPriority + 1).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(store_->SetPriority(first, limits::kMinPriority - 1).code(), StatusCode::kInvalidArgument);
  EXPECT_TRUE(store_->SetPriority(first, limits::kMinPriority).ok());
  EXPECT_EQ(store_->SetPriority(999, 1).code(), StatusCode::kNotFound);
  const int64_t running = RunningJob(0);
  EXPECT_EQ(store_->SetPriority(running, 1).code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(store_->Get(running)->priority, 0);

  // It outlives the store.
  store_.reset();
  auto again = store::JobStore::Open(dir_ + "/fujid.db", &clock_);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ((*again)->Get(second)->priority, 5);
}

TEST_F(StoreRetentionTest, ADrainOutlivesTheStoreAndRegistrations) {
  auto drained = store_->SetDrained("w", true);
  ASSERT_TRUE(drained.ok());
  EXPECT_EQ(*drained, clock_.NowMs());
  clock_.AdvanceMs(1000);
  EXPECT_EQ(*store_->SetDrained("w", true), *drained) << "a second drain keeps the first time";
  EXPECT_EQ(store_->SetDrained("nobody", true).status().code(), StatusCode::kNotFound);
  // The agent restarts and registers again; it stays drained.
  ASSERT_TRUE(store_->RegisterWorker({"w", "host", 0, 0, "ONLINE", {{0, "cpu", 1024, "cpu"}}}).ok());
  ASSERT_TRUE(store_->Heartbeat("w").ok());
  store_.reset();
  auto again = store::JobStore::Open(dir_ + "/fujid.db", &clock_);
  ASSERT_TRUE(again.ok());
  auto workers = (*again)->ListWorkers();
  ASSERT_TRUE(workers.ok());
  ASSERT_EQ(workers->size(), 1u);
  EXPECT_EQ((*workers)[0].drained_at_ms, drained.value());
  auto undrained = (*again)->SetDrained("w", false);
  ASSERT_TRUE(undrained.ok());
  EXPECT_FALSE(undrained->has_value());
  EXPECT_FALSE((*again)->ListWorkers()->at(0).drained_at_ms.has_value());
}

}  // namespace
}  // namespace fuji::daemon::testing
