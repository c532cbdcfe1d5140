// The fixture of the daemon's unit tests: a fresh job store in a scratch directory of the build
// tree, on fake time, removed after each test.
#pragma once

#include <unistd.h>

#include <cstdlib>
#include <memory>
#include <string>

#include <gtest/gtest.h>

#include "daemon/store/clock.h"
#include "daemon/store/job_store.h"

namespace fuji::daemon::testing {

class StoreTest : public ::testing::Test {
 protected:
  // `name` tells the scratch directories of the test files apart.
  explicit StoreTest(std::string name) : name_(std::move(name)) {}

  void SetUp() override {
    dir_ = std::string(FUJI_BINARY_DIR) + "/test_scratch/" + name_ + "_" +
           std::to_string(::getpid()) + "_" +
           ::testing::UnitTest::GetInstance()->current_test_info()->name();
    ASSERT_EQ(std::system(("rm -rf " + dir_ + " && mkdir -p " + dir_).c_str()), 0);
    auto store = store::JobStore::Open(dir_ + "/fujid.db", &clock_);
    ASSERT_TRUE(store.ok()) << store.status().ToString();
    store_ = std::move(store).value();
  }
  // Whatever uses the store must be gone before this runs.
  void TearDown() override {
    store_.reset();
    std::system(("rm -rf " + dir_).c_str());
  }

  std::string name_;
  std::string dir_;
  store::FakeClock clock_;
  std::unique_ptr<store::JobStore> store_;
};

}  // namespace fuji::daemon::testing
