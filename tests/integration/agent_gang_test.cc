// Two agents run one fine-tune together: the agent library against an in-test WorkerService on
// loopback hands "node-a" ranks 0-1 and "node-b" ranks 2-3 of a 4-rank ZeRO-3 gang that meets at
// a TCPStore rank 0 hosts (tcp:127.0.0.1:PORT), as fujid places a gang across agents. Each agent
// registers its advertised address and gang ports, runs real fuji-rank processes with their
// global ranks (and its NCCL/Gloo network variables), reports what they say under those ranks, and
// completes with its part's result.
// An agent without --advertise-addr refuses such an assignment.
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <iterator>
#include <condition_variable>
#include <deque>
#include <filesystem>
#include <fstream>
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
#include "worker/launcher/child_process.h"
#include "worker/launcher/finetune_prepare.h"

namespace fuji::agent {
namespace {

using std::chrono::milliseconds;

// Hands each worker its own queued assignments and records what the agents say.
class FakeWorkerService final : public fuji::v1::WorkerService::Service {
 public:
  grpc::Status Register(grpc::ServerContext*, const fuji::v1::RegisterRequest* req,
                        fuji::v1::RegisterResponse* resp) override {
    std::lock_guard<std::mutex> lock(mu_);
    registers_[req->worker_id()] = *req;
    resp->set_lease_ttl_ms(10000);
    resp->set_heartbeat_interval_ms(200);
    cv_.notify_all();
    return grpc::Status::OK;
  }
  grpc::Status Heartbeat(grpc::ServerContext*, const fuji::v1::HeartbeatRequest*,
                         fuji::v1::HeartbeatResponse*) override {
    return grpc::Status::OK;
  }
  grpc::Status PollAssignments(grpc::ServerContext*, const fuji::v1::PollAssignmentsRequest* req,
                               fuji::v1::PollAssignmentsResponse* resp) override {
    std::unique_lock<std::mutex> lock(mu_);
    auto& queue = queues_[req->worker_id()];
    cv_.wait_for(lock, milliseconds(std::min<int64_t>(req->wait_ms(), 200)), [&] { return !queue.empty(); });
    while (!queue.empty()) {
      *resp->add_assignments() = queue.front();
      queue.pop_front();
    }
    return grpc::Status::OK;
  }
  grpc::Status Report(grpc::ServerContext*, const fuji::v1::JobReport* req, fuji::v1::ReportResponse*) override {
    std::lock_guard<std::mutex> lock(mu_);
    reports_[req->worker_id()].push_back(*req);
    return grpc::Status::OK;
  }
  grpc::Status Complete(grpc::ServerContext*, const fuji::v1::CompleteRequest* req,
                        fuji::v1::CompleteResponse*) override {
    std::lock_guard<std::mutex> lock(mu_);
    completes_[req->worker_id()].push_back(*req);
    cv_.notify_all();
    return grpc::Status::OK;
  }

  void Assign(const std::string& worker, fuji::v1::Assignment a) {
    std::lock_guard<std::mutex> lock(mu_);
    queues_[worker].push_back(std::move(a));
    cv_.notify_all();
  }
  std::optional<fuji::v1::RegisterRequest> AwaitRegister(const std::string& worker, milliseconds timeout) {
    std::unique_lock<std::mutex> lock(mu_);
    if (!cv_.wait_for(lock, timeout, [&] { return registers_.count(worker) > 0; })) return std::nullopt;
    return registers_[worker];
  }
  std::optional<fuji::v1::CompleteRequest> AwaitComplete(const std::string& worker, milliseconds timeout) {
    std::unique_lock<std::mutex> lock(mu_);
    if (!cv_.wait_for(lock, timeout, [&] { return !completes_[worker].empty(); })) return std::nullopt;
    return completes_[worker].front();
  }
  std::vector<fuji::v1::JobReport> Reports(const std::string& worker) {
    std::lock_guard<std::mutex> lock(mu_);
    return reports_[worker];
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::map<std::string, std::deque<fuji::v1::Assignment>> queues_;
  std::map<std::string, fuji::v1::RegisterRequest> registers_;
  std::map<std::string, std::vector<fuji::v1::JobReport>> reports_;
  std::map<std::string, std::vector<fuji::v1::CompleteRequest>> completes_;
};

// A TCP port free on the loopback now.
int FreePort() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  socklen_t len = sizeof(addr);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  ::close(fd);
  return ntohs(addr.sin_port);
}

class AgentGangTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto exe = launch::FindRankExecutable();
    if (!exe.ok()) GTEST_SKIP() << "fuji-rank not built";
    dir_ = std::filesystem::path(::testing::TempDir()) / ("fuji_agent_gang_" + std::to_string(::getpid()));
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_ / "write");
    auto rank = launch::ChildProcess::Spawn({*exe, {}, {}});
    ASSERT_TRUE(rank.ok()) << rank.status().ToString();
    ASSERT_TRUE((*rank)->Send({{"op", "init"}, {"id", "init"}, {"arch", "tiny"}, {"seed", 1},
                               {"out", (dir_ / "tiny").string()}, {"vocab_dir", launch::DefaultVocabDir()}})
                    .ok());
    (*rank)->CloseInput();
    ASSERT_TRUE((*rank)->Wait().Succeeded());
    std::ofstream text(dir_ / "text.txt");
    for (int i = 0; i < 300; ++i) text << "Mt. Fuji, " << i << " metres of it, is the highest mountain in Japan.\n";
    text.close();

    grpc::ServerBuilder builder;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port_);
    builder.RegisterService(&service_);
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
  }

  void TearDown() override {
    for (auto& [name, agent] : agents_) agent->Stop();
    for (auto& t : runners_) t.join();
    agents_.clear();
    if (server_) server_->Shutdown(std::chrono::system_clock::now() + milliseconds(500));
    if (!dir_.empty()) std::filesystem::remove_all(dir_);
  }

  void StartAgent(const std::string& worker_id, const std::string& advertise_addr) {
    AgentConfig config;
    config.server = "127.0.0.1:" + std::to_string(port_);
    config.devices.auto_detect = false;
    config.devices.cpu_count = 2;
    config.sample_interval_ms = 200;
    config.worker_id = worker_id;
    config.host = worker_id;
    config.poll_wait_ms = 1000;
    config.calibrate = false;
    config.advertise_addr = advertise_addr;
    config.gang_port_lo = 29500;
    config.gang_port_hi = 29509;
    config.preparation_program = std::string(FUJI_BINARY_DIR) + "/bin/fuji-agent";
    auto paths = PathPolicy::Create({dir_.string()}, {(dir_ / "write").string()});
    ASSERT_TRUE(paths.ok()) << paths.status().ToString();
    config.paths = *paths;
    auto channel = MakeChannel(fuji::rpc::Endpoint{config.server, "", /*insecure=*/true});
    ASSERT_TRUE(channel.ok()) << channel.status().ToString();
    auto agent = std::make_unique<Agent>(config, DiscoverDevices(config.devices, ""), *channel, "fuji_a_1_stand-in");
    Agent* raw = agent.get();
    agents_[worker_id] = std::move(agent);
    runners_.emplace_back([raw] { EXPECT_TRUE(raw->Run().ok()); });
  }

  // The assignment fujid hands `first_rank`'s agent for job 1, a 4-rank ZeRO-3 fine-tune on 2 nodes.
  fuji::v1::Assignment Part(int first_rank, int store_port) {
    nlohmann::json spec = {{"model", (dir_ / "tiny").string()},
                           {"data", (dir_ / "text.txt").string()},
                           {"cache_dir", (dir_ / "write" / "cache").string()},
                           {"save_to", (dir_ / "write" / "ckpt").string()},
                           {"ranks", 4},
                           {"nodes", 2},
                           {"zero", 3},
                           {"seq_len", 32},
                           {"micro_batch", 2},
                           {"steps", 3},
                           {"threads", 1},
                           {"collective_timeout_ms", 20000}};
    fuji::v1::Assignment a;
    a.set_job_id(1);
    a.set_attempt(0);
    a.set_kind("finetune");
    a.set_spec_json(spec.dump());
    a.add_device_indices(0);
    a.add_device_indices(1);
    a.set_world_size(4);
    a.set_first_rank(first_rank);
    a.set_rendezvous("tcp:127.0.0.1:" + std::to_string(store_port));
    for (int m = 0; m < 2; ++m) {
      auto* member = a.add_members();
      member->set_worker_id(m == 0 ? "node-a" : "node-b");
      member->set_advertise_addr("127.0.0.1");
      member->set_first_rank(2 * m);
      member->set_ranks(2);
      member->add_device_indices(0);
      member->add_device_indices(1);
    }
    return a;
  }

  std::filesystem::path dir_;
  FakeWorkerService service_;
  int port_ = 0;
  std::unique_ptr<grpc::Server> server_;
  std::map<std::string, std::unique_ptr<Agent>> agents_;
  std::vector<std::thread> runners_;
};

TEST_F(AgentGangTest, TwoAgentsRunTheirPartsOfOneGang) {
  ::setenv("NCCL_DEBUG", "WARN", 1);
  StartAgent("node-a", "127.0.0.1");
  StartAgent("node-b", "127.0.0.1");
  for (const char* worker : {"node-a", "node-b"}) {
    auto reg = service_.AwaitRegister(worker, milliseconds(10000));
    ASSERT_TRUE(reg) << worker << " never registered";
    EXPECT_EQ(reg->advertise_addr(), "127.0.0.1");
    EXPECT_EQ(reg->gang_port_lo(), 29500);
    EXPECT_EQ(reg->gang_port_hi(), 29509);
  }
  const int store_port = FreePort();
  service_.Assign("node-a", Part(0, store_port));
  service_.Assign("node-b", Part(2, store_port));
  // The agents' network variables reach their ranks (set before the agents started).
  bool saw_env = false;
  for (int i = 0; i < 2000 && !saw_env; ++i) {
    for (pid_t pid : agents_["node-b"]->RankPids(1)) {
      std::ifstream environ("/proc/" + std::to_string(pid) + "/environ");
      std::string all((std::istreambuf_iterator<char>(environ)), std::istreambuf_iterator<char>());
      if (all.find(std::string("NCCL_DEBUG=WARN") + '\0') != std::string::npos) saw_env = true;
    }
    std::this_thread::sleep_for(milliseconds(10));
  }
  EXPECT_TRUE(saw_env) << "no rank of node-b had NCCL_DEBUG=WARN";
  auto a = service_.AwaitComplete("node-a", milliseconds(240000));
  auto b = service_.AwaitComplete("node-b", milliseconds(30000));
  ASSERT_TRUE(a && b) << "a gang part never completed";
  ASSERT_TRUE(a->succeeded()) << a->failure_kind() << ": " << a->message();
  ASSERT_TRUE(b->succeeded()) << b->failure_kind() << ": " << b->message();
  const auto ra = nlohmann::json::parse(a->result_json()), rb = nlohmann::json::parse(b->result_json());
  EXPECT_EQ(ra["first_rank"], 0);
  EXPECT_EQ(rb["first_rank"], 2);
  EXPECT_EQ(ra["world_size"], 4);
  EXPECT_EQ(ra["ranks"], 2);
  EXPECT_EQ(ra["losses"].size(), 3u) << ra.dump();
  EXPECT_EQ(ra["steps"], 3);
  EXPECT_EQ(rb["steps"], 3);

  // What each agent reported names the global ranks it ran; only rank 0's agent reports losses.
  auto ranks_of = [](const std::vector<fuji::v1::JobReport>& reports, size_t* losses) {
    std::set<int> ranks;
    *losses = 0;
    for (const auto& r : reports) {
      for (const auto& t : r.timings()) {
        if (t.phase() != "prepare") ranks.insert(t.rank());
      }
      *losses += static_cast<size_t>(r.losses_size());
    }
    return ranks;
  };
  size_t losses_a = 0, losses_b = 0;
  EXPECT_EQ(ranks_of(service_.Reports("node-a"), &losses_a), (std::set<int>{0, 1}));
  EXPECT_EQ(ranks_of(service_.Reports("node-b"), &losses_b), (std::set<int>{2, 3}));
  EXPECT_GE(losses_a, 3u);
  EXPECT_EQ(losses_b, 0u);
  std::printf("node-a: %s\nnode-b ranks %d..: steps %d\n", ra["losses"].dump().c_str(), rb["first_rank"].get<int>(),
              rb["steps"].get<int>());
}

TEST_F(AgentGangTest, AnAgentWithoutAnAdvertisedAddressRefusesAGangPart) {
  StartAgent("node-a", "");
  auto reg = service_.AwaitRegister("node-a", milliseconds(10000));
  ASSERT_TRUE(reg);
  EXPECT_EQ(reg->advertise_addr(), "");
  service_.Assign("node-a", Part(0, FreePort()));
  auto a = service_.AwaitComplete("node-a", milliseconds(30000));
  ASSERT_TRUE(a);
  EXPECT_FALSE(a->succeeded());
  EXPECT_EQ(a->failure_kind(), "internal");
  EXPECT_NE(a->message().find("--advertise-addr"), std::string::npos) << a->message();
}

}  // namespace
}  // namespace fuji::agent
