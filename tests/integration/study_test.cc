// `fuji study` and `fuji report` end to end: real fujid and fuji-agent, the tiny shape through the
// daemon, the report written from the database with every table and chart.
#include <sys/stat.h>

#include <gtest/gtest.h>

#include "tests/integration/process_util.h"

namespace fuji::testing {
namespace {

class StudyTest : public ServiceTestBase {
 protected:
  static void SetUpTestSuite() { MakeRoot("study_test"); }
  static void TearDownTestSuite() { RemoveRoot(); }
};

bool NonEmptyFile(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 && st.st_size > 0;
}

TEST_F(StudyTest, WritesTheReportFromTheDatabase) {
  auto daemon = StartDaemon();
  auto agent = StartAgent("study-node", 2);
  const std::string out = dir_ + "/study";
  CliResult r = Fuji({"study", "--models", "tiny", "--steps", "3", "--seq-len", "32", "--ranks", "2",
                      "--max-new-tokens", "8", "--out", out},
                     address_);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const std::string report = Slurp(out + "/report.md");
  for (const char* text : {"## Inference", "## Fine-tuning", "Weights: random", "| tiny |", "SUCCEEDED",
                           "memory-per-model.png", "time-per-model.png", "memory-over-time.png", "loss-curves.png"}) {
    EXPECT_NE(report.find(text), std::string::npos) << text << "\n" << report;
  }
  for (const char* chart : {"memory-per-model.png", "time-per-model.png", "memory-over-time.png", "loss-curves.png"}) {
    EXPECT_TRUE(NonEmptyFile(out + "/" + chart)) << chart;
  }
  // The numbers come from the database: the fine-tune's losses are the stored ones.
  EXPECT_EQ(Sql("SELECT COUNT(*) FROM losses WHERE job_id = 2 AND split = 'train';"), "3\n");
  EXPECT_NE(Slurp(out + "/data/losses-2.csv").find("3,"), std::string::npos);

  // fuji report on the same jobs; an unknown job is refused in one line.
  CliResult again = Fuji({"report", "1", "2", "--out", dir_ + "/again"}, address_);
  ASSERT_EQ(again.exit_code, 0) << again.err;
  EXPECT_TRUE(NonEmptyFile(dir_ + "/again/report.md"));
  CliResult unknown = Fuji({"report", "99", "--out", dir_ + "/unknown"}, address_);
  EXPECT_EQ(unknown.exit_code, 2) << unknown.err;
  EXPECT_EQ(unknown.err.rfind("fuji: ", 0), 0u) << unknown.err;
  CliResult bad_model = Fuji({"study", "--models", "7b", "--out", dir_ + "/bad"}, address_);
  EXPECT_EQ(bad_model.exit_code, 2) << bad_model.err;
}

}  // namespace
}  // namespace fuji::testing
