// Tests of jobs in the store: submit, get, list and paging, transitions and their events,
// concurrent submits, group commit isolation, and durability across kill -9.
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <future>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "daemon/store/job_store.h"
#include "daemon/store/writer.h"

namespace fuji::store {
namespace {

std::string ScratchDir() {
  const testing::TestInfo* test = testing::UnitTest::GetInstance()->current_test_info();
  std::string dir = std::string(FUJI_BINARY_DIR) + "/store_jobs_test_" + std::to_string(getpid()) +
                    "_" + test->name();
  std::string rm = "rm -rf '" + dir + "'";
  EXPECT_EQ(std::system(rm.c_str()), 0);
  EXPECT_EQ(::mkdir(dir.c_str(), 0755), 0);
  return dir;
}

JobRecord Job(JobKind kind = JobKind::kInfer, int64_t priority = 0) {
  JobRecord job;
  job.kind = kind;
  job.priority = priority;
  job.spec = R"({"model":"111M"})";
  return job;
}

class StoreJobsTest : public testing::Test {
 protected:
  void SetUp() override {
    auto store = JobStore::Open(ScratchDir() + "/fuji.db", &clock_);
    ASSERT_TRUE(store.ok()) << store.status().ToString();
    store_ = std::move(store).value();
  }

  int64_t MustSubmit(const JobRecord& job) {
    auto id = store_->Submit(job);
    EXPECT_TRUE(id.ok()) << id.status().ToString();
    return id.ok() ? *id : 0;
  }

  FakeClock clock_;
  std::unique_ptr<JobStore> store_;
};

TEST_F(StoreJobsTest, SubmitAndGet) {
  JobRecord job = Job(JobKind::kFinetune, 5);
  job.devices = 2;
  job.max_attempts = 3;
  job.timeout_ms = 60000;
  int64_t id = MustSubmit(job);
  auto got = store_->Get(id);
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  EXPECT_EQ(got->id, id);
  EXPECT_EQ(got->kind, JobKind::kFinetune);
  EXPECT_EQ(got->state, JobState::kQueued);
  EXPECT_EQ(got->priority, 5);
  EXPECT_EQ(got->spec, job.spec);
  EXPECT_EQ(got->devices, 2);
  EXPECT_EQ(got->attempts, 0);
  EXPECT_EQ(got->max_attempts, 3);
  EXPECT_EQ(got->timeout_ms, 60000);
  EXPECT_EQ(got->submitted_at_ms, clock_.NowMs());
  EXPECT_FALSE(got->started_at_ms.has_value());
  EXPECT_FALSE(got->finished_at_ms.has_value());
  auto events = store_->Events(id);
  ASSERT_TRUE(events.ok());
  ASSERT_EQ(events->size(), 1u);
  EXPECT_FALSE((*events)[0].from.has_value());
  EXPECT_EQ((*events)[0].to, JobState::kQueued);
}

TEST_F(StoreJobsTest, RejectsBadJobsAndUnknownIds) {
  JobRecord job = Job();
  job.spec = "[1, 2]";
  EXPECT_EQ(store_->Submit(job).status().code(), StatusCode::kInvalidArgument);
  job.spec = "{not json";
  EXPECT_EQ(store_->Submit(job).status().code(), StatusCode::kInvalidArgument);
  job = Job();
  job.devices = 0;
  EXPECT_EQ(store_->Submit(job).status().code(), StatusCode::kInvalidArgument);
  job = Job();
  job.spec = R"({"x":")" + std::string(JobStore::kMaxJsonBytes, 'a') + "\"}";
  EXPECT_EQ(store_->Submit(job).status().code(), StatusCode::kResourceExhausted);

  auto missing = store_->Get(42);
  EXPECT_EQ(missing.status().code(), StatusCode::kNotFound);
  EXPECT_EQ(missing.status().message(), "job 42 not found");
}

TEST_F(StoreJobsTest, ListPagesNewestFirst) {
  for (int i = 0; i < 25; ++i) MustSubmit(Job());
  ListFilter filter;
  filter.limit = 10;
  std::vector<int64_t> seen;
  std::vector<size_t> page_sizes;
  do {
    auto page = store_->List(filter);
    ASSERT_TRUE(page.ok()) << page.status().ToString();
    page_sizes.push_back(page->jobs.size());
    for (const JobRecord& job : page->jobs) seen.push_back(job.id);
    filter.page_token = page->next_page_token;
  } while (filter.page_token != 0);
  EXPECT_EQ(page_sizes, (std::vector<size_t>{10, 10, 5}));
  ASSERT_EQ(seen.size(), 25u);
  for (size_t i = 1; i < seen.size(); ++i) EXPECT_LT(seen[i], seen[i - 1]);
}

TEST_F(StoreJobsTest, ListFiltersByStateAndKind) {
  int64_t a = MustSubmit(Job(JobKind::kInfer));
  int64_t b = MustSubmit(Job(JobKind::kFinetune));
  int64_t c = MustSubmit(Job(JobKind::kFinetune));
  ASSERT_TRUE(store_->Transition(c, JobState::kQueued, JobState::kCancelled, "user").ok());
  auto ids = [&](const std::string& state, const std::string& kind) {
    ListFilter filter;
    filter.state = state;
    filter.kind = kind;
    std::vector<int64_t> out;
    auto page = store_->List(filter);
    EXPECT_TRUE(page.ok()) << page.status().ToString();
    if (page.ok()) {
      for (const JobRecord& job : page->jobs) out.push_back(job.id);
    }
    return out;
  };
  EXPECT_EQ(ids("", ""), (std::vector<int64_t>{c, b, a}));
  EXPECT_EQ(ids("QUEUED", ""), (std::vector<int64_t>{b, a}));
  EXPECT_EQ(ids("", "finetune"), (std::vector<int64_t>{c, b}));
  EXPECT_EQ(ids("CANCELLED", "finetune"), (std::vector<int64_t>{c}));
  EXPECT_EQ(ids("RUNNING", ""), (std::vector<int64_t>{}));

  ListFilter bad;
  bad.state = "BOGUS";
  auto page = store_->List(bad);
  EXPECT_EQ(page.status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(page.status().message(),
            "unknown state 'BOGUS' (QUEUED, ASSIGNED, RUNNING, SUCCEEDED, FAILED, CANCELLED, "
            "RETRYING)");
  bad = ListFilter{};
  bad.kind = "train";
  EXPECT_EQ(store_->List(bad).status().code(), StatusCode::kInvalidArgument);
  bad = ListFilter{};
  bad.limit = -1;
  EXPECT_EQ(store_->List(bad).status().code(), StatusCode::kInvalidArgument);
}

TEST_F(StoreJobsTest, QueuedJobsByPriorityThenAge) {
  int64_t low = MustSubmit(Job(JobKind::kInfer, 0));
  int64_t high1 = MustSubmit(Job(JobKind::kInfer, 9));
  int64_t high2 = MustSubmit(Job(JobKind::kInfer, 9));
  int64_t gone = MustSubmit(Job(JobKind::kInfer, 99));
  ASSERT_TRUE(store_->Transition(gone, JobState::kQueued, JobState::kCancelled, "").ok());
  auto queued = store_->QueuedJobs(10);
  ASSERT_TRUE(queued.ok());
  std::vector<int64_t> ids;
  for (const JobRecord& job : *queued) ids.push_back(job.id);
  EXPECT_EQ(ids, (std::vector<int64_t>{high1, high2, low}));
}

TEST_F(StoreJobsTest, TransitionIsCompareAndSet) {
  int64_t id = MustSubmit(Job());
  clock_.AdvanceMs(1000);
  ASSERT_TRUE(store_->Transition(id, JobState::kQueued, JobState::kCancelled, "user asked").ok());
  Status again = store_->Transition(id, JobState::kQueued, JobState::kCancelled, "twice");
  EXPECT_EQ(again.code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(again.message(), "job " + std::to_string(id) + " is CANCELLED, not QUEUED");
  EXPECT_EQ(store_->Transition(id, JobState::kCancelled, JobState::kQueued, "").code(),
            StatusCode::kFailedPrecondition);  // terminal
  EXPECT_EQ(store_->Transition(999, JobState::kQueued, JobState::kFailed, "").code(),
            StatusCode::kNotFound);
  int64_t other = MustSubmit(Job());
  EXPECT_EQ(store_->Transition(other, JobState::kQueued, JobState::kRunning, "").code(),
            StatusCode::kFailedPrecondition);  // no such edge
  EXPECT_EQ(store_->Transition(other, JobState::kQueued, JobState::kAssigned, "").code(),
            StatusCode::kInvalidArgument);  // only through Assign

  auto job = store_->Get(id);
  ASSERT_TRUE(job.ok());
  EXPECT_EQ(job->state, JobState::kCancelled);
  EXPECT_EQ(job->reason, "user asked");
  EXPECT_EQ(job->finished_at_ms, clock_.NowMs());
  auto events = store_->Events(id);
  ASSERT_TRUE(events.ok());
  ASSERT_EQ(events->size(), 2u);  // submit + the one transition that happened
  EXPECT_EQ((*events)[1].from, JobState::kQueued);
  EXPECT_EQ((*events)[1].to, JobState::kCancelled);
  EXPECT_EQ((*events)[1].message, "user asked");
  EXPECT_EQ(store_->Events(other)->size(), 1u);  // refused transitions leave no event
}

TEST_F(StoreJobsTest, LifecycleWithRetryHasOneEventPerTransition) {
  WorkerRecord worker{"w1", "node1", 0, 0, "", {{0, "cpu0", 1024, "cpu"}}};
  ASSERT_TRUE(store_->RegisterWorker(worker).ok());
  JobRecord spec = Job();
  spec.max_attempts = 2;
  int64_t id = MustSubmit(spec);
  int64_t lease = clock_.NowMs() + 10000;
  ASSERT_TRUE(store_->Assign(id, "w1", {0}, lease).ok());
  ASSERT_TRUE(store_->Transition(id, JobState::kAssigned, JobState::kRunning, "").ok());
  ASSERT_TRUE(store_->Transition(id, JobState::kRunning, JobState::kRetrying, "signal 9").ok());
  auto retrying = store_->Get(id);
  EXPECT_EQ(retrying->attempts, 1);
  EXPECT_EQ(retrying->worker_id, "");
  EXPECT_TRUE(store_->ActiveAssignments()->empty());
  ASSERT_TRUE(store_->Transition(id, JobState::kRetrying, JobState::kQueued, "").ok());
  ASSERT_TRUE(store_->Assign(id, "w1", {0}, lease).ok());
  auto active = store_->ActiveAssignments();
  ASSERT_EQ(active->size(), 1u);
  EXPECT_EQ((*active)[0].attempt, 1);
  ASSERT_TRUE(store_->Transition(id, JobState::kAssigned, JobState::kRunning, "").ok());
  ASSERT_TRUE(store_->Transition(id, JobState::kRunning, JobState::kSucceeded, "").ok());

  auto events = store_->Events(id);
  ASSERT_TRUE(events.ok());
  std::vector<std::string> chain;
  for (size_t i = 0; i < events->size(); ++i) {
    const JobEvent& e = (*events)[i];
    EXPECT_EQ(e.seq, static_cast<int64_t>(i + 1));
    if (i > 0) {
      EXPECT_EQ(e.from, (*events)[i - 1].to);
    }
    chain.push_back(JobStateName(e.to));
  }
  EXPECT_EQ(chain, (std::vector<std::string>{"QUEUED", "ASSIGNED", "RUNNING", "RETRYING", "QUEUED",
                                             "ASSIGNED", "RUNNING", "SUCCEEDED"}));
  EXPECT_TRUE(store_->ActiveAssignments()->empty());
}

TEST_F(StoreJobsTest, ConcurrentTransitionsHaveOneWinner) {
  int64_t id = MustSubmit(Job());
  std::atomic<int> wins{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&] {
      if (store_->Transition(id, JobState::kQueued, JobState::kCancelled, "").ok()) ++wins;
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(wins.load(), 1);
  EXPECT_EQ(store_->Events(id)->size(), 2u);
}

TEST_F(StoreJobsTest, ConcurrentSubmitsAreAllDurableAndDistinct) {
  constexpr int kThreads = 16;
  constexpr int kPerThread = 500;
  std::vector<std::vector<int64_t>> ids(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kPerThread; ++i) {
        if (t % 2 == 0) {
          auto id = store_->Submit(Job());
          ASSERT_TRUE(id.ok()) << id.status().ToString();
          ids[t].push_back(*id);
        } else {
          std::promise<Result<int64_t>> done;
          store_->SubmitAsync(Job(), [&done](Result<int64_t> id) { done.set_value(id); });
          auto id = done.get_future().get();
          ASSERT_TRUE(id.ok()) << id.status().ToString();
          ids[t].push_back(*id);
        }
      }
    });
  }
  for (std::thread& t : threads) t.join();
  std::set<int64_t> acknowledged;
  for (const auto& list : ids) acknowledged.insert(list.begin(), list.end());
  EXPECT_EQ(acknowledged.size(), static_cast<size_t>(kThreads * kPerThread));

  std::set<int64_t> stored;
  size_t rows = 0;
  ListFilter filter;
  filter.limit = 1000;
  do {
    auto page = store_->List(filter);
    ASSERT_TRUE(page.ok()) << page.status().ToString();
    for (const JobRecord& job : page->jobs) stored.insert(job.id);
    rows += page->jobs.size();
    filter.page_token = page->next_page_token;
  } while (filter.page_token != 0);
  EXPECT_EQ(rows, acknowledged.size());
  EXPECT_EQ(stored, acknowledged);
}

// A failing operation in a group-committed batch rolls back alone.
TEST(StoreWriterTest, FailingOperationDoesNotFailItsBatch) {
  std::string path = ScratchDir() + "/writer.db";
  auto conn = Connection::Open(path, false);
  ASSERT_TRUE(conn.ok()) << conn.status().ToString();
  ASSERT_TRUE((*conn)->Exec("CREATE TABLE t (id INTEGER PRIMARY KEY)").ok());
  Writer writer(std::move(conn).value());
  auto insert = [](int64_t id) {
    return [id](Connection& db) -> Status {
      FUJI_ASSIGN_OR_RETURN(Statement s, db.Prepare("INSERT INTO t (id) VALUES (?)"));
      return s.BindInt(1, id).Run();
    };
  };
  // Hold the writer in a first batch so the next three queue up and commit together.
  std::promise<void> release;
  std::shared_future<void> released = release.get_future().share();
  std::promise<void> holding;
  writer.Enqueue(
      [&holding, released](Connection&) {
        holding.set_value();
        released.wait();
        return Status::Ok();
      },
      [](const Status&) {});
  holding.get_future().wait();
  std::vector<std::promise<Status>> results(3);
  const int64_t ids[] = {1, 1, 3};  // the second violates the primary key
  for (int i = 0; i < 3; ++i) {
    writer.Enqueue(insert(ids[i]), [&results, i](const Status& s) { results[i].set_value(s); });
  }
  release.set_value();
  EXPECT_TRUE(results[0].get_future().get().ok());
  Status failed = results[1].get_future().get();
  EXPECT_EQ(failed.code(), StatusCode::kFailedPrecondition) << failed.ToString();
  EXPECT_TRUE(results[2].get_future().get().ok());
  EXPECT_EQ(writer.stats().batches, 2);

  int64_t count = -1;
  ASSERT_TRUE(writer
                  .Run([&count](Connection& db) -> Status {
                    FUJI_ASSIGN_OR_RETURN(Statement s,
                                          db.Prepare("SELECT COUNT(*), SUM(id) FROM t"));
                    FUJI_RETURN_IF_ERROR(s.Step().status());
                    count = s.Int(0) * 100 + s.Int(1);
                    return Status::Ok();
                  })
                  .ok());
  EXPECT_EQ(count, 2 * 100 + 4);  // rows 1 and 3
}

// Every id a client was told about survives kill -9 of the process that wrote it.
TEST(StoreDurabilityTest, AcknowledgedSubmitsSurviveKill9) {
  std::string path = ScratchDir() + "/fuji.db";
  int fds[2];
  ASSERT_EQ(::pipe(fds), 0);
  pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    ::close(fds[0]);
    SystemClock clock;
    auto store = JobStore::Open(path, &clock);
    if (!store.ok()) ::_exit(2);
    while (true) {  // until killed
      auto id = (*store)->Submit(Job());
      if (!id.ok()) ::_exit(3);
      int64_t value = *id;
      if (::write(fds[1], &value, sizeof(value)) != sizeof(value)) ::_exit(4);
    }
  }
  ::close(fds[1]);
  std::vector<int64_t> acknowledged;
  int64_t value = 0;
  while (acknowledged.size() < 300 && ::read(fds[0], &value, sizeof(value)) == sizeof(value)) {
    acknowledged.push_back(value);
  }
  ::kill(child, SIGKILL);
  int wstatus = 0;
  ASSERT_EQ(::waitpid(child, &wstatus, 0), child);
  ASSERT_TRUE(WIFSIGNALED(wstatus)) << "child exited with " << WEXITSTATUS(wstatus);
  // Ids written to the pipe before the kill were acknowledged too.
  while (::read(fds[0], &value, sizeof(value)) == sizeof(value)) acknowledged.push_back(value);
  ::close(fds[0]);
  ASSERT_GE(acknowledged.size(), 300u);

  FakeClock clock;
  auto store = JobStore::Open(path, &clock);
  ASSERT_TRUE(store.ok()) << store.status().ToString();
  for (int64_t id : acknowledged) {
    auto job = (*store)->Get(id);
    ASSERT_TRUE(job.ok()) << "acknowledged job " << id << ": " << job.status().ToString();
    EXPECT_EQ(job->state, JobState::kQueued);
  }
}

}  // namespace
}  // namespace fuji::store
