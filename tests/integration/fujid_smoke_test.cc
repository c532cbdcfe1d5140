// The fujid binary: on first start it makes its cluster CA, certificate and admin token (private
// files beside the database), serves Health over TLS only on the port it is given, exits 0 on
// SIGTERM, and refuses a database that is not one, with one line on stderr and the file left as it
// was.
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <thread>

#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include "fuji/v1/jobs.grpc.pb.h"
#include "lib/rpc/connection.h"

namespace {

std::string Slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// A port nobody listens on right now.
int FreePort() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  socklen_t len = sizeof(addr);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  ::close(fd);
  return ntohs(addr.sin_port);
}

// Starts fujid with stderr to err_path; returns its pid.
pid_t StartFujid(const std::string& db, const std::string& listen, const std::string& err_path) {
  pid_t pid = ::fork();
  if (pid == 0) {
    std::freopen(err_path.c_str(), "w", stderr);
    std::string binary = std::string(FUJI_BINARY_DIR) + "/bin/fujid";
    ::execl(binary.c_str(), binary.c_str(), "--db", db.c_str(), "--listen", listen.c_str(),
            static_cast<char*>(nullptr));
    ::_exit(127);
  }
  return pid;
}

class FujidSmokeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = std::string(FUJI_BINARY_DIR) + "/test_scratch/fujid_smoke_" +
           std::to_string(::getpid()) + "_" + info->name();
    ASSERT_EQ(std::system(("rm -rf " + dir_ + " && mkdir -p " + dir_).c_str()), 0);
  }
  void TearDown() override { std::system(("rm -rf " + dir_).c_str()); }
  std::string dir_;
};

TEST_F(FujidSmokeTest, ServesHealthAndExitsCleanlyOnSigterm) {
  const std::string address = "127.0.0.1:" + std::to_string(FreePort());
  pid_t pid = StartFujid(dir_ + "/var/fujid.db", address, dir_ + "/err");
  ASSERT_GT(pid, 0);
  const std::string state = dir_ + "/var";
  // Until it answers: it starts within a second when all is well; thirty leave room for a stalled,
  // busy machine.
  const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  bool healthy = false;
  fuji::v1::HealthResponse health;
  while (!healthy && std::chrono::steady_clock::now() < give_up) {
    std::string token = Slurp(state + "/admin.token");
    if (!token.empty() && token.back() == '\n') token.pop_back();
    auto channel = fuji::rpc::MakeChannel({address, state + "/ca.crt", false}, grpc::ChannelArguments());
    if (!token.empty() && channel.ok()) {
      grpc::ClientContext context;
      context.set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(500));
      fuji::rpc::Authorize(&context, token);
      healthy = fuji::v1::JobService::NewStub(*channel)->Health(&context, fuji::v1::HealthRequest(), &health).ok();
    }
    if (!healthy) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_TRUE(healthy) << Slurp(dir_ + "/err");
  EXPECT_EQ(health.user(), "admin");
  EXPECT_TRUE(health.admin());
  // The keys, the token and the database are the daemon user's alone.
  for (const char* name : {"ca.key", "server.key", "admin.token", "fujid.db"}) {
    struct stat st {};
    ASSERT_EQ(::stat((state + "/" + name).c_str(), &st), 0) << name;
    EXPECT_EQ(st.st_mode & 077, 0u) << name << " is readable by others";
  }
  // Plaintext gets nowhere: fujid speaks TLS only.
  {
    auto plain = fuji::v1::JobService::NewStub(grpc::CreateChannel(address, grpc::InsecureChannelCredentials()));
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(2));
    fuji::v1::HealthResponse ignored;
    EXPECT_FALSE(plain->Health(&context, fuji::v1::HealthRequest(), &ignored).ok());
  }
  ASSERT_EQ(::kill(pid, SIGTERM), 0);
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status)) << Slurp(dir_ + "/err");
  EXPECT_EQ(WEXITSTATUS(status), 0) << Slurp(dir_ + "/err");
  std::ifstream db(dir_ + "/var/fujid.db");
  EXPECT_TRUE(db.good());  // ./var/ made when missing
}

TEST_F(FujidSmokeTest, RefusesRandomBytesWithOneLineAndLeavesTheFileAlone) {
  std::string bytes(8192, '\0');
  std::mt19937 rng(7);
  for (char& c : bytes) c = static_cast<char>(rng());
  const std::string db = dir_ + "/random.db";
  std::ofstream(db, std::ios::binary) << bytes;
  pid_t pid = StartFujid(db, "127.0.0.1:0", dir_ + "/err");
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_NE(WEXITSTATUS(status), 0);
  const std::string err = Slurp(dir_ + "/err");
  EXPECT_EQ(err.rfind("fujid: ", 0), 0u) << err;
  EXPECT_EQ(std::count(err.begin(), err.end(), '\n'), 1) << err;
  EXPECT_EQ(Slurp(db), bytes);
}

}  // namespace
