// The CLI's profile (client/profile.h): the files fuji login writes and their modes, what is
// refused on reading, and where each piece of a connection comes from.
#include "client/profile.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <string>

#include <gtest/gtest.h>

#include "lib/common/file_util.h"

namespace fuji::client {
namespace {

const std::string kToken = "fuji_u_3_" + std::string(64, 'b');
const std::string kCaPem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";

unsigned ModeOf(const std::string& path) {
  struct stat st {};
  EXPECT_EQ(::lstat(path.c_str(), &st), 0) << path;
  return st.st_mode & 07777;
}

class CliProfileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/fuji-cli-profile-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    root_ = tmpl;
    home_ = root_ + "/home";
    ASSERT_EQ(::mkdir(home_.c_str(), 0700), 0);
    // The test owns the variables the resolution reads.
    ::setenv("HOME", home_.c_str(), 1);
    ::unsetenv("XDG_CONFIG_HOME");
    for (const char* name : {"FUJI_SERVER", "FUJI_CA", "FUJI_TOKEN"}) ::unsetenv(name);
  }
  void TearDown() override { std::system(("rm -rf " + root_).c_str()); }

  std::string Dir() const { return home_ + "/.config/fuji"; }

  std::string root_, home_;
};

TEST_F(CliProfileTest, ProfileDirFollowsXdgThenHome) {
  EXPECT_EQ(ProfileDir(), home_ + "/.config/fuji");
  ::setenv("XDG_CONFIG_HOME", "/etc/xdg-here", 1);
  EXPECT_EQ(ProfileDir(), "/etc/xdg-here/fuji");
  ::setenv("XDG_CONFIG_HOME", "relative", 1);  // ignored, as the XDG spec says
  EXPECT_EQ(ProfileDir(), home_ + "/.config/fuji");
}

TEST_F(CliProfileTest, SaveWritesPrivateFilesThatLoadReads) {
  ASSERT_TRUE(SaveProfile(Dir(), "fuji.example:7070", kCaPem, kToken).ok());
  EXPECT_EQ(ModeOf(Dir()), 0700u);
  EXPECT_EQ(ModeOf(Dir() + "/profile.json"), 0600u);
  EXPECT_EQ(ModeOf(Dir() + "/ca.pem"), 0600u);
  Result<Profile> p = LoadProfile(Dir());
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  EXPECT_EQ(p->server, "fuji.example:7070");
  EXPECT_EQ(p->token, kToken);
  EXPECT_EQ(p->ca_file, Dir() + "/ca.pem");
  EXPECT_EQ(*ReadFile(p->ca_file), kCaPem);
  // A second login replaces both.
  ASSERT_TRUE(SaveProfile(Dir(), "other:7070", kCaPem, kToken + "").ok());
  EXPECT_EQ(LoadProfile(Dir())->server, "other:7070");
}

TEST_F(CliProfileTest, SaveNeverWritesThroughAPlantedLink) {
  ASSERT_EQ(::mkdir((home_ + "/.config").c_str(), 0700), 0);
  ASSERT_EQ(::mkdir(Dir().c_str(), 0700), 0);
  const std::string target = root_ + "/target";
  std::ofstream(target) << "untouched";
  ASSERT_EQ(::symlink(target.c_str(), (Dir() + "/profile.json").c_str()), 0);
  ASSERT_EQ(::symlink(target.c_str(), (Dir() + "/ca.pem").c_str()), 0);
  ASSERT_TRUE(SaveProfile(Dir(), "s:1", kCaPem, kToken).ok());
  EXPECT_EQ(*ReadFile(target), "untouched");
  EXPECT_EQ(ModeOf(Dir() + "/profile.json"), 0600u);
  struct stat st {};
  ASSERT_EQ(::lstat((Dir() + "/profile.json").c_str(), &st), 0);
  EXPECT_TRUE(S_ISREG(st.st_mode));
}

TEST_F(CliProfileTest, SaveRefusesADirectoryOthersMayEnter) {
  ASSERT_EQ(::mkdir((home_ + "/.config").c_str(), 0700), 0);
  ASSERT_EQ(::mkdir(Dir().c_str(), 0755), 0);
  ASSERT_EQ(::chmod(Dir().c_str(), 0755), 0);
  Status s = SaveProfile(Dir(), "s:1", kCaPem, kToken);
  EXPECT_EQ(s.code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(s.message().find("chmod 700"), std::string::npos) << s.message();
  EXPECT_FALSE(IsRegularFile(Dir() + "/profile.json"));
}

TEST_F(CliProfileTest, LoadRefusesWhatOthersMayReadLinksAndGarbage) {
  EXPECT_EQ(LoadProfile(Dir()).status().code(), StatusCode::kNotFound);
  ASSERT_TRUE(SaveProfile(Dir(), "s:1", kCaPem, kToken).ok());
  const std::string path = Dir() + "/profile.json";
  for (unsigned mode : {0640u, 0604u, 0660u}) {
    ASSERT_EQ(::chmod(path.c_str(), mode), 0);
    Status s = LoadProfile(Dir()).status();
    EXPECT_EQ(s.code(), StatusCode::kFailedPrecondition) << mode;
    EXPECT_NE(s.message().find("chmod 600"), std::string::npos) << s.message();
    EXPECT_EQ(s.message().find(kToken), std::string::npos);
  }
  ASSERT_EQ(::chmod(path.c_str(), 0600), 0);
  for (const std::string& text : {std::string("not json ") + kToken, std::string("[]"), std::string("{\"server\": 1}"),
                                  std::string("{\"server\": \"s:1\", \"token\": \"\"}"),
                                  std::string(70 << 10, ' ')}) {
    ASSERT_TRUE(WriteFileAtomically(path, text, 0600).ok());
    Status s = LoadProfile(Dir()).status();
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << text.substr(0, 20);
    EXPECT_EQ(s.message().find(kToken), std::string::npos) << "the message never repeats the token";
  }
  const std::string elsewhere = root_ + "/elsewhere.json";
  ASSERT_TRUE(WriteFileAtomically(elsewhere, "{\"server\": \"s:1\", \"token\": \"" + kToken + "\"}", 0600).ok());
  ASSERT_EQ(::unlink(path.c_str()), 0);
  ASSERT_EQ(::symlink(elsewhere.c_str(), path.c_str()), 0);
  EXPECT_EQ(LoadProfile(Dir()).status().code(), StatusCode::kFailedPrecondition);
}

TEST_F(CliProfileTest, EachPieceComesFromTheFlagThenTheEnvironmentThenTheProfile) {
  // Nothing anywhere: the default address, and no token.
  Result<Connection> none = ResolveConnection({});
  EXPECT_EQ(none.status().code(), StatusCode::kUnauthenticated);
  EXPECT_NE(none.status().message().find("127.0.0.1:7070"), std::string::npos) << none.status().message();

  ASSERT_TRUE(SaveProfile(Dir(), "profile.host:7070", kCaPem, kToken).ok());
  Result<Connection> c = ResolveConnection({});
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->endpoint.address, "profile.host:7070");
  EXPECT_EQ(c->endpoint.ca_file, Dir() + "/ca.pem");
  EXPECT_EQ(c->token, kToken);
  EXPECT_EQ(c->token_source, Dir() + "/profile.json");
  EXPECT_FALSE(c->endpoint.insecure);

  ::setenv("FUJI_SERVER", "env.host:1", 1);
  ::setenv("FUJI_CA", "/env/ca.pem", 1);
  ::setenv("FUJI_TOKEN", "fuji_u_9_env", 1);
  c = ResolveConnection({});
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->endpoint.address, "env.host:1");
  EXPECT_EQ(c->endpoint.ca_file, "/env/ca.pem");
  EXPECT_EQ(c->token, "fuji_u_9_env");
  EXPECT_EQ(c->token_source, "FUJI_TOKEN");

  c = ResolveConnection({"flag.host:2", "/flag/ca.pem", false});
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->endpoint.address, "flag.host:2");
  EXPECT_EQ(c->endpoint.ca_file, "/flag/ca.pem");

  // An empty variable counts as unset.
  ::setenv("FUJI_TOKEN", "", 1);
  c = ResolveConnection({});
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->token, kToken);
}

TEST_F(CliProfileTest, ABrokenProfileMattersOnlyWhenItIsNeeded) {
  ASSERT_TRUE(SaveProfile(Dir(), "s:1", kCaPem, kToken).ok());
  ASSERT_EQ(::chmod((Dir() + "/profile.json").c_str(), 0644), 0);
  EXPECT_EQ(ResolveConnection({}).status().code(), StatusCode::kFailedPrecondition);
  ::setenv("FUJI_TOKEN", kToken.c_str(), 1);
  ::setenv("FUJI_CA", "/env/ca.pem", 1);
  EXPECT_TRUE(ResolveConnection({"s:1", "", false}).ok());
}

TEST_F(CliProfileTest, NoCaIsRefusedUnlessInsecure) {
  ::setenv("FUJI_TOKEN", kToken.c_str(), 1);
  Result<Connection> c = ResolveConnection({"127.0.0.1:1", "", false});
  EXPECT_EQ(c.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(c.status().message().find("no CA"), std::string::npos);
  c = ResolveConnection({"127.0.0.1:1", "", true});
  ASSERT_TRUE(c.ok());
  EXPECT_TRUE(c->endpoint.insecure);
}

}  // namespace
}  // namespace fuji::client
