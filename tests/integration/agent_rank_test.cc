// The agent library against an in-test WorkerService on loopback, running fuji-rank processes: an
// inference job that succeeds, one cancelled through Heartbeat, one that times out, and one that
// outlives a daemon restart. The last three run twice: with a shell-script rank that only sleeps,
// where the agent's handling is the point and the rank's speed must not matter, and with real
// fuji-rank processes generating with a real model, so that what the agent does to a real rank is
// tested too.
#include <signal.h>

#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <deque>
#include <filesystem>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <thread>

#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "fuji/v1/worker.grpc.pb.h"
#include "worker/agent/agent.h"
#include "lib/common/wall_clock.h"
#include "worker/launcher/child_process.h"

namespace fuji::agent {
namespace {

using std::chrono::milliseconds;

// Hands out queued assignments and records what the agent says.
class FakeWorkerService final : public fuji::v1::WorkerService::Service {
 public:
  grpc::Status Register(grpc::ServerContext*, const fuji::v1::RegisterRequest* req,
                        fuji::v1::RegisterResponse* resp) override {
    std::lock_guard<std::mutex> lock(mu_);
    registers_.push_back(*req);
    registered_.insert(req->worker_id());
    resp->set_lease_ttl_ms(5000);
    resp->set_heartbeat_interval_ms(100);
    cv_.notify_all();
    return grpc::Status::OK;
  }
  grpc::Status Heartbeat(grpc::ServerContext*, const fuji::v1::HeartbeatRequest* req,
                         fuji::v1::HeartbeatResponse* resp) override {
    std::lock_guard<std::mutex> lock(mu_);
    // As fujid answers an agent it does not know (a restarted daemon, say): register first. Then
    // an agent re-registers with a restarted service even when none of its calls failed while the
    // service was away.
    if (registered_.count(req->worker_id()) == 0) {
      resp->set_reregister(true);
      return grpc::Status::OK;
    }
    for (int64_t id : cancels_) resp->add_cancel_job_ids(id);
    cancels_.clear();
    return grpc::Status::OK;
  }
  grpc::Status PollAssignments(grpc::ServerContext* ctx, const fuji::v1::PollAssignmentsRequest* req,
                               fuji::v1::PollAssignmentsResponse* resp) override {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait_for(lock, milliseconds(std::min<int64_t>(req->wait_ms(), 200)), [&] { return !queue_.empty(); });
    while (!queue_.empty()) {
      *resp->add_assignments() = queue_.front();
      queue_.pop_front();
    }
    return grpc::Status::OK;
  }
  grpc::Status Report(grpc::ServerContext*, const fuji::v1::JobReport* req, fuji::v1::ReportResponse*) override {
    std::lock_guard<std::mutex> lock(mu_);
    reports_[req->job_id()].push_back(*req);
    cv_.notify_all();
    return grpc::Status::OK;
  }
  grpc::Status Complete(grpc::ServerContext*, const fuji::v1::CompleteRequest* req,
                        fuji::v1::CompleteResponse*) override {
    std::unique_lock<std::mutex> lock(mu_);
    completes_[req->job_id()].push_back(*req);
    auto retry = retries_.find(req->job_id());
    const bool retried = retry != retries_.end() && retry->second.attempt() > req->attempt();
    if (retried) {
      queue_.push_back(retry->second);  // as fujid does: the retry is handed out at once
      retries_.erase(retry);
    }
    cv_.notify_all();
    lock.unlock();
    // The answer comes late, so that the agent polls the retry before it hears it.
    if (retried) std::this_thread::sleep_for(milliseconds(300));
    return grpc::Status::OK;
  }

  // Hands out `next` as soon as an earlier attempt of its job completes.
  void RetryOnComplete(fuji::v1::Assignment next) {
    std::lock_guard<std::mutex> lock(mu_);
    retries_[next.job_id()] = std::move(next);
  }

  void Assign(fuji::v1::Assignment a) {
    std::lock_guard<std::mutex> lock(mu_);
    queue_.push_back(std::move(a));
    cv_.notify_all();
  }
  void CancelViaHeartbeat(int64_t id) {
    std::lock_guard<std::mutex> lock(mu_);
    cancels_.push_back(id);
  }
  // Waits for the job's Complete; nullopt after the timeout.
  std::optional<fuji::v1::CompleteRequest> AwaitComplete(int64_t id, milliseconds timeout) {
    std::unique_lock<std::mutex> lock(mu_);
    if (!cv_.wait_for(lock, timeout, [&] { return !completes_[id].empty(); })) return std::nullopt;
    return completes_[id].front();
  }
  bool AwaitStarted(int64_t id, milliseconds timeout) {
    std::unique_lock<std::mutex> lock(mu_);
    return cv_.wait_for(lock, timeout, [&] {
      for (const auto& r : reports_[id]) {
        if (r.started()) return true;
      }
      return false;
    });
  }
  // Waits for the first progress the job reports; nullopt after the timeout.
  std::optional<fuji::v1::Progress> AwaitProgress(int64_t id, milliseconds timeout) {
    std::unique_lock<std::mutex> lock(mu_);
    std::optional<fuji::v1::Progress> first;
    cv_.wait_for(lock, timeout, [&] {
      for (const auto& r : reports_[id]) {
        if (r.progress_size() > 0) first = r.progress(0);
      }
      return first.has_value();
    });
    return first;
  }
  // Waits for a registration that lists the job as running in rank `pid`.
  bool AwaitListed(int64_t id, pid_t pid, milliseconds timeout) {
    std::unique_lock<std::mutex> lock(mu_);
    return cv_.wait_for(lock, timeout, [&] {
      for (const auto& r : registers_) {
        for (const auto& j : r.running()) {
          if (j.job_id() == id && j.pids_size() == 1 && j.pids(0) == pid) return true;
        }
      }
      return false;
    });
  }
  std::vector<fuji::v1::JobReport> Reports(int64_t id) {
    std::lock_guard<std::mutex> lock(mu_);
    return reports_[id];
  }
  size_t CompleteCount(int64_t id) {
    std::lock_guard<std::mutex> lock(mu_);
    return completes_[id].size();
  }
  size_t RegisterCount() {
    std::lock_guard<std::mutex> lock(mu_);
    return registers_.size();
  }
  std::vector<fuji::v1::RegisterRequest> Registers() {
    std::lock_guard<std::mutex> lock(mu_);
    return registers_;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<fuji::v1::Assignment> queue_;
  std::vector<int64_t> cancels_;
  std::vector<fuji::v1::RegisterRequest> registers_;
  std::set<std::string> registered_;
  std::map<int64_t, std::vector<fuji::v1::JobReport>> reports_;
  std::map<int64_t, std::vector<fuji::v1::CompleteRequest>> completes_;
  std::map<int64_t, fuji::v1::Assignment> retries_;
};

class AgentRankTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    const std::string scratch = ::testing::TempDir() + "/fuji_agent_" + std::to_string(::getpid());
    model_dir_ = new std::string(scratch + "_tiny");
    long_model_dir_ = new std::string(scratch + "_long");
    ASSERT_NO_FATAL_FAILURE(InitModel(*model_dir_, nlohmann::json::object()));
    // Eight layers of 256 and 8192 positions: slow enough to be caught mid-generation (2000 tokens
    // took 12 s on this 2-core machine, and each token costs more as the context grows).
    ASSERT_NO_FATAL_FAILURE(InitModel(
        *long_model_dir_, {{"layers", 8}, {"width", 256}, {"heads", 4}, {"positions", 8192}}));
  }

  // A random tiny checkpoint with GPT-2's vocabulary, written by fuji-rank's init op; `shape`
  // overrides the tiny architecture's fields.
  static void InitModel(const std::string& out, const nlohmann::json& shape) {
    std::filesystem::remove_all(out);
    auto exe = launch::FindRankExecutable();
    ASSERT_TRUE(exe.ok()) << exe.status().ToString();
    auto rank = launch::ChildProcess::Spawn({*exe, {}, {}});
    ASSERT_TRUE(rank.ok()) << rank.status().ToString();
    nlohmann::json request = {
        {"op", "init"}, {"id", "init"},
        {"out", out},   {"arch", "tiny"},
        {"seed", 1},    {"vocab_dir", std::string(FUJI_BINARY_DIR) + "/share/fuji"}};
    request.update(shape);
    ASSERT_TRUE((*rank)->Send(request).ok());
    (*rank)->CloseInput();
    bool ok = false;
    std::string said;
    for (;;) {
      auto next = (*rank)->Next(milliseconds(120000));
      ASSERT_TRUE(next.ok()) << next.status().ToString();
      if (!next->has_value()) break;
      if ((**next).kind == launch::ChildOutput::Kind::kEvent) {
        said += (**next).event.dump() + "\n";
        if ((**next).event.value("event", "") == "result") ok = true;
      } else {
        said += (**next).line + "\n";
      }
    }
    (*rank)->Wait();
    ASSERT_TRUE(ok) << said;
  }
  static void TearDownTestSuite() {
    for (std::string* dir : {model_dir_, long_model_dir_}) {
      if (dir != nullptr) std::filesystem::remove_all(*dir);
      delete dir;
    }
    model_dir_ = long_model_dir_ = nullptr;
  }

  void SetUp() override {
    grpc::ServerBuilder builder;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port_);
    builder.RegisterService(&service_);
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
    ASSERT_GT(port_, 0);
    StartAgent("");
  }

  // (Re)starts the agent; rank_executable empty: the real fuji-rank.
  void StartAgent(const std::string& rank_executable) {
    if (agent_) {
      agent_->Stop();
      runner_.join();
      agent_.reset();
    }
    AgentConfig config;
    config.server = "127.0.0.1:" + std::to_string(port_);
    config.devices.auto_detect = false;
    config.sample_interval_ms = 50;
    config.worker_id = "test-node";
    config.host = "test-host";
    config.poll_wait_ms = 1000;
    config.rank_executable = rank_executable;
    config.calibrate = rank_executable.empty();  // a stand-in rank has no node to measure
    // Jobs here name the models in the test's temporary directory.
    auto paths = PathPolicy::Create({::testing::TempDir()}, {});
    ASSERT_TRUE(paths.ok()) << paths.status().ToString();
    config.paths = *paths;
    // The stand-in daemon here is plaintext on the loopback and takes any credential.
    auto channel = MakeChannel(fuji::rpc::Endpoint{config.server, "", /*insecure=*/true});
    ASSERT_TRUE(channel.ok()) << channel.status().ToString();
    agent_ = std::make_unique<Agent>(config, DiscoverDevices(config.devices, ""), *channel, "fuji_a_1_stand-in");
    runner_ = std::thread([this] { ASSERT_TRUE(agent_->Run().ok()); });
  }
  void TearDown() override {
    if (agent_) {
      agent_->Stop();
      runner_.join();
      agent_.reset();
    }
    server_->Shutdown(std::chrono::system_clock::now() + milliseconds(500));
  }

  void RestartWithSlowRank() { StartAgent(FakeRank(0)); }

  static fuji::v1::Assignment Infer(int64_t id, int64_t max_new_tokens, int64_t timeout_ms = 0,
                                    const std::string* model = model_dir_) {
    fuji::v1::Assignment a;
    a.set_job_id(id);
    a.set_attempt(0);
    a.set_kind("infer");
    nlohmann::json spec = {{"model", *model},
                           {"prompt_ids", {464, 3290}},
                           {"max_new_tokens", max_new_tokens},
                           {"device", "cpu"},
                           {"ignore_eos", true}};
    a.set_spec_json(spec.dump());
    a.add_device_indices(0);
    a.set_timeout_ms(timeout_ms);
    return a;
  }

  // A stand-in rank that says it started, sleeps with a child in its group, then (if finish_after_s
  // > 0) gives a result. What is tested is the agent's handling, not the engine's speed.
  static std::string FakeRank(int finish_after_s) {
    const std::string path = ::testing::TempDir() + "/fuji_agent_fake_rank_" + std::to_string(::getpid()) + "_" +
                             std::to_string(finish_after_s) + ".sh";
    const std::string sleep_s = std::to_string(finish_after_s > 0 ? finish_after_s : 600);
    // One request, answered under its id; it knows no "cancel" (the agent kills it after the grace).
    const std::string script =
        std::string(R"sh(#!/bin/sh
read -r line
id=$(printf '%s' "$line" | sed -n 's/.*"id":"\([^"]*\)".*/\1/p')
echo "{\"event\":\"started\",\"op\":\"infer\",\"id\":\"$id\"}" >&3
echo 'fake rank sleeping' >&2
sleep )sh") + sleep_s + " &\nwait\n" +
        (finish_after_s > 0 ? R"sh(echo "{\"event\":\"result\",\"id\":\"$id\",\"result\":{\"output_ids\":[1]}}" >&3
)sh"
                            : "");
    FILE* f = std::fopen(path.c_str(), "w");
    std::fputs(script.c_str(), f);
    std::fclose(f);
    std::filesystem::permissions(path, std::filesystem::perms::owner_all);
    return path;
  }

  static bool GroupGone(pid_t pgid) { return ::kill(-pgid, 0) != 0 && errno == ESRCH; }

  // Replaces the service with a new one on the same port, as a daemon restart does.
  std::unique_ptr<grpc::Server> RestartService(FakeWorkerService* restarted) {
    server_->Shutdown(std::chrono::system_clock::now() + milliseconds(100));
    server_->Wait();
    grpc::ServerBuilder builder;
    int port = 0;
    builder.AddListeningPort("127.0.0.1:" + std::to_string(port_),
                             grpc::InsecureServerCredentials(), &port);
    builder.RegisterService(restarted);
    auto server = builder.BuildAndStart();
    EXPECT_EQ(port, port_);
    return server;
  }

  static std::string* model_dir_;
  static std::string* long_model_dir_;
  FakeWorkerService service_;
  int port_ = 0;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<Agent> agent_;
  std::thread runner_;
};
std::string* AgentRankTest::model_dir_ = nullptr;
std::string* AgentRankTest::long_model_dir_ = nullptr;

TEST_F(AgentRankTest, InferJobSucceedsWithTimingsAndSamples) {
  service_.Assign(Infer(7, 8));
  auto done = service_.AwaitComplete(7, milliseconds(120000));
  ASSERT_TRUE(done.has_value());
  EXPECT_TRUE(done->succeeded()) << done->failure_kind() << ": " << done->message();
  EXPECT_EQ(done->worker_id(), "test-node");
  const nlohmann::json result = nlohmann::json::parse(done->result_json());
  ASSERT_TRUE(result.contains("output_ids")) << result.dump();
  EXPECT_FALSE(result["output_ids"].empty());

  bool started = false;
  int timings = 0, samples = 0;
  const int64_t now = WallClockMs();
  for (const auto& r : service_.Reports(7)) {
    started = started || r.started();
    for (const auto& t : r.timings()) {
      ++timings;
      EXPECT_LE(t.start_ms(), t.end_ms());
      EXPECT_GT(t.start_ms(), now - 300000);  // the agent's wall clock, ms since the epoch
      EXPECT_LE(t.end_ms(), now);
      EXPECT_FALSE(t.phase().empty());
    }
    for (const auto& s : r.samples()) {
      ++samples;
      EXPECT_TRUE(s.host_memory());
      EXPECT_EQ(s.device_index(), -1);
      EXPECT_EQ(s.device_name(), "host memory");
      EXPECT_GT(s.total_mib(), 0);
      EXPECT_EQ(s.worker_id(), "test-node");
    }
  }
  EXPECT_TRUE(started);
  EXPECT_GE(timings, 1);
  EXPECT_GE(samples, 1);
  std::this_thread::sleep_for(milliseconds(300));
  EXPECT_EQ(service_.CompleteCount(7), 1u);  // exactly once
  EXPECT_GE(service_.RegisterCount(), 1u);
}

TEST_F(AgentRankTest, CancelViaHeartbeatKillsTheGroup) {
  RestartWithSlowRank();
  service_.Assign(Infer(8, 4));
  ASSERT_TRUE(service_.AwaitStarted(8, milliseconds(30000)));
  std::vector<pid_t> pids = agent_->RankPids(8);
  ASSERT_EQ(pids.size(), 1u);
  const auto asked = std::chrono::steady_clock::now();
  service_.CancelViaHeartbeat(8);
  auto done = service_.AwaitComplete(8, milliseconds(10000));
  ASSERT_TRUE(done.has_value());
  EXPECT_LT(std::chrono::steady_clock::now() - asked, std::chrono::seconds(5));
  EXPECT_FALSE(done->succeeded());
  EXPECT_EQ(done->failure_kind(), "cancelled");
  EXPECT_TRUE(GroupGone(pids[0]));
}

TEST_F(AgentRankTest, TimeoutEndsTheJob) {
  RestartWithSlowRank();
  service_.Assign(Infer(9, 4, /*timeout_ms=*/1500));
  ASSERT_TRUE(service_.AwaitStarted(9, milliseconds(30000)));
  std::vector<pid_t> pids = agent_->RankPids(9);
  ASSERT_EQ(pids.size(), 1u);
  auto done = service_.AwaitComplete(9, milliseconds(20000));
  ASSERT_TRUE(done.has_value());
  EXPECT_FALSE(done->succeeded());
  EXPECT_EQ(done->failure_kind(), "timeout");
  EXPECT_TRUE(GroupGone(pids[0]));
}

// The retry of a failed attempt, handed out before the agent has the answer to its Complete, runs
// on this agent (it is not dropped as "a new attempt while the old one is still here").
TEST_F(AgentRankTest, ARetryHandedOutBeforeTheCompleteIsAnsweredRuns) {
  fuji::v1::Assignment first = Infer(11, 4);
  nlohmann::json bad = nlohmann::json::parse(first.spec_json());
  bad["model"] = *model_dir_ + "/missing";
  first.set_spec_json(bad.dump());
  fuji::v1::Assignment retry = Infer(11, 4);
  retry.set_attempt(1);
  service_.RetryOnComplete(retry);
  service_.Assign(first);
  const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (service_.CompleteCount(11) < 2 && std::chrono::steady_clock::now() < end) {
    std::this_thread::sleep_for(milliseconds(20));
  }
  ASSERT_EQ(service_.CompleteCount(11), 2u) << "the retry never ran";
  auto done = service_.AwaitComplete(11, milliseconds(0));
  ASSERT_TRUE(done.has_value());
  EXPECT_EQ(done->attempt(), 0);
  EXPECT_FALSE(done->succeeded());
  bool retry_started = false;
  for (const auto& r : service_.Reports(11)) retry_started = retry_started || (r.attempt() == 1 && r.started());
  EXPECT_TRUE(retry_started) << "attempt 1 reported no start";
}

// The daemon goes away mid-job and comes back on the same port: the rank keeps running, the agent
// registers again listing the job, and the job completes exactly once at the new daemon.
TEST_F(AgentRankTest, DaemonRestartMidJobCompletesOnce) {
  StartAgent(FakeRank(3));
  service_.Assign(Infer(10, 4));
  ASSERT_TRUE(service_.AwaitStarted(10, milliseconds(30000)));
  const std::vector<pid_t> pids = agent_->RankPids(10);
  ASSERT_EQ(pids.size(), 1u);
  server_->Shutdown(std::chrono::system_clock::now() + milliseconds(100));
  server_->Wait();
  std::this_thread::sleep_for(milliseconds(500));

  FakeWorkerService restarted;
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort("127.0.0.1:" + std::to_string(port_), grpc::InsecureServerCredentials(), &port);
  builder.RegisterService(&restarted);
  auto server = builder.BuildAndStart();
  ASSERT_NE(server, nullptr);
  ASSERT_EQ(port, port_);

  auto done = restarted.AwaitComplete(10, milliseconds(20000));
  ASSERT_TRUE(done.has_value());
  EXPECT_TRUE(done->succeeded()) << done->failure_kind() << ": " << done->message();
  bool listed = false;
  for (const auto& r : restarted.Registers()) {
    for (const auto& j : r.running()) {
      if (j.job_id() == 10) listed = listed || (j.pids_size() == 1 && j.pids(0) == pids[0]);
    }
  }
  EXPECT_TRUE(listed) << "the re-registration must list the running job with its rank pid";
  std::this_thread::sleep_for(milliseconds(500));
  EXPECT_EQ(restarted.CompleteCount(10), 1u);
  EXPECT_EQ(service_.CompleteCount(10), 0u);

  agent_->Stop();
  runner_.join();
  agent_.reset();
  server->Shutdown(std::chrono::system_clock::now() + milliseconds(100));
}

// ---- the same cases with real fuji-rank processes -------------------------------------------
// Each job generates with the slow model for longer than anything here waits, so nothing ends it
// but what the test does; the test acts once the rank reports generation progress, not after a
// guessed time.

// A minute or more of generation here: only the cancel or the timeout ends these jobs.
constexpr int64_t kEndlessTokens = 8000;
// Seconds of generation: time to freeze the rank after its first progress, then to finish.
constexpr int64_t kRestartTokens = 2000;

// A real rank ends the cancelled request and keeps its model loaded: the next request is served by
// the same process without loading.
TEST_F(AgentRankTest, CancelViaHeartbeatEndsARealRanksRequestAndItsModelStaysLoaded) {
  service_.Assign(Infer(21, kEndlessTokens, 0, long_model_dir_));
  const std::optional<fuji::v1::Progress> progress =
      service_.AwaitProgress(21, milliseconds(120000));
  ASSERT_TRUE(progress.has_value()) << "the rank never reported progress";
  EXPECT_EQ(progress->phase(), "generate");
  EXPECT_LT(progress->done(), kEndlessTokens);
  const std::vector<pid_t> pids = agent_->RankPids(21);
  ASSERT_EQ(pids.size(), 1u);
  service_.CancelViaHeartbeat(21);
  auto done = service_.AwaitComplete(21, milliseconds(60000));
  ASSERT_TRUE(done.has_value()) << "the cancel did not end the job";
  EXPECT_FALSE(done->succeeded());
  EXPECT_EQ(done->failure_kind(), "cancelled") << done->message();
  EXPECT_TRUE(done->result_json().empty());
  EXPECT_EQ(::kill(pids[0], 0), 0) << "the rank stays, its model loaded";
  service_.Assign(Infer(24, 4, 0, long_model_dir_));
  auto next = service_.AwaitComplete(24, milliseconds(60000));
  ASSERT_TRUE(next.has_value());
  ASSERT_TRUE(next->succeeded()) << next->message();
  EXPECT_TRUE(nlohmann::json::parse(next->result_json())["model"]["resident"].get<bool>());
}

TEST_F(AgentRankTest, TimeoutEndsARealRank) {
  // Five seconds: the rank is generating by then when all is well (it loads within a second here),
  // but what is checked holds in any phase: the job ends as a timeout, not before its time, and
  // the rank's group is gone.
  constexpr int64_t kTimeoutMs = 5000;
  const auto assigned = std::chrono::steady_clock::now();
  service_.Assign(Infer(22, kEndlessTokens, kTimeoutMs, long_model_dir_));
  ASSERT_TRUE(service_.AwaitStarted(22, milliseconds(30000)));
  const std::vector<pid_t> pids = agent_->RankPids(22);
  ASSERT_EQ(pids.size(), 1u);
  auto done = service_.AwaitComplete(22, milliseconds(60000));
  ASSERT_TRUE(done.has_value()) << "the timeout did not end the job";
  EXPECT_GE(std::chrono::steady_clock::now() - assigned, milliseconds(kTimeoutMs));
  EXPECT_FALSE(done->succeeded());
  EXPECT_EQ(done->failure_kind(), "timeout") << done->message();
  EXPECT_EQ(done->message(), "timed out after 5000 ms");
  EXPECT_TRUE(done->result_json().empty());
  EXPECT_EQ(::kill(pids[0], 0), 0) << "the rank ended the request and stays, its model loaded";
}

// The daemon goes away mid-generation and comes back on the same port: the real rank survives,
// the agent registers again listing it, and the job completes exactly once at the new daemon. The
// rank is frozen (SIGSTOP) from its first progress until the new daemon has the registration, so
// the restart may take as long as this machine needs without the job ending meanwhile; then it
// generates the rest.
TEST_F(AgentRankTest, DaemonRestartMidGenerationOfARealRankCompletesOnce) {
  service_.Assign(Infer(23, kRestartTokens, 0, long_model_dir_));
  ASSERT_TRUE(service_.AwaitProgress(23, milliseconds(120000)).has_value())
      << "the rank never reported progress";
  const std::vector<pid_t> pids = agent_->RankPids(23);
  ASSERT_EQ(pids.size(), 1u);
  ASSERT_EQ(::kill(-pids[0], SIGSTOP), 0);

  FakeWorkerService restarted;
  std::unique_ptr<grpc::Server> server = RestartService(&restarted);
  const bool listed = server != nullptr && restarted.AwaitListed(23, pids[0], milliseconds(60000));
  ASSERT_EQ(::kill(-pids[0], SIGCONT), 0);
  ASSERT_NE(server, nullptr);
  ASSERT_TRUE(listed) << "the re-registration must list the running job with its rank pid";

  auto done = restarted.AwaitComplete(23, milliseconds(120000));
  ASSERT_TRUE(done.has_value());
  EXPECT_TRUE(done->succeeded()) << done->failure_kind() << ": " << done->message();
  const nlohmann::json result = nlohmann::json::parse(done->result_json(), nullptr, false);
  ASSERT_TRUE(result.is_object()) << done->result_json();
  EXPECT_EQ(result["output_ids"].size(), static_cast<size_t>(kRestartTokens));
  // With the agent stopped nothing more can come: exactly one Complete, at the new daemon.
  agent_->Stop();
  runner_.join();
  agent_.reset();
  EXPECT_EQ(restarted.CompleteCount(23), 1u);
  EXPECT_EQ(service_.CompleteCount(23), 0u);
  server->Shutdown(std::chrono::system_clock::now() + milliseconds(100));
}

}  // namespace
}  // namespace fuji::agent
