// fujid's observability on an in-process server: the standard grpc.health.v1.Health (no token,
// NOT_SERVING while the database cannot commit), server reflection (no token), and /metrics on
// the plaintext --metrics-listen (loopback only, open with metrics_open_on_loopback).
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <future>

#include <grpcpp/generic/generic_stub.h>

#include "tests/integration/fujid_test_util.h"

namespace fuji::testing {
namespace {

std::string Bytes(const grpc::ByteBuffer& buffer) {
  std::vector<grpc::Slice> slices;
  std::string out;
  if (!buffer.Dump(&slices).ok()) return out;
  for (const grpc::Slice& s : slices)
    out.append(reinterpret_cast<const char*>(s.begin()), s.size());
  return out;
}

class FujidMetricsTest : public FujidTest {
 protected:
  // A channel with fujid's CA and no token.
  std::shared_ptr<grpc::Channel> Anonymous() {
    grpc::SslCredentialsOptions ca;
    ca.pem_root_certs = Slurp(dir_ + "/ca.crt");
    return grpc::CreateChannel("127.0.0.1:" + std::to_string(server_->port()),
                               grpc::SslCredentials(ca));
  }

  // grpc.health.v1.Health/Check for the whole server: "SERVING", "NOT_SERVING", or the error.
  std::string Health() {
    grpc::GenericStub stub(Anonymous());
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    grpc::Slice empty("");
    grpc::ByteBuffer request(&empty, 1), response;
    std::promise<grpc::Status> done;
    stub.UnaryCall(&context, "/grpc.health.v1.Health/Check", grpc::StubOptions(), &request,
                   &response, [&](grpc::Status status) { done.set_value(status); });
    grpc::Status status = done.get_future().get();
    if (!status.ok()) return "error: " + status.error_message();
    const std::string bytes = Bytes(response);  // HealthCheckResponse: field 1, varint
    if (bytes == std::string("\x08\x01", 2)) return "SERVING";
    if (bytes == std::string("\x08\x02", 2)) return "NOT_SERVING";
    return "unexpected answer of " + std::to_string(bytes.size()) + " bytes";
  }

  static std::string Slurp(const std::string& path) {
    std::ifstream in(path);
    return std::string(std::istreambuf_iterator<char>(in), {});
  }
};

TEST_F(FujidMetricsTest, HealthAndReflectionAnswerWithoutAToken) {
  StartServer();
  EXPECT_EQ(Health(), "SERVING");

  // ServerReflectionInfo with list_services (field 7, ""): the answer names fuji's services.
  grpc::GenericStub stub(Anonymous());
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  grpc::CompletionQueue cq;
  auto call = stub.PrepareCall(
      &context, "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", &cq);
  void* tag = nullptr;
  bool ok = false;
  auto step = [&](int expected) {
    EXPECT_TRUE(cq.Next(&tag, &ok));
    EXPECT_EQ(tag, reinterpret_cast<void*>(expected));
    return ok;
  };
  call->StartCall(reinterpret_cast<void*>(1));
  ASSERT_TRUE(step(1));
  grpc::Slice list("\x3a\x00", 2);
  grpc::ByteBuffer request(&list, 1), response;
  call->Write(request, reinterpret_cast<void*>(2));
  ASSERT_TRUE(step(2));
  call->WritesDone(reinterpret_cast<void*>(3));
  ASSERT_TRUE(step(3));
  call->Read(&response, reinterpret_cast<void*>(4));
  ASSERT_TRUE(step(4));
  grpc::Status status;
  call->Finish(&status, reinterpret_cast<void*>(5));
  step(5);
  EXPECT_TRUE(status.ok()) << status.error_message();
  const std::string services = Bytes(response);
  for (const char* name : {"fuji.v1.JobService", "fuji.v1.WorkerService", "fuji.v1.AdminService",
                           "grpc.health.v1.Health"}) {
    EXPECT_NE(services.find(name), std::string::npos) << name;
  }
}

// A full disk under fujid's database (a tmpfs the test mounts, as root): Health answers
// NOT_SERVING while nothing commits, SERVING once a write commits again.
TEST_F(FujidMetricsTest, HealthIsNotServingWhileTheDiskIsFull) {
  if (::geteuid() != 0) GTEST_SKIP() << "mounting a tmpfs needs root";
  if (::mount("tmpfs", dir_.c_str(), "tmpfs", 0, "size=6m,mode=0700") != 0)
    GTEST_SKIP() << "no tmpfs here";
  struct Unmount {
    std::string dir;
    ~Unmount() { ::umount2(dir.c_str(), MNT_DETACH); }
  } unmount{dir_};
  ASSERT_EQ(::mkdir((dir_ + "/model").c_str(), 0700), 0);
  std::ofstream(dir_ + "/model/config.json") << "{}\n";
  StartServer();
  EXPECT_EQ(Health(), "SERVING");
  {
    std::ofstream ballast(dir_ + "/ballast", std::ios::binary);
    const std::string block(64 << 10, 'x');
    while (ballast.write(block.data(), block.size())) {
    }
  }
  const std::string spec = Spec({{"prompt", std::string(64 << 10, 'p')}});
  grpc::Status full;
  for (int i = 0; i < 100 && full.ok(); ++i) full = Submit(spec, nullptr);
  ASSERT_EQ(full.error_code(), grpc::StatusCode::UNAVAILABLE) << full.error_message();
  std::string health;
  for (int i = 0; i < kPatienceMs / 50 && (health = Health()) != "NOT_SERVING"; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_EQ(health, "NOT_SERVING");

  ASSERT_EQ(::unlink((dir_ + "/ballast").c_str()), 0);
  ASSERT_TRUE(Submit(spec, nullptr).ok());
  for (int i = 0; i < kPatienceMs / 50 && (health = Health()) != "SERVING"; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_EQ(health, "SERVING");
  StopServer();
}

TEST_F(FujidMetricsTest, PlaintextMetricsListenIsLoopbackOnlyAndOpenWhenAsked) {
  daemon::ServerOptions options = Options();
  options.metrics_listen = "0.0.0.0:0";
  auto store = store::JobStore::Open(dir_ + "/refused.db", clock_);
  ASSERT_TRUE(store.ok());
  options.insecure = true;
  options.listen = "127.0.0.1:0";
  auto refused = daemon::DaemonServer::Start(options, store->get(), clock_, clock_);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), StatusCode::kInvalidArgument) << refused.status().ToString();

  options = Options();
  options.metrics_listen = "127.0.0.1:0";
  options.metrics_open_on_loopback = true;
  StartServer(options);
  ASSERT_NE(server_->metrics_port(), 0);
  v1::Job job;
  ASSERT_TRUE(Submit(Spec(), &job).ok());
  const std::string url = "http://127.0.0.1:" + std::to_string(server_->metrics_port());
  const std::string out = dir_ + "/metrics.txt";
  ASSERT_EQ(std::system(("curl -sf " + url + "/metrics > " + out).c_str()), 0);
  const std::string text = Slurp(out);
  EXPECT_NE(text.find("fuji_jobs{kind=\"infer\",state=\"QUEUED\"} 1\n"), std::string::npos) << text;
  EXPECT_NE(text.find("fuji_rpc_requests_total{method=\"/fuji.v1.JobService/Submit\",code=\"OK\"}"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("# TYPE fuji_store_commit_seconds histogram\n"), std::string::npos) << text;
  EXPECT_NE(std::system(("curl -sf " + url + "/v1/models > /dev/null").c_str()), 0)
      << "only /metrics";
}

}  // namespace
}  // namespace fuji::testing
