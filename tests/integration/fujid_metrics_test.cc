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

// A running job's progress and a device's sample become series at the next scrape; the job's go
// once it ends.
TEST_F(FujidMetricsTest, RunningJobsAndDeviceSamplesAreSeries) {
  daemon::ServerOptions options = Options();
  options.metrics_listen = "127.0.0.1:0";
  options.metrics_open_on_loopback = true;
  StartServer(options);
  Register("node-g", 1, "cuda");
  v1::Job job;
  ASSERT_TRUE(Submit(Spec({{"device", "cuda"}}), &job).ok());
  v1::PollAssignmentsResponse polled = Poll("node-g", kPatienceMs);
  ASSERT_EQ(polled.assignments_size(), 1);
  job.set_lease_epoch(polled.assignments(0).lease_epoch());
  v1::JobReport report;
  report.set_worker_id("node-g");
  report.set_job_id(job.id());
  report.set_lease_epoch(job.lease_epoch());
  report.set_started(true);
  v1::Progress* progress = report.add_progress();
  progress->set_phase("generate");
  progress->set_done(7);
  progress->set_tokens_per_s(123.5);
  // The agent's heartbeat carries its devices' samples.
  v1::HeartbeatRequest beat;
  beat.set_worker_id("node-g");
  v1::MemorySample* sample = beat.add_samples();
  sample->set_device_index(0);
  sample->set_device_name("NVIDIA H100 80GB HBM3");
  sample->set_used_mib(1000);
  sample->set_total_mib(81559);
  sample->set_utilization_pct(42);
  sample->set_at_ms(clock_->NowMs());
  {
    grpc::ClientContext context;
    v1::HeartbeatResponse response;
    AsWorker(&context, "node-g");
    ASSERT_TRUE(workers_->Heartbeat(&context, beat, &response).ok());
  }
  {
    grpc::ClientContext context;
    v1::ReportResponse response;
    AsWorker(&context, "node-g");
    ASSERT_TRUE(workers_->Report(&context, report, &response).ok());
  }
  const std::string url =
      "http://127.0.0.1:" + std::to_string(server_->metrics_port()) + "/metrics";
  const std::string out = dir_ + "/metrics.txt";
  ASSERT_EQ(std::system(("curl -sf " + url + " > " + out).c_str()), 0);
  std::string text = Slurp(out);
  const std::string labels =
      "{job=\"" + std::to_string(job.id()) + "\",kind=\"infer\",model=\"" + dir_ + "/model\"}";
  EXPECT_NE(text.find("fuji_job_tokens_per_second" + labels + " 123.5\n"), std::string::npos)
      << text;
  EXPECT_NE(text.find("fuji_job_step" + labels + " 7\n"), std::string::npos) << text;
  EXPECT_NE(text.find("fuji_jobs{kind=\"infer\",state=\"RUNNING\"} 1\n"), std::string::npos)
      << text;
  EXPECT_NE(text.find("fuji_device_utilization_ratio{agent=\"node-g\",device=\"0\"} 0.42\n"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("fuji_device_memory_used_bytes{agent=\"node-g\",device=\"0\"} 1048576000\n"),
            std::string::npos)
      << text;
  EXPECT_NE(
      text.find("fuji_device_memory_total_bytes{agent=\"node-g\",device=\"0\"} 85520809984\n"),
      std::string::npos)
      << text;
  EXPECT_NE(text.find("fuji_agent_up{agent=\"node-g\"} 1\n"), std::string::npos) << text;

  v1::CompleteRequest done;
  done.set_worker_id("node-g");
  done.set_job_id(job.id());
  done.set_lease_epoch(job.lease_epoch());
  done.set_succeeded(true);
  done.set_result_json(R"({"text":"hello"})");
  ASSERT_TRUE(Complete(done).ok());
  ASSERT_EQ(std::system(("curl -sf " + url + " > " + out).c_str()), 0);
  text = Slurp(out);
  EXPECT_EQ(text.find("fuji_job_tokens_per_second{"), std::string::npos) << text;
  EXPECT_EQ(text.find("fuji_job_step{"), std::string::npos) << text;
  EXPECT_NE(text.find("fuji_job_run_seconds_count{kind=\"infer\"} 1\n"), std::string::npos) << text;
  for (const char* move :
       {"{from=\"QUEUED\",to=\"ASSIGNED\"} 1\n", "{from=\"ASSIGNED\",to=\"RUNNING\"} 1\n"}) {
    EXPECT_NE(text.find(std::string("fuji_job_transitions_total") + move), std::string::npos)
        << move << text;
  }
  EXPECT_NE(text.find("fuji_job_transitions_total{from=\"RUNNING\",to=\"SUCCEEDED\"} 1\n"),
            std::string::npos)
      << text;
}

}  // namespace
}  // namespace fuji::testing
