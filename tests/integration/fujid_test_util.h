// Helpers for fujid's integration tests: a scratch directory with a model directory, the real
// server on a loopback port, and generated stubs talking to it.
#pragma once

#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <thread>

#include <grpcpp/grpcpp.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "daemon/server/daemon_server.h"
#include "daemon/store/clock.h"
#include "daemon/store/job_store.h"
#include "fuji/v1/jobs.grpc.pb.h"
#include "fuji/v1/worker.grpc.pb.h"
#include "lib/rpc/connection.h"
#include "lib/security/pki.h"

namespace fuji::testing {

// How long a test waits for what the daemon does within milliseconds when all is well (a pass
// placing a job, a lease check noticing an expiry): seconds to spare for a stalled, busy machine.
// Every wait ends as soon as the thing happens, so a passing run never waits it out.
inline constexpr int kPatienceMs = 30000;

class FujidTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = std::string(FUJI_BINARY_DIR) + "/test_scratch/fujid_" + std::to_string(::getpid()) +
           "_" + info->name();
    ASSERT_EQ(std::system(("rm -rf " + dir_ + " && mkdir -p " + dir_ + "/model").c_str()), 0);
    std::ofstream(dir_ + "/model/config.json") << "{}\n";
  }
  void TearDown() override {
    StopServer();
    std::system(("rm -rf " + dir_).c_str());
  }

  // Leases of a minute unless the test says otherwise: most tests send no heartbeats and must not
  // lose their jobs to a stall. Tests of expiry put the server on fake_clock_ (UseFakeClock) and
  // move time themselves.
  static daemon::ServerOptions Options() {
    daemon::ServerOptions options;
    options.lease_ttl_ms = 60000;
    return options;
  }

  void UseFakeClock() { clock_ = &fake_clock_; }

  // fujid as it runs: TLS with a certificate of the cluster CA that fujid makes in dir_, every
  // call authenticated. jobs_ calls as the user "tester" (a token on the channel); workers_ calls
  // carry the credential of the worker they name (AsWorker).
  void StartServer(daemon::ServerOptions options = Options()) {
    auto store = store::JobStore::Open(dir_ + "/fujid.db", clock_);
    ASSERT_TRUE(store.ok()) << store.status().ToString();
    store_ = std::move(store).value();
    options.listen = "127.0.0.1:0";
    auto files = security::EnsureClusterPki(dir_, security::ServerSans(options.listen, {}));
    ASSERT_TRUE(files.ok()) << files.status().ToString();
    auto tls = security::LoadTlsMaterial(*files);
    ASSERT_TRUE(tls.ok()) << tls.status().ToString();
    options.tls_cert_pem = tls->cert_pem;
    options.tls_key_pem = tls->key_pem;
    auto policy = PathPolicy::Create({dir_}, {}, "fujid");
    ASSERT_TRUE(policy.ok()) << policy.status().ToString();
    options.read_policy = *policy;
    // Leases run on the same clock, so a fake one moves both.
    auto server = daemon::DaemonServer::Start(options, store_.get(), clock_, clock_);
    ASSERT_TRUE(server.ok()) << server.status().ToString();
    server_ = std::move(server).value();
    if (user_token_.empty()) {
      auto user = server_->auth()->CreateUser("tester", /*admin=*/false);
      ASSERT_TRUE(user.ok()) << user.status().ToString();
      user_token_ = user->token;
    }
    grpc::SslCredentialsOptions ca;
    ca.pem_root_certs = tls->ca_pem;
    const std::string address = "127.0.0.1:" + std::to_string(server_->port());
    jobs_ = v1::JobService::NewStub(grpc::CreateChannel(
        address, grpc::CompositeChannelCredentials(grpc::SslCredentials(ca), grpc::AccessTokenCredentials(user_token_))));
    workers_ = v1::WorkerService::NewStub(grpc::CreateChannel(address, grpc::SslCredentials(ca)));
  }

  // Makes `context` carry the credential of the agent enrolled as worker_id (enrolled on first use).
  void AsWorker(grpc::ClientContext* context, const std::string& worker_id) {
    std::string& credential = agent_credentials_[worker_id];
    if (credential.empty()) {
      auto agent = server_->auth()->EnrollAgent(worker_id);
      EXPECT_TRUE(agent.ok()) << agent.status().ToString();
      if (agent.ok()) credential = agent->token;
    }
    rpc::Authorize(context, credential);
  }
  void StopServer() {
    if (server_) server_->Stop();
    server_.reset();
    store_.reset();
  }

  std::string Spec(nlohmann::json extra = nlohmann::json::object()) const {
    nlohmann::json spec = {{"model", dir_ + "/model"}, {"prompt", "hello"}, {"max_new_tokens", 4}};
    spec.update(extra);
    return spec.dump();
  }

  grpc::Status Submit(const std::string& spec_json, v1::Job* job, const std::string& kind = "infer") {
    grpc::ClientContext context;
    v1::SubmitRequest request;
    request.set_kind(kind);
    request.set_spec_json(spec_json);
    v1::SubmitResponse response;
    grpc::Status status = jobs_->Submit(&context, request, &response);
    if (job != nullptr) *job = response.job();
    return status;
  }

  v1::Job GetJob(int64_t id) {
    grpc::ClientContext context;
    v1::GetJobRequest request;
    request.set_id(id);
    v1::Job job;
    EXPECT_TRUE(jobs_->GetJob(&context, request, &job).ok());
    return job;
  }

  // Polls GetJob until the job is in `state` (or the time is up); returns the last view.
  v1::Job WaitForState(int64_t id, v1::JobState state, int timeout_ms = kPatienceMs) {
    auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
    v1::Job job = GetJob(id);
    while (job.state() != state && std::chrono::steady_clock::now() < end) {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
      job = GetJob(id);
    }
    return job;
  }

  // A job attempt the registering agent still runs, by its fencing token.
  struct Running {
    int64_t job_id = 0;
    int attempt = 0;
    int64_t lease_epoch = 1;  // the job's first placement
  };
  v1::RegisterResponse Register(const std::string& worker_id, int devices,
                                const std::string& kind = "cpu",
                                const std::vector<Running>& running = {}) {
    grpc::ClientContext context;
    AsWorker(&context, worker_id);
    v1::RegisterRequest request;
    request.set_worker_id(worker_id);
    request.set_host(worker_id);
    for (int i = 0; i < devices; ++i) {
      v1::Device* device = request.add_devices();
      device->set_index(i);
      device->set_name(kind == "cpu" ? "cpu" : "NVIDIA H100 80GB HBM3");
      device->set_total_mib(81559);
      device->set_kind(kind);
    }
    for (const Running& job : running) {
      v1::RunningJob* r = request.add_running();
      r->set_job_id(job.job_id);
      r->set_attempt(job.attempt);
      r->set_lease_epoch(job.lease_epoch);
    }
    v1::RegisterResponse response;
    grpc::Status status = workers_->Register(&context, request, &response);
    EXPECT_TRUE(status.ok()) << status.error_message();
    return response;
  }

  // A long poll: the daemon answers at once with what is pending, else after wait_ms of its clock.
  // The call's own deadline is in real time, so that a poll on a fake clock that nothing moves
  // fails the test instead of hanging it.
  v1::PollAssignmentsResponse Poll(const std::string& worker_id, int64_t wait_ms) {
    grpc::ClientContext context;
    AsWorker(&context, worker_id);
    context.set_deadline(std::chrono::system_clock::now() +
                         std::chrono::milliseconds(wait_ms + kPatienceMs));
    v1::PollAssignmentsRequest request;
    request.set_worker_id(worker_id);
    request.set_wait_ms(wait_ms);
    v1::PollAssignmentsResponse response;
    grpc::Status status = workers_->PollAssignments(&context, request, &response);
    EXPECT_TRUE(status.ok()) << status.error_message();
    return response;
  }

  // Submits Spec(), has worker_id (registered, with a free device) take it and report it started.
  void SubmitAndStart(const std::string& worker_id, v1::Job* job) {
    ASSERT_TRUE(Submit(Spec(), job).ok());
    v1::PollAssignmentsResponse polled = Poll(worker_id, kPatienceMs);
    ASSERT_EQ(polled.assignments_size(), 1);
    job->set_lease_epoch(polled.assignments(0).lease_epoch());  // the placement's token
    v1::JobReport report;
    report.set_worker_id(worker_id);
    report.set_job_id(job->id());
    report.set_lease_epoch(job->lease_epoch());
    report.set_started(true);
    grpc::ClientContext context;
    v1::ReportResponse response;
    AsWorker(&context, worker_id);
    ASSERT_TRUE(workers_->Report(&context, report, &response).ok());
  }

  grpc::Status Complete(const v1::CompleteRequest& request) {
    grpc::ClientContext context;
    AsWorker(&context, request.worker_id());
    v1::CompleteResponse response;
    return workers_->Complete(&context, request, &response);
  }

  // Has worker_id (registered, with a free device) take job `id`, runs `meanwhile` (say, to move
  // fake time) and completes the job SUCCEEDED with result_json.
  void RunToSuccess(const std::string& worker_id, int64_t id, const std::string& result_json,
                    const std::function<void()>& meanwhile = {}) {
    v1::PollAssignmentsResponse polled = Poll(worker_id, kPatienceMs);
    ASSERT_EQ(polled.assignments_size(), 1);
    ASSERT_EQ(polled.assignments(0).job_id(), id);
    if (meanwhile) meanwhile();
    v1::CompleteRequest done;
    done.set_worker_id(worker_id);
    done.set_job_id(id);
    done.set_lease_epoch(polled.assignments(0).lease_epoch());
    done.set_succeeded(true);
    done.set_result_json(result_json);
    ASSERT_TRUE(Complete(done).ok());
  }

  std::string dir_;
  store::SystemClock system_clock_;
  store::FakeClock fake_clock_;
  const store::Clock* clock_ = &system_clock_;
  std::unique_ptr<store::JobStore> store_;
  std::unique_ptr<daemon::DaemonServer> server_;
  std::unique_ptr<v1::JobService::Stub> jobs_;
  std::unique_ptr<v1::WorkerService::Stub> workers_;
  std::string user_token_;
  std::map<std::string, std::string> agent_credentials_;  // by worker id
};

}  // namespace fuji::testing
