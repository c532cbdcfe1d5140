// Tests for checkpoint retention (worker/ckpt/retention.h): the newest N complete step
// directories stay, older ones go; a crash between a save and its publish or its pruning leaves
// nothing unsafe behind; what fuji did not write (foreign names, files, directories, symbolic
// links) is never removed or followed.
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "lib/common/file_util.h"
#include "tests/unit/zero_checkpoint_fixture.h"
#include "worker/ckpt/retention.h"

namespace fuji::ckpt {
namespace {

namespace fs = std::filesystem;
using testing::ScratchDir;
using testing::TinyConfig;
using testing::WriteSynthetic;

class RetentionTest : public ::testing::Test {
 protected:
  void SetUp() override { save_to_ = ScratchDir(); }

  // Saves steps first..last over two ranks, each published as latest in turn (no pruning).
  void Save(int64_t first, int64_t last) {
    for (int64_t step = first; step <= last; ++step) WriteSynthetic(save_to_, TinyConfig(), 2, step);
  }
  std::string Dir(int64_t step) const { return save_to_ + "/" + StepDirName(step); }
  // The names in save_to that start with "step-", sorted.
  std::vector<std::string> StepEntries() const {
    std::vector<std::string> names;
    for (const auto& e : fs::directory_iterator(save_to_)) {
      const std::string name = e.path().filename().string();
      if (name.rfind("step-", 0) == 0) names.push_back(name);
    }
    std::sort(names.begin(), names.end());
    return names;
  }
  PruneReport Prune(int64_t keep_last) {
    PruneReport report;
    const Status s = PruneCheckpoints(save_to_, keep_last, &report);
    EXPECT_TRUE(s.ok()) << s.ToString();
    return report;
  }
  void Publish(int64_t step) { ASSERT_TRUE(PublishLatest(save_to_, StepDirName(step)).ok()); }

  std::string save_to_;
};

TEST(StepOfNameTest, OnlyTheWritersForm) {
  EXPECT_EQ(StepOfName("step-00000010"), 10);
  EXPECT_EQ(StepOfName("step-00000000"), 0);
  EXPECT_EQ(StepOfName("step-123456789"), 123456789);
  for (const char* name : {"step-10", "step-000000010", "step-0000001a", "step--0000001", "step-+0000001",
                           "step-00000010.bak", "Step-00000010", "step-", "latest", "step-00000010/"}) {
    EXPECT_EQ(StepOfName(name), -1) << name;
  }
}

TEST_F(RetentionTest, KeepsTheNewestNCompleteOnes) {
  Save(1, 5);
  EXPECT_TRUE(Prune(0).removed.empty());   // 0: keep all
  EXPECT_TRUE(Prune(-1).removed.empty());  // unset: keep all
  EXPECT_TRUE(Prune(5).removed.empty());
  EXPECT_EQ(StepEntries().size(), 5u);

  const PruneReport report = Prune(2);
  EXPECT_EQ(report.removed, (std::vector<std::string>{StepDirName(1), StepDirName(2), StepDirName(3)}));
  EXPECT_EQ(report.kept, (std::vector<std::string>{StepDirName(4), StepDirName(5)}));
  EXPECT_TRUE(report.skipped.empty());
  EXPECT_EQ(StepEntries(), (std::vector<std::string>{StepDirName(4), StepDirName(5)}));
  // What stays reads as before, and so does the step before latest.
  ASSERT_TRUE(CheckpointReader::Open(save_to_).ok());
  EXPECT_EQ(ReadMeta(save_to_)->step, 5);
  EXPECT_TRUE(CheckpointReader::Open(Dir(4))->VerifyAll().ok());
  EXPECT_TRUE(IsRegularFile(save_to_ + "/latest"));

  EXPECT_EQ(Prune(1).removed, (std::vector<std::string>{StepDirName(4)}));
  EXPECT_EQ(StepEntries(), (std::vector<std::string>{StepDirName(5)}));
  EXPECT_TRUE(Prune(1).removed.empty());  // latest's target is never removed
}

// A crash after a step's files and meta.json but before latest names it: the newer directory is
// not latest's, so it neither counts nor goes; the older ones are judged from latest.
TEST_F(RetentionTest, ACrashBeforePublishKeepsLatestAndTheNewerSave) {
  Save(1, 4);
  Publish(3);  // step 4 complete, latest still at 3
  // Step 5 half written: one rank file of two, no meta.json.
  ASSERT_TRUE(fs::create_directories(Dir(5)));
  std::ofstream(Dir(5) + "/" + RankFileName(0, 2)) << "partial";
  const PruneReport report = Prune(1);
  EXPECT_EQ(report.kept, (std::vector<std::string>{StepDirName(3)}));
  EXPECT_EQ(report.removed, (std::vector<std::string>{StepDirName(1), StepDirName(2)}));
  EXPECT_EQ(StepEntries(), (std::vector<std::string>{StepDirName(3), StepDirName(4), StepDirName(5)}));
  ASSERT_TRUE(CheckpointReader::Open(save_to_)->VerifyAll().ok());
}

// A crash between publishing and pruning (or during a removal) leaves old directories, complete or
// half removed; the next prune takes them. An incomplete directory never counts as a kept one.
TEST_F(RetentionTest, ACrashBeforeOrDuringPruningIsCleanedUpNextTime) {
  Save(1, 4);
  // Step 2 half removed: meta.json gone, one rank file and a writer's temporary file left.
  fs::remove(Dir(2) + "/meta.json");
  fs::remove(Dir(2) + "/" + RankFileName(1, 2));
  std::ofstream(Dir(2) + "/meta.json.tmp-0123456789abcdef") << "{";
  std::ofstream(Dir(2) + "/" + RankFileName(0, 2) + ".partial-fedcba9876543210") << "x";
  // Step 3 lost a rank file: incomplete, so it is not one of the two kept.
  fs::remove(Dir(3) + "/" + RankFileName(1, 2));
  const PruneReport report = Prune(2);
  EXPECT_EQ(report.kept, (std::vector<std::string>{StepDirName(1), StepDirName(4)}));
  EXPECT_TRUE(report.removed.empty());
  Save(5, 5);
  const PruneReport next = Prune(2);
  EXPECT_EQ(next.kept, (std::vector<std::string>{StepDirName(4), StepDirName(5)}));
  EXPECT_EQ(next.removed, (std::vector<std::string>{StepDirName(1), StepDirName(2), StepDirName(3)}));
  EXPECT_EQ(StepEntries(), (std::vector<std::string>{StepDirName(4), StepDirName(5)}));
}

// latest missing, a link, naming nothing or an incomplete directory: nothing is removed.
TEST_F(RetentionTest, NothingGoesWithoutACompleteLatest) {
  Save(1, 3);
  const auto expect_nothing_removed = [&](const std::string& what) {
    const std::vector<std::string> before = StepEntries();
    PruneReport report;
    const Status s = PruneCheckpoints(save_to_, 1, &report);
    EXPECT_EQ(s.code(), StatusCode::kFailedPrecondition) << what << ": " << s.ToString();
    EXPECT_NE(s.message().find("nothing removed"), std::string::npos) << s.ToString();
    EXPECT_TRUE(report.removed.empty()) << what;
    EXPECT_EQ(StepEntries(), before) << what;
  };
  fs::remove(Dir(3) + "/" + RankFileName(1, 2));
  expect_nothing_removed("latest names an incomplete step");
  fs::remove(save_to_ + "/latest");
  expect_nothing_removed("no latest");
  const std::string elsewhere = ScratchDir("_latest");
  std::ofstream(elsewhere + "/latest") << StepDirName(2) << "\n";
  fs::create_symlink(elsewhere + "/latest", save_to_ + "/latest");
  expect_nothing_removed("latest is a symbolic link");
  fs::remove(save_to_ + "/latest");
  std::ofstream(save_to_ + "/latest") << "../elsewhere\n";
  expect_nothing_removed("latest names something outside");
  // latest naming a link to a complete checkpoint elsewhere: not a directory of its own.
  const std::string outside = ScratchDir("_outside");
  WriteSynthetic(outside, TinyConfig(), 2, 9);
  fs::create_directory_symlink(outside + "/" + StepDirName(9), Dir(9));
  Publish(9);
  expect_nothing_removed("latest names a symbolic link");
  fs::remove(Dir(9));
  EXPECT_TRUE(CheckpointReader::Open(outside)->VerifyAll().ok());
  EXPECT_EQ(PruneCheckpoints(save_to_ + "/missing", 1).code(), StatusCode::kResourceExhausted);
}

// Names that are not the writer's, step directories holding something else, and symbolic links
// stay where they are, and nothing they point at is touched.
TEST_F(RetentionTest, WhatFujiDidNotWriteStays) {
  Save(1, 5);
  const std::vector<std::string> foreign_names = {"step-1", "step-000000001", "step-00000001.bak", "notes", "step-x"};
  for (const std::string& name : foreign_names) {
    ASSERT_TRUE(fs::create_directories(save_to_ + "/" + name));
    std::ofstream(save_to_ + "/" + name + "/meta.json") << "{}";
  }
  std::ofstream(Dir(1) + "/README\n") << "my notes on step 1\n";          // a user's file
  ASSERT_TRUE(fs::create_directories(Dir(2) + "/eval"));                 // a user's directory
  const std::string outside = ScratchDir("_outside");
  std::ofstream(outside + "/precious") << "keep me\n";
  fs::create_symlink(outside + "/precious", Dir(3) + "/meta.json.tmp-0123456789abcdef");  // a link inside
  // A link in place of a step directory, to a complete checkpoint elsewhere.
  WriteSynthetic(outside, TinyConfig(), 2, 0);
  fs::create_directory_symlink(outside + "/" + StepDirName(0), Dir(0));

  const PruneReport report = Prune(1);
  EXPECT_EQ(report.kept, (std::vector<std::string>{StepDirName(5)}));
  EXPECT_EQ(report.removed, (std::vector<std::string>{StepDirName(4)}));
  ASSERT_EQ(report.skipped.size(), 4u);
  EXPECT_NE(report.skipped[0].find(StepDirName(0) + ": not a directory of its own"), std::string::npos);
  EXPECT_NE(report.skipped[1].find("'README?', which fuji does not write"), std::string::npos) << report.skipped[1];
  EXPECT_NE(report.skipped[2].find("'eval'"), std::string::npos) << report.skipped[2];
  EXPECT_NE(report.skipped[3].find("not a regular file"), std::string::npos) << report.skipped[3];
  for (int64_t step : {1, 2, 3}) EXPECT_TRUE(IsRegularFile(Dir(step) + "/meta.json")) << step;
  for (const std::string& name : foreign_names) EXPECT_TRUE(IsRegularFile(save_to_ + "/" + name + "/meta.json"));
  EXPECT_TRUE(fs::is_symlink(Dir(0)));
  EXPECT_EQ(*ReadFile(outside + "/precious"), "keep me\n");
  EXPECT_TRUE(CheckpointReader::Open(outside)->VerifyAll().ok());
  ASSERT_TRUE(CheckpointReader::Open(save_to_)->VerifyAll().ok());
}

}  // namespace
}  // namespace fuji::ckpt
