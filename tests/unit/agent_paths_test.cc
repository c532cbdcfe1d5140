// The agent's checks of a job's paths against its roots (job_paths.h), and a finetune prepared in
// a confined child (the real fuji-agent serving the preparation): its token cache is the ranks'
// user's, private, and nothing is created for a refused job.
#include <pwd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <cstdlib>
#include <string>

#include "lib/common/file_util.h"
#include "worker/agent/job_paths.h"
#include "worker/launcher/finetune_prepare.h"

namespace fuji::agent {
namespace {

class AgentPathsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    base_ = std::string(FUJI_BINARY_DIR) + "/agent_paths_test_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name();
    ASSERT_EQ(std::system(("rm -rf " + base_).c_str()), 0);
    for (const char* d : {"/read/model", "/write", "/outside"}) ASSERT_TRUE(MakeDirectories(base_ + d, 0755).ok());
    // A GPT-2 config; the tokenizer comes from the fallback vocabulary.
    ASSERT_TRUE(WriteFileAtomically(base_ + "/read/model/config.json",
                                    R"({"n_positions": 64, "n_embd": 16, "n_layer": 1, "n_head": 2, "vocab_size": 50257})")
                    .ok());
    std::string text;
    for (int i = 0; i < 200; ++i) text += "Mount Fuji is the highest mountain in Japan, line " + std::to_string(i) + ".\n";
    ASSERT_TRUE(WriteFileAtomically(base_ + "/read/corpus.txt", text).ok());
    ASSERT_TRUE(WriteFileAtomically(base_ + "/outside/secret.txt", "secret line\n").ok());
    auto paths = PathPolicy::Create({base_ + "/read"}, {base_ + "/write"});
    ASSERT_TRUE(paths.ok()) << paths.status().ToString();
    paths_ = std::move(paths).value();
  }
  void TearDown() override { std::system(("rm -rf " + base_).c_str()); }

  FinetuneSpec Spec() const {
    FinetuneSpec spec;
    spec.model = base_ + "/read/model";
    spec.data = base_ + "/read/corpus.txt";
    spec.save_to = base_ + "/write/run/ckpt";
    spec.cache_dir = base_ + "/write/run/tokens";
    spec.seq_len = 16;
    return spec;
  }

  std::string base_;
  PathPolicy paths_;
};

TEST_F(AgentPathsTest, AFinetuneInsideTheRootsGetsItsRealPaths) {
  ASSERT_EQ(::symlink((base_ + "/read/corpus.txt").c_str(), (base_ + "/read/alias.txt").c_str()), 0);
  FinetuneSpec spec = Spec();
  spec.data = base_ + "/read/model/../alias.txt";
  spec.token_cache = "/etc/passwd";
  spec.rendezvous = "file:/etc/x";
  spec.node = "another-node";
  spec.bind_addr = "10.0.0.1";
  ASSERT_TRUE(ConfineFinetunePaths(paths_, &spec).ok());
  EXPECT_EQ(spec.node, "");  // the agent's to set for a gang across agents
  EXPECT_EQ(spec.bind_addr, "");
  EXPECT_EQ(spec.data, base_ + "/read/corpus.txt");
  EXPECT_EQ(spec.model, base_ + "/read/model");
  EXPECT_EQ(spec.save_to, base_ + "/write/run/ckpt");
  EXPECT_EQ(spec.token_cache, "");  // the launcher's to set, never the job's
  EXPECT_EQ(spec.rendezvous, "");
  EXPECT_FALSE(IsDirectory(base_ + "/write/run"));  // checking creates nothing

  // No cache_dir: the write root's cache directory.
  FinetuneSpec plain = Spec();
  plain.cache_dir.clear();
  ASSERT_TRUE(ConfineFinetunePaths(paths_, &plain).ok());
  EXPECT_EQ(plain.cache_dir, base_ + "/write/" + kDefaultCacheDirName);
}

TEST_F(AgentPathsTest, EveryWayOutOfTheRootsIsRefused) {
  ASSERT_EQ(::symlink((base_ + "/outside").c_str(), (base_ + "/write/out").c_str()), 0);
  ASSERT_EQ(::mkfifo((base_ + "/read/fifo.txt").c_str(), 0600), 0);
  struct Case {
    std::string FinetuneSpec::*field;
    std::string value;
    std::string said;
  };
  const Case cases[] = {
      {&FinetuneSpec::data, base_ + "/outside/secret.txt", "data path " + base_ + "/outside/secret.txt is outside"},
      {&FinetuneSpec::data, base_ + "/read/../outside/secret.txt", "is outside this agent's read roots"},
      {&FinetuneSpec::data, base_ + "/write/out/secret.txt", "is outside this agent's read roots"},
      {&FinetuneSpec::data, "/proc/self/environ", "is outside this agent's read roots"},
      {&FinetuneSpec::data, base_ + "/read/fifo.txt", "is a FIFO"},
      {&FinetuneSpec::model, base_ + "/outside", "model path"},
      {&FinetuneSpec::save_to, base_ + "/read/ckpt", "save_to path " + base_ + "/read/ckpt is outside this agent's write roots"},
      {&FinetuneSpec::save_to, base_ + "/write/out/ckpt", "is outside this agent's write roots"},
      {&FinetuneSpec::cache_dir, base_ + "/write/new/../../outside", "cache_dir path"},
  };
  for (const Case& c : cases) {
    FinetuneSpec spec = Spec();
    spec.*c.field = c.value;
    const Status s = ConfineFinetunePaths(paths_, &spec);
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << c.value;
    EXPECT_NE(s.message().find(c.said), std::string::npos) << s.message();
  }
  EXPECT_FALSE(IsDirectory(base_ + "/write/run"));
  EXPECT_FALSE(IsDirectory(base_ + "/outside/ckpt"));
}

TEST_F(AgentPathsTest, AnInferenceModelAndWhatItHoldsStayInside) {
  nlohmann::json request = {{"model", base_ + "/read/model/"}, {"prompt", "Mt. Fuji is"}};
  ASSERT_TRUE(ConfineInferPaths(paths_, &request).ok());
  EXPECT_EQ(request["model"], base_ + "/read/model");

  // A file of the model planted as a link out of the roots.
  ASSERT_EQ(::symlink((base_ + "/outside/secret.txt").c_str(), (base_ + "/read/model/vocab.json").c_str()), 0);
  request["model"] = base_ + "/read/model";
  const Status s = ConfineInferPaths(paths_, &request);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("model file " + base_ + "/read/model/vocab.json is outside"), std::string::npos)
      << s.message();

  nlohmann::json none = {{"prompt", "x"}};
  EXPECT_EQ(ConfineInferPaths(paths_, &none).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(ConfineInferPaths(PathPolicy(), &request).code(), StatusCode::kInvalidArgument);
}

TEST_F(AgentPathsTest, AConfinedPreparationWritesAPrivateCacheAsTheRanksUser) {
  launch::Confinement confinement;
  if (::geteuid() == 0) {
    auto user = launch::RankUser(launch::LookUpUser("fuji").ok() ? "fuji" : "nobody");
    ASSERT_TRUE(user.ok()) << user.status().ToString();
    confinement.user = *user;
    // The ranks' user must reach the scratch directory and write in the write root.
    ASSERT_EQ(::chmod(base_.c_str(), 0755), 0);
    ASSERT_EQ(::chown((base_ + "/write").c_str(), confinement.user->uid, confinement.user->gid), 0);
  }
  const uid_t owner = confinement.user ? confinement.user->uid : ::geteuid();
  launch::PrepareOptions options;
  options.fallback_vocab_dir = std::string(FUJI_BINARY_DIR) + "/share/fuji";
  options.tokenizer_threads = 1;
  const std::string agent = std::string(FUJI_BINARY_DIR) + "/bin/fuji-agent";

  FinetuneSpec spec = Spec();
  ASSERT_TRUE(ConfineFinetunePaths(paths_, &spec).ok());
  auto prepared = launch::PrepareFinetuneConfined(spec, options, agent, confinement);
  ASSERT_TRUE(prepared.ok()) << prepared.status().ToString();
  EXPECT_TRUE(prepared->tokenized);
  EXPECT_GT(prepared->num_tokens, 0u);
  EXPECT_EQ(prepared->config.n_positions, 64);
  const std::string cache = prepared->spec.token_cache;
  EXPECT_EQ(cache.rfind(base_ + "/write/run/tokens/", 0), 0u) << cache;
  struct stat st {};
  ASSERT_EQ(::stat(cache.c_str(), &st), 0);
  EXPECT_EQ(st.st_uid, owner);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  ASSERT_EQ(::stat((base_ + "/write/run/tokens").c_str(), &st), 0);
  EXPECT_EQ(st.st_uid, owner);
  EXPECT_EQ(st.st_mode & 0777, 0700u);
  ASSERT_EQ(::stat((base_ + "/write/run/ckpt").c_str(), &st), 0);  // the save directory, checked writable
  EXPECT_EQ(st.st_uid, owner);

  // The same content is found again; an error comes back with its code.
  auto again = launch::PrepareFinetuneConfined(spec, options, agent, confinement);
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  EXPECT_FALSE(again->tokenized);
  EXPECT_EQ(again->spec.token_cache, cache);
  spec.seq_len = 4096;
  auto refused = launch::PrepareFinetuneConfined(spec, options, agent, confinement);
  EXPECT_EQ(refused.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(refused.status().message().find("above the model's n_positions 64"), std::string::npos)
      << refused.status().message();
}

}  // namespace
}  // namespace fuji::agent
