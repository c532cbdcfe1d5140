// Tests of lib/common/path_policy: paths inside and outside an agent's roots, the ways out of a
// root (.., a planted symbolic link, /proc), special files, and refusals that tell nothing about
// what lies outside.
#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <cstdlib>
#include <string>

#include "lib/common/file_util.h"
#include "lib/common/path_policy.h"

namespace fuji {
namespace {

class PathPolicyTest : public ::testing::Test {
 protected:
  void SetUp() override {
    base_ = std::string(FUJI_BINARY_DIR) + "/path_policy_test_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name();
    ASSERT_EQ(std::system(("rm -rf " + base_).c_str()), 0);
    for (const char* d : {"/read/models/tiny", "/write", "/outside/dir"}) {
      ASSERT_TRUE(MakeDirectories(base_ + d).ok());
    }
    ASSERT_TRUE(WriteFileAtomically(base_ + "/read/corpus.txt", "text").ok());
    ASSERT_TRUE(WriteFileAtomically(base_ + "/outside/secret.txt", "secret").ok());
    auto policy = PathPolicy::Create({base_ + "/read"}, {base_ + "/write"});
    ASSERT_TRUE(policy.ok()) << policy.status().ToString();
    policy_ = std::move(policy).value();
  }
  void TearDown() override { std::system(("rm -rf " + base_).c_str()); }

  std::string base_;
  PathPolicy policy_;
};

TEST_F(PathPolicyTest, InsideARootIsItsRealPath) {
  auto model = policy_.CheckRead(base_ + "/read/models/tiny", "model path");
  ASSERT_TRUE(model.ok()) << model.status().ToString();
  EXPECT_EQ(*model, base_ + "/read/models/tiny");
  EXPECT_EQ(*policy_.CheckRead(base_ + "/read/models/../corpus.txt"), base_ + "/read/corpus.txt");
  EXPECT_TRUE(policy_.CheckRead(base_ + "/read").ok());
  // A write root is readable; a read root is not writable.
  EXPECT_TRUE(policy_.CheckRead(base_ + "/write").ok());
  EXPECT_EQ(policy_.CheckWrite(base_ + "/read/new").status().code(), StatusCode::kInvalidArgument);
  // Missing inside a root may be said.
  EXPECT_EQ(policy_.CheckRead(base_ + "/read/missing").status().code(), StatusCode::kNotFound);
}

TEST_F(PathPolicyTest, OutsideIsRefusedNamingThePathAndTheRoots) {
  const std::string path = base_ + "/outside/secret.txt";
  auto r = policy_.CheckRead(path, "model path");
  ASSERT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(r.status().message(), "model path " + path + " is outside this agent's read roots (" + base_ +
                                      "/read, " + base_ + "/write)");
  auto w = policy_.CheckWrite(base_ + "/outside/ckpt", "save_to path");
  ASSERT_EQ(w.status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(w.status().message(),
            "save_to path " + base_ + "/outside/ckpt is outside this agent's write roots (" + base_ + "/write)");
  // A sibling whose name starts like a root is not inside it.
  ASSERT_TRUE(MakeDirectories(base_ + "/reader").ok());
  EXPECT_FALSE(policy_.CheckRead(base_ + "/reader").ok());
}

TEST_F(PathPolicyTest, DotDotCannotLeaveARoot) {
  EXPECT_FALSE(policy_.CheckRead(base_ + "/read/../outside/secret.txt").ok());
  EXPECT_FALSE(policy_.CheckRead(base_ + "/read/models/../../outside").ok());
  EXPECT_FALSE(policy_.CheckWrite(base_ + "/write/../outside/new").ok());
  // Below a name that does not exist yet, ".." cannot be resolved: refused as outside.
  auto missing = policy_.CheckWrite(base_ + "/write/new/../../outside/x", "save_to path");
  EXPECT_EQ(missing.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(missing.status().message().find("is outside this agent's write roots"), std::string::npos);
  EXPECT_FALSE(policy_.CheckWrite(base_ + "/write/new/./x").ok());
}

TEST_F(PathPolicyTest, ASymbolicLinkPlantedInsideThatPointsOutIsRefused) {
  ASSERT_EQ(::symlink((base_ + "/outside").c_str(), (base_ + "/read/link").c_str()), 0);
  ASSERT_EQ(::symlink((base_ + "/outside").c_str(), (base_ + "/write/link").c_str()), 0);
  ASSERT_EQ(::symlink((base_ + "/outside/nothing-here").c_str(), (base_ + "/write/dangling").c_str()), 0);
  EXPECT_FALSE(policy_.CheckRead(base_ + "/read/link/secret.txt").ok());
  EXPECT_FALSE(policy_.CheckRead(base_ + "/read/link").ok());
  EXPECT_FALSE(policy_.CheckWrite(base_ + "/write/link/new-dir").ok());
  EXPECT_FALSE(policy_.CheckWrite(base_ + "/write/dangling").ok());
  // A link that stays inside resolves to its target.
  ASSERT_EQ(::symlink((base_ + "/read/corpus.txt").c_str(), (base_ + "/read/alias.txt").c_str()), 0);
  EXPECT_EQ(*policy_.CheckRead(base_ + "/read/alias.txt"), base_ + "/read/corpus.txt");
}

TEST_F(PathPolicyTest, KernelFileSystemsAndSpecialFilesAreRefused) {
  EXPECT_EQ(policy_.CheckRead("/proc/self/environ").status().code(), StatusCode::kInvalidArgument);
  auto everything = PathPolicy::Create({"/"}, {});
  ASSERT_TRUE(everything.ok());
  auto proc = everything->CheckRead("/proc/self/environ", "data path");
  EXPECT_EQ(proc.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(proc.status().message().find("under /proc, /sys or /dev"), std::string::npos);
  EXPECT_FALSE(everything->CheckRead("/dev/null").ok());
  EXPECT_FALSE(everything->CheckRead("/sys/kernel").ok());
  EXPECT_FALSE(PathPolicy::Create({"/proc"}, {}).ok());

  const std::string fifo = base_ + "/read/fifo.txt";
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  auto r = policy_.CheckRead(fifo, "data path");
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(r.status().message(), "data path " + fifo + " is a FIFO, not a file or directory");
  const std::string write_fifo = base_ + "/write/fifo";
  ASSERT_EQ(::mkfifo(write_fifo.c_str(), 0600), 0);
  EXPECT_FALSE(policy_.CheckWrite(write_fifo).ok());
}

TEST_F(PathPolicyTest, ARefusalIsTheSameWhetherOrNotThePathOutsideExists) {
  for (const bool write : {false, true}) {
    auto check = [&](const std::string& p) {
      return write ? policy_.CheckWrite(p, "path").status() : policy_.CheckRead(p, "path").status();
    };
    const std::string there = base_ + "/outside/secret.txt";
    const std::string missing = base_ + "/outside/missing.txt";
    const Status a = check(there);
    const Status b = check(missing);
    EXPECT_EQ(a.code(), b.code());
    EXPECT_EQ(a.message().substr(there.size() + 5), b.message().substr(missing.size() + 5));
    EXPECT_EQ(a.message().find("no such"), std::string::npos);
    // The same through a link planted inside a root.
    const std::string link = base_ + (write ? "/write" : "/read") + "/out";
    ::unlink(link.c_str());
    ASSERT_EQ(::symlink((base_ + "/outside").c_str(), link.c_str()), 0);
    EXPECT_EQ(check(link + "/secret.txt").message().substr(link.size() + 16),
              check(link + "/missing.txt").message().substr(link.size() + 17));
  }
}

TEST_F(PathPolicyTest, AWritePathWhoseParentsDoNotExistYetIsFine) {
  auto w = policy_.CheckWrite(base_ + "/write/a/b/c/", "save_to path");
  ASSERT_TRUE(w.ok()) << w.status().ToString();
  EXPECT_EQ(*w, base_ + "/write/a/b/c");
  EXPECT_FALSE(IsDirectory(base_ + "/write/a"));  // a check creates nothing
  EXPECT_EQ(policy_.WriteRootOf(*w), base_ + "/write");
  EXPECT_EQ(policy_.WriteRootOf(base_ + "/read"), "");
  // Below a regular file nothing can be created.
  ASSERT_TRUE(WriteFileAtomically(base_ + "/write/file", "x").ok());
  EXPECT_FALSE(policy_.CheckWrite(base_ + "/write/file/d").ok());
  EXPECT_TRUE(policy_.CheckWrite(base_ + "/write/file").ok());
}

TEST_F(PathPolicyTest, ARootReplacedAfterTheStartIsNoLongerARoot) {
  ASSERT_EQ(::rename((base_ + "/write").c_str(), (base_ + "/write.old").c_str()), 0);
  ASSERT_TRUE(MakeDirectories(base_ + "/write").ok());
  EXPECT_FALSE(policy_.CheckWrite(base_ + "/write/ckpt").ok());
}

TEST(PathPolicyRootsTest, RootsMustBeExistingDirectoriesAndNoRootsRefuseEverything) {
  auto missing = PathPolicy::Create({"/nonexistent-fuji-root"}, {});
  EXPECT_EQ(missing.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(missing.status().message().find("--allow-read /nonexistent-fuji-root"), std::string::npos);
  EXPECT_FALSE(PathPolicy::Create({}, {"/etc/hostname"}).ok());

  const PathPolicy none;
  EXPECT_TRUE(none.empty());
  auto r = none.CheckRead("/etc/hostname", "model path");
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("start fuji-agent with --allow-read DIR"), std::string::npos);
  EXPECT_NE(r.status().message().find("--allow-write DIR"), std::string::npos);
  EXPECT_EQ(none.Describe(), "no roots");
}

}  // namespace
}  // namespace fuji
