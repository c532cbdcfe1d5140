// Tests of the losses of fine-tuning jobs in the store: one point per (attempt, split, step), the
// latest attempt's read back in step order, pages that end at step boundaries, refusals of bad
// points, and migration 4 carrying migration 3's rows over.
#include <sqlite3.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <limits>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "daemon/store/job_store.h"
#include "daemon/store/migrate.h"

namespace fuji::store {
namespace {

std::string ScratchDir() {
  const testing::TestInfo* test = testing::UnitTest::GetInstance()->current_test_info();
  std::string dir = std::string(FUJI_BINARY_DIR) + "/store_losses_test_" +
                    std::to_string(getpid()) + "_" + test->name();
  EXPECT_EQ(std::system(("rm -rf '" + dir + "'").c_str()), 0);
  EXPECT_EQ(::mkdir(dir.c_str(), 0755), 0);
  return dir;
}

Loss Point(int64_t job, int attempt, int64_t step, const std::string& split, double loss) {
  return Loss{job, attempt, step, split, loss, split == "train" ? 1000.0 + step : 0.0, 100 + step};
}

// "step:split:attempt" of each point, space-separated.
std::string Keys(const std::vector<Loss>& losses) {
  std::string out;
  for (const Loss& l : losses) {
    if (!out.empty()) out += " ";
    out += std::to_string(l.step) + ":" + l.split + ":" + std::to_string(l.attempt);
  }
  return out;
}

class StoreLossesTest : public testing::Test {
 protected:
  void SetUp() override {
    auto store = JobStore::Open(ScratchDir() + "/fuji.db", &clock_);
    ASSERT_TRUE(store.ok()) << store.status().ToString();
    store_ = std::move(store).value();
    JobRecord job;
    job.kind = JobKind::kFinetune;
    job.spec = R"({"model":"/m","data":"/d","ranks":2,"steps":10})";
    job.devices = 2;
    auto id = store_->Submit(job);
    ASSERT_TRUE(id.ok()) << id.status().ToString();
    job_ = *id;
  }

  std::vector<Loss> All(const std::string& split = "") {
    LossQuery query;
    query.split = split;
    query.limit = JobStore::kMaxLossPageSize;
    auto page = store_->Losses(job_, query);
    EXPECT_TRUE(page.ok()) << page.status().ToString();
    if (!page.ok()) return {};
    EXPECT_FALSE(page->more);
    return page->losses;
  }

  FakeClock clock_;
  std::unique_ptr<JobStore> store_;
  int64_t job_ = 0;
};

TEST_F(StoreLossesTest, OnePointPerAttemptSplitAndStepReadInStepOrder) {
  // Reported out of order, with eval points at steps 2 and 4.
  ASSERT_TRUE(store_->RecordLosses({Point(job_, 0, 3, "train", 3.3), Point(job_, 0, 1, "train", 3.9),
                                    Point(job_, 0, 2, "train", 3.6), Point(job_, 0, 2, "eval", 3.7),
                                    Point(job_, 0, 4, "train", 3.1), Point(job_, 0, 4, "eval", 3.2)})
                  .ok());
  // The agent sent step 3 again (a report retried after a timeout): replaced, not duplicated.
  ASSERT_TRUE(store_->RecordLosses({Point(job_, 0, 3, "train", 3.25)}).ok());
  std::vector<Loss> losses = All();
  EXPECT_EQ(Keys(losses), "1:train:0 2:eval:0 2:train:0 3:train:0 4:eval:0 4:train:0");
  EXPECT_DOUBLE_EQ(losses[3].loss, 3.25);
  EXPECT_DOUBLE_EQ(losses[0].tokens_per_s, 1001.0);
  EXPECT_EQ(losses[0].at_ms, 101);

  // Attempt 1 resumed from the checkpoint at step 2 and reports steps 3.. again: each (split,
  // step) is read once, from the latest attempt that reported it.
  ASSERT_TRUE(store_->RecordLosses({Point(job_, 1, 3, "train", 3.0), Point(job_, 1, 4, "train", 2.9),
                                    Point(job_, 1, 5, "train", 2.8)})
                  .ok());
  losses = All();
  EXPECT_EQ(Keys(losses), "1:train:0 2:eval:0 2:train:0 3:train:1 4:eval:0 4:train:1 5:train:1");
  EXPECT_DOUBLE_EQ(losses[3].loss, 3.0);
  EXPECT_EQ(Keys(All("eval")), "2:eval:0 4:eval:0");
  EXPECT_EQ(Keys(All("train")), "1:train:0 2:train:0 3:train:1 4:train:1 5:train:1");

  auto last = store_->LastLoss(job_);
  ASSERT_TRUE(last.ok()) << last.status().ToString();
  ASSERT_TRUE(last->has_value());
  EXPECT_EQ((*last)->step, 5);
  EXPECT_DOUBLE_EQ((*last)->loss, 2.8);
}

TEST_F(StoreLossesTest, PagesEndAtStepBoundariesAndCoverEveryPointOnce) {
  std::vector<Loss> points;
  for (int64_t step = 1; step <= 20; ++step) {
    points.push_back(Point(job_, 0, step, "train", 4.0 - step * 0.1));
    if (step % 2 == 0) points.push_back(Point(job_, 0, step, "eval", 4.1 - step * 0.1));
  }
  ASSERT_TRUE(store_->RecordLosses(points).ok());
  const std::string all = Keys(All());
  for (int limit : {1, 2, 3, 4, 7, 30}) {
    LossQuery query;
    query.limit = limit;
    std::vector<Loss> walked;
    for (int pages = 0;; ++pages) {
      ASSERT_LT(pages, 100) << "limit " << limit;
      auto page = store_->Losses(job_, query);
      ASSERT_TRUE(page.ok()) << page.status().ToString();
      ASSERT_FALSE(page->losses.empty()) << "limit " << limit;
      // At most the limit, except one whole step when the limit is below its splits.
      if (page->losses.size() > static_cast<size_t>(limit)) {
        EXPECT_EQ(page->losses.front().step, page->losses.back().step) << "limit " << limit;
      }
      walked.insert(walked.end(), page->losses.begin(), page->losses.end());
      if (!page->more) break;
      query.after_step = page->losses.back().step;
    }
    EXPECT_EQ(Keys(walked), all) << "limit " << limit;
  }
  LossQuery from_10;
  from_10.after_step = 10;
  from_10.limit = 3;
  auto page = store_->Losses(job_, from_10);
  ASSERT_TRUE(page.ok());
  EXPECT_EQ(Keys(page->losses), "11:train:0 12:eval:0 12:train:0");
  EXPECT_TRUE(page->more);
  LossQuery bad;
  bad.split = "test";
  EXPECT_EQ(store_->Losses(job_, bad).status().code(), StatusCode::kInvalidArgument);
  bad.split = "";
  bad.limit = 0;
  EXPECT_EQ(store_->Losses(job_, bad).status().code(), StatusCode::kInvalidArgument);
}

TEST_F(StoreLossesTest, RefusesBadPointsWritingNothing) {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  const double inf = std::numeric_limits<double>::infinity();
  struct Case {
    Loss loss;
    std::string message;
  };
  std::vector<Case> cases = {
      {Loss{job_, 0, 1, "train", nan, 0, 1}, "loss is not finite at step 1"},
      {Loss{job_, 0, 1, "train", inf, 0, 1}, "loss is not finite"},
      {Loss{job_, 0, -1, "train", 1.0, 0, 1}, "loss step -1 outside"},
      {Loss{job_, 0, JobStore::kMaxLossStep + 1, "train", 1.0, 0, 1}, "outside 0.."},
      {Loss{job_, 0, 1, "test", 1.0, 0, 1}, "unknown loss split 'test'"},
      {Loss{job_, 0, 1, "train", 1.0, -5, 1}, "tokens_per_s is negative"},
      {Loss{job_, 0, 1, "train", 1.0, nan, 1}, "tokens_per_s is negative or not finite"},
  };
  for (const Case& c : cases) {
    Status status = store_->RecordLosses({Point(job_, 0, 7, "train", 2.0), c.loss});
    EXPECT_EQ(status.code(), StatusCode::kInvalidArgument) << c.message;
    EXPECT_NE(status.message().find(c.message), std::string::npos) << status.message();
  }
  std::vector<Loss> many(JobStore::kMaxLossesPerCall + 1, Point(job_, 0, 1, "train", 1.0));
  EXPECT_EQ(store_->RecordLosses(many).code(), StatusCode::kInvalidArgument);
  EXPECT_TRUE(All().empty());
  EXPECT_FALSE(store_->LastLoss(job_)->has_value());
  Status unknown = store_->RecordLosses({Point(job_ + 100, 0, 1, "train", 1.0)});
  EXPECT_EQ(unknown.code(), StatusCode::kFailedPrecondition) << unknown.ToString();
}

// A database at schema version 3 (one loss per step, no split or attempt) opens with its losses
// as attempt 0's train losses.
TEST(StoreLossesMigrationTest, Version3LossesBecomeAttempt0TrainLosses) {
  ASSERT_GE(kNumMigrations, 4);
  const std::string path = ScratchDir() + "/fuji.db";
  {
    sqlite3* db = nullptr;
    ASSERT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
    auto exec = [db](const std::string& sql) {
      char* error = nullptr;
      EXPECT_EQ(sqlite3_exec(db, sql.c_str(), nullptr, nullptr, &error), SQLITE_OK)
          << (error ? error : "") << " in " << sql.substr(0, 200);
      sqlite3_free(error);
    };
    exec("CREATE TABLE schema_version (version INTEGER PRIMARY KEY, name TEXT NOT NULL, "
         "applied_at_ms INTEGER NOT NULL)");
    for (int i = 0; i < 3; ++i) {
      ASSERT_EQ(kMigrations[i].version, i + 1);
      exec(kMigrations[i].sql);
      exec("INSERT INTO schema_version VALUES (" + std::to_string(i + 1) + ", '" +
           kMigrations[i].name + "', 0)");
    }
    exec("INSERT INTO jobs (id, kind, state, spec, devices, max_attempts, submitted_at_ms, "
         "updated_at_ms) VALUES (1, 'finetune', 'RUNNING', '{}', 1, 1, 0, 0)");
    exec("INSERT INTO losses (job_id, step, loss, tokens_per_s, at_ms) VALUES "
         "(1, 2, 3.5, 900, 20), (1, 1, 3.9, 800, 10)");
    sqlite3_close(db);
  }
  FakeClock clock;
  auto store = JobStore::Open(path, &clock);
  ASSERT_TRUE(store.ok()) << store.status().ToString();
  auto page = (*store)->Losses(1);
  ASSERT_TRUE(page.ok()) << page.status().ToString();
  EXPECT_EQ(Keys(page->losses), "1:train:0 2:train:0");
  EXPECT_DOUBLE_EQ(page->losses[1].loss, 3.5);
  EXPECT_DOUBLE_EQ(page->losses[1].tokens_per_s, 900);
  EXPECT_TRUE((*store)->RecordLosses({Point(1, 1, 2, "train", 3.4)}).ok());
  EXPECT_EQ(Keys((*store)->Losses(1)->losses), "1:train:0 2:train:1");
}

}  // namespace
}  // namespace fuji::store
