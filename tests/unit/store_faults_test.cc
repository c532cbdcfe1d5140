// The store on a disk that fills up (a small tmpfs the test mounts; it needs root, as CI's machine
// has): writes fail UNAVAILABLE with the reason, the store
// says what is wrong (fujid's Health turns NOT_SERVING), nothing acknowledged is lost, and it
// recovers by itself once the disk has room again.
#include <sys/mount.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <string>

#include <gtest/gtest.h>

#include "daemon/store/clock.h"
#include "daemon/store/job_store.h"
#include "tests/unit/sqlite_integrity.h"

namespace fuji::store {
namespace {

class StoreFaultsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "mounting a tmpfs needs root";
    dir_ = std::string(FUJI_BINARY_DIR) + "/test_scratch/store_faults_" + std::to_string(::getpid());
    ASSERT_EQ(std::system(("rm -rf " + dir_ + " && mkdir -p " + dir_).c_str()), 0);
    if (::mount("tmpfs", dir_.c_str(), "tmpfs", 0, "size=4m,mode=0700") != 0) {
      GTEST_SKIP() << "cannot mount a tmpfs here";
    }
    mounted_ = true;
  }
  void TearDown() override {
    store_.reset();
    if (mounted_) ::umount2(dir_.c_str(), MNT_DETACH);
    if (!dir_.empty()) std::system(("rm -rf " + dir_).c_str());
  }
  // Fills the disk with a ballast file.
  void Fill() {
    std::ofstream ballast(dir_ + "/ballast", std::ios::binary);
    const std::string block(64 << 10, 'x');
    while (ballast.write(block.data(), block.size())) {
    }
  }
  Result<int64_t> Submit() {
    JobRecord job;
    job.spec = R"({"model":"/m","prompt":")" + std::string(16 << 10, 'p') + R"("})";
    return store_->Submit(job);
  }

  std::string dir_;
  bool mounted_ = false;
  FakeClock clock_;
  std::unique_ptr<JobStore> store_;
};

TEST_F(StoreFaultsTest, AFullDiskFailsWritesUnavailableUntilItClears) {
  auto store = JobStore::Open(dir_ + "/fujid.db", &clock_);
  ASSERT_TRUE(store.ok()) << store.status().ToString();
  store_ = std::move(store).value();
  std::vector<int64_t> acknowledged;
  for (int i = 0; i < 3; ++i) {
    auto id = Submit();
    ASSERT_TRUE(id.ok());
    acknowledged.push_back(*id);
  }
  EXPECT_EQ(store_->StorageFault(), "");

  Fill();
  Status full = Status::Ok();
  for (int i = 0; i < 200 && full.ok(); ++i) {  // the WAL may still have room for a few
    auto id = Submit();
    if (id.ok()) acknowledged.push_back(*id);
    full = id.status();
  }
  ASSERT_FALSE(full.ok()) << "the disk never filled";
  EXPECT_EQ(full.code(), StatusCode::kUnavailable) << full.ToString();
  EXPECT_EQ(store_->StorageFault(), "the database's disk is full");
  EXPECT_EQ(full.message().find("INSERT"), std::string::npos) << "no SQL in errors: " << full.message();

  ASSERT_EQ(::unlink((dir_ + "/ballast").c_str()), 0);
  auto after = Submit();
  ASSERT_TRUE(after.ok()) << after.status().ToString();
  acknowledged.push_back(*after);
  EXPECT_EQ(store_->StorageFault(), "");

  // Every acknowledged submit is there, and the database is whole.
  for (int64_t id : acknowledged) EXPECT_TRUE(store_->Get(id).ok()) << "job " << id;
  store_.reset();
  EXPECT_EQ(testing::IntegrityCheck(dir_ + "/fujid.db"), "ok");
}

}  // namespace
}  // namespace fuji::store
