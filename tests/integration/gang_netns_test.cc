// A gang across two "nodes": two network namespaces joined by a veth pair (10.77.0.1/24 and
// 10.77.0.2/24), each running one Gang of two real fuji-rank processes (ranks 0-1 and 2-3 of 4) that
// meet at a TCPStore rank 0 hosts on 10.77.0.1. The ranks enter their namespace through a wrapper
// script (`ip netns exec NS fuji-rank`, and `unshare -m` with a bind mount for a save directory
// private to the node). Needs root and `ip netns`; skipped otherwise.
//
//   - a 4-rank ZeRO-3 fine-tune of a tiny random model over Gloo gives the losses (relative 1e-5)
//     and final weights (1e-4) of the same job in one gang with a FileStore;
//   - a --save-to that each node sees as a different directory is refused by every rank with one
//     line naming both nodes;
//   - the link going down mid-run ends both halves within the collective timeout and a few seconds,
//     with no process left;
//   - a gang whose TCPStore host is gone fails at start within the timeout, naming the rendezvous.
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <optional>
#include <thread>

#include <gtest/gtest.h>

#include "worker/ckpt/zero_checkpoint.h"
#include "worker/launcher/finetune_prepare.h"
#include "worker/launcher/gang.h"

namespace fuji::launch {
namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

int Shell(const std::string& command) { return std::system((command + " >/dev/null 2>&1").c_str()); }

// One request to a single fuji-rank process; its result, or the error event's message.
Result<nlohmann::json> RunRankOnce(const std::string& executable, const nlohmann::json& request) {
  auto rank = ChildProcess::Spawn({executable, {}, {}});
  if (!rank.ok()) return rank.status();
  FUJI_RETURN_IF_ERROR((*rank)->Send(request));
  (*rank)->CloseInput();
  std::optional<nlohmann::json> result;
  std::string error = "no result";
  for (;;) {
    auto next = (*rank)->Next(std::chrono::seconds(60));
    if (!next.ok()) return next.status();
    if (!next->has_value()) break;
    const nlohmann::json& e = (*next)->event;
    if ((*next)->kind != ChildOutput::Kind::kEvent) continue;
    if (e.value("event", "") == "result") result = e.value("result", nlohmann::json::object());
    if (e.value("event", "") == "error") error = e.value("message", "error");
  }
  (*rank)->Wait();
  if (!result) return Internal(request.value("op", "") + ": " + error);
  return *result;
}

std::vector<double> Losses(const nlohmann::json& result) {
  std::vector<double> out;
  for (const auto& l : result["losses"]) out.push_back(l["loss"].get<double>());
  return out;
}

// Every unit's master weights of a checkpoint, assembled.
std::vector<std::vector<float>> Weights(const std::string& save_to) {
  auto reader = ckpt::CheckpointReader::Open(save_to);
  EXPECT_TRUE(reader.ok()) << reader.status().message();
  std::vector<std::vector<float>> out;
  if (!reader.ok()) return out;
  for (size_t u = 0; u < reader->meta().units.size(); ++u) {
    const int64_t n = reader->meta().units[u].numel;
    out.emplace_back(static_cast<size_t>(n));
    const auto s = reader->Read(u, 0, n, out.back().data(), nullptr, nullptr);
    EXPECT_TRUE(s.ok()) << s.message();
  }
  return out;
}

struct Half {
  Result<nlohmann::json> result = Internal("not run");
  std::optional<GangFailure> failure;
  std::vector<pid_t> pids;
  double seconds = 0;
};

class GangNetnsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root (network namespaces)";
    if (Shell("ip netns list") != 0) GTEST_SKIP() << "`ip netns` is missing";
    rank_ = std::string(FUJI_BINARY_DIR) + "/bin/fuji-rank";
    if (::access(rank_.c_str(), X_OK) != 0) GTEST_SKIP() << "fuji-rank not built (FUJI_WITH_TORCH=OFF)";
    const std::string tag = std::to_string(::getpid() % 100000);
    ns_ = {"fujigA" + tag, "fujigB" + tag};
    veth_ = {"fgA" + tag, "fgB" + tag};
    dir_ = std::filesystem::temp_directory_path() / ("fuji-gang-netns-" + tag);
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
    // Two namespaces joined by a veth pair; removed in TearDown whatever happens.
    made_ = true;
    for (const std::string& command :
         {"ip netns add " + ns_[0], "ip netns add " + ns_[1],
          "ip link add " + veth_[0] + " netns " + ns_[0] + " type veth peer name " + veth_[1] + " netns " + ns_[1],
          "ip -n " + ns_[0] + " addr add 10.77.0.1/24 dev " + veth_[0],
          "ip -n " + ns_[1] + " addr add 10.77.0.2/24 dev " + veth_[1],
          "ip -n " + ns_[0] + " link set lo up", "ip -n " + ns_[1] + " link set lo up",
          "ip -n " + ns_[0] + " link set " + veth_[0] + " up", "ip -n " + ns_[1] + " link set " + veth_[1] + " up"}) {
      ASSERT_EQ(Shell(command), 0) << command;
    }
    auto init = RunRankOnce(rank_, {{"op", "init"}, {"id", "init"}, {"arch", "tiny"}, {"seed", 1},
                                    {"out", (dir_ / "tiny").string()}, {"vocab_dir", DefaultVocabDir()}});
    ASSERT_TRUE(init.ok()) << init.status().ToString();
    std::ofstream text(dir_ / "text.txt");
    for (int i = 0; i < 300; ++i) text << "Mt. Fuji, " << i << " metres of it, is the highest mountain in Japan.\n";
  }

  void TearDown() override {
    if (made_) {
      Shell("ip netns del " + ns_[0]);
      Shell("ip netns del " + ns_[1]);
    }
    if (!dir_.empty()) std::filesystem::remove_all(dir_);
  }

  // 4 ranks of ZeRO-3, seq_len 32, micro-batch 2, one thread each, prepared once.
  FinetuneSpec Prepared(int64_t steps, const std::string& save_to) {
    FinetuneSpec spec;
    spec.model = (dir_ / "tiny").string();
    spec.data = (dir_ / "text.txt").string();
    spec.cache_dir = (dir_ / "cache").string();
    spec.ranks = 4;
    spec.zero = 3;
    spec.seq_len = 32;
    spec.micro_batch = 2;
    spec.steps = steps;
    spec.threads = 1;
    spec.save_to = save_to;
    PrepareOptions prepare;
    prepare.max_ranks = 4;
    auto prepared = PrepareFinetune(spec, prepare);
    EXPECT_TRUE(prepared.ok()) << prepared.status().ToString();
    return prepared.ok() ? prepared->spec : spec;
  }

  // The executable of node i's ranks: fuji-rank in its namespace; with `private_dir`, in a mount
  // namespace of its own where private_dir is bind-mounted on `at`.
  std::string Wrapper(int i, const std::string& private_dir = "", const std::string& at = "",
                      bool read_only = false) {
    const std::string path = (dir_ / ("rank-" + std::to_string(i) + ".sh")).string();
    std::ofstream out(path);
    out << "#!/bin/sh\n";
    if (private_dir.empty()) {
      out << "exec ip netns exec " << ns_[i] << " " << rank_ << "\n";
    } else {
      out << "exec ip netns exec " << ns_[i] << " unshare -m sh -c 'mount --bind " << private_dir << " " << at
          << (read_only ? " && mount -o remount,bind,ro " + at : "") << " && exec " << rank_ << "'\n";
    }
    out.close();
    ::chmod(path.c_str(), 0755);
    return path;
  }

  // Runs node 0's half (ranks 0-1) and node 1's (ranks 2-3) at once, at tcp:10.77.0.1:port.
  // `during` runs on its own thread once node 0 has reported its first loss.
  // by_interface: the ranks get no bind_addr but GLOO_SOCKET_IFNAME, their node's veth.
  std::vector<Half> RunTwoNodes(FinetuneSpec spec, int port, const std::vector<std::string>& executables,
                                const std::function<void()>& during = nullptr, bool by_interface = false) {
    std::vector<Half> halves(2);
    std::atomic<bool> first_loss{false};
    std::vector<std::thread> threads;
    for (int i = 0; i < 2; ++i) {
      threads.emplace_back([&, i] {
        FinetuneSpec s = spec;
        s.node = i == 0 ? "node-a" : "node-b";
        s.bind_addr = by_interface ? "" : i == 0 ? "10.77.0.1" : "10.77.0.2";
        GangOptions o;
        if (by_interface) o.env["GLOO_SOCKET_IFNAME"] = veth_[static_cast<size_t>(i)];
        o.executable = executables[static_cast<size_t>(i)];
        o.world_size = 4;
        o.first_rank = 2 * i;
        o.local_ranks = 2;
        o.rendezvous = "tcp:10.77.0.1:" + std::to_string(port);
        o.terminate_grace = milliseconds(2000);
        Gang gang(s, o);
        GangCallbacks callbacks;
        callbacks.started = [&, i](const std::vector<pid_t>& pids) { halves[static_cast<size_t>(i)].pids = pids; };
        callbacks.output = [&](const GangOutput& out) {
          if (out.output.kind == ChildOutput::Kind::kEvent && out.output.event.value("event", "") == "loss") {
            first_loss = true;
          }
        };
        const auto begin = Clock::now();
        halves[static_cast<size_t>(i)].result = gang.Run(callbacks);
        halves[static_cast<size_t>(i)].seconds = std::chrono::duration<double>(Clock::now() - begin).count();
        halves[static_cast<size_t>(i)].failure = gang.failure();
        EXPECT_TRUE(gang.pids().empty());
      });
    }
    if (during) {
      const auto until = Clock::now() + std::chrono::seconds(180);
      while (!first_loss && Clock::now() < until) std::this_thread::sleep_for(milliseconds(20));
      EXPECT_TRUE(first_loss) << "node-a never reported a loss";
      during();
    }
    for (auto& t : threads) t.join();
    return halves;
  }

  std::string rank_;
  std::vector<std::string> ns_, veth_;
  std::filesystem::path dir_;
  bool made_ = false;
};

TEST_F(GangNetnsTest, TwoNodesTrainAsOneGangWithAFileStore) {
  constexpr int64_t kSteps = 4;
  const std::string ref_dir = (dir_ / "ref").string(), gang_dir = (dir_ / "gang").string();
  GangOptions o;
  o.executable = rank_;
  Gang reference(Prepared(kSteps, ref_dir), o);
  Result<nlohmann::json> want = reference.Run(GangCallbacks{});
  ASSERT_TRUE(want.ok()) << want.status().ToString();

  std::vector<Half> halves = RunTwoNodes(Prepared(kSteps, gang_dir), 29411, {Wrapper(0), Wrapper(1)});
  for (int i = 0; i < 2; ++i) {
    ASSERT_TRUE(halves[i].result.ok()) << "node " << i << ": " << halves[i].result.status().ToString();
  }
  const nlohmann::json& a = *halves[0].result;
  const nlohmann::json& b = *halves[1].result;
  EXPECT_EQ(a["first_rank"], 0);
  EXPECT_EQ(b["first_rank"], 2);
  EXPECT_EQ(a["world_size"], 4);
  EXPECT_EQ(a["steps"], kSteps);

  const std::vector<double> got = Losses(a), expected = Losses(*want);
  ASSERT_EQ(got.size(), static_cast<size_t>(kSteps)) << a.dump();
  ASSERT_EQ(got.size(), expected.size());
  for (size_t i = 0; i < got.size(); ++i) {
    EXPECT_LE(std::fabs(got[i] - expected[i]), 1e-5 * std::fabs(expected[i]))
        << "step " << i + 1 << ": " << got[i] << " across nodes vs " << expected[i] << " in one gang";
    std::printf("step %zu: loss %.7f across nodes, %.7f in one gang\n", i + 1, got[i], expected[i]);
  }
  const auto wa = Weights(gang_dir), wb = Weights(ref_dir);
  ASSERT_EQ(wa.size(), wb.size());
  ASSERT_FALSE(wa.empty());
  double max_diff = 0;
  for (size_t u = 0; u < wa.size(); ++u) {
    ASSERT_EQ(wa[u].size(), wb[u].size());
    for (size_t k = 0; k < wa[u].size(); ++k) max_diff = std::max(max_diff, std::fabs(double(wa[u][k]) - wb[u][k]));
  }
  EXPECT_LE(max_diff, 1e-4);
  std::printf("final weights: largest difference %.3g; node-a %.1f s, node-b %.1f s\n", max_diff,
              halves[0].seconds, halves[1].seconds);
}

// Without a bind address the ranks bind Gloo to the interface GLOO_SOCKET_IFNAME names.
TEST_F(GangNetnsTest, RanksBindToTheInterfaceGlooSocketIfnameNames) {
  std::vector<Half> halves = RunTwoNodes(Prepared(2, ""), 29417, {Wrapper(0), Wrapper(1)}, nullptr,
                                         /*by_interface=*/true);
  for (int i = 0; i < 2; ++i) {
    ASSERT_TRUE(halves[i].result.ok()) << "node " << i << ": " << halves[i].result.status().ToString();
    EXPECT_EQ((*halves[i].result)["steps"], 2);
  }
}

TEST_F(GangNetnsTest, ASaveDirectoryPrivateToEachNodeIsRefusedByEveryRank) {
  const std::string save = (dir_ / "save").string();
  const std::string private_a = (dir_ / "private-a").string(), private_b = (dir_ / "private-b").string();
  std::filesystem::create_directories(private_a);
  std::filesystem::create_directories(private_b);
  FinetuneSpec spec = Prepared(2, save);
  spec.collective_timeout_ms = 20000;
  std::vector<Half> halves = RunTwoNodes(spec, 29412, {Wrapper(0, private_a, save), Wrapper(1, private_b, save)});
  const std::string want = "--save-to " + save +
                           " is not shared by every node: node-b (ranks 2-3) does not see the probe node-a "
                           "(rank 0) wrote there";
  for (int i = 0; i < 2; ++i) {
    ASSERT_FALSE(halves[i].result.ok()) << "node " << i;
    EXPECT_EQ(halves[i].result.status().code(), StatusCode::kInvalidArgument) << halves[i].result.status().ToString();
    const std::string message = halves[i].result.status().message();
    EXPECT_NE(message.find(want), std::string::npos) << message;
    EXPECT_EQ(message.find('\n'), std::string::npos) << message;
    ASSERT_TRUE(halves[i].failure);
    EXPECT_EQ(halves[i].failure->reason, FailureKind::kBadInput);
    std::printf("node %d: %s (%.1f s)\n", i, message.c_str(), halves[i].seconds);
  }
  // Rank 0 removed its probe.
  for (const auto& entry : std::filesystem::directory_iterator(private_a)) {
    EXPECT_EQ(entry.path().filename().string().rfind(".fuji-probe-", 0), std::string::npos) << entry.path();
  }
}

// Rank 0 cannot write its probe (a read-only mount on node-a): every rank fails with its words at
// once, long before the collective timeout.
TEST_F(GangNetnsTest, ASaveDirectoryRankZeroCannotWriteFailsEveryRankAtOnce) {
  const std::string save = (dir_ / "save").string();
  std::filesystem::create_directories(save);
  FinetuneSpec spec = Prepared(2, save);
  spec.collective_timeout_ms = 60000;
  std::vector<Half> halves = RunTwoNodes(spec, 29416, {Wrapper(0, save, save, /*read_only=*/true), Wrapper(1)});
  for (int i = 0; i < 2; ++i) {
    ASSERT_FALSE(halves[i].result.ok()) << "node " << i;
    EXPECT_EQ(halves[i].result.status().code(), StatusCode::kInvalidArgument) << halves[i].result.status().ToString();
    EXPECT_NE(halves[i].result.status().message().find("--save-to " + save + ": rank 0 cannot create a probe file "
                                                         "there: Read-only file system"),
              std::string::npos)
        << halves[i].result.status().message();
    EXPECT_LT(halves[i].seconds, 30) << "node " << i << " waited for the probe";
    std::printf("node %d: %s (%.1f s)\n", i, halves[i].result.status().message().c_str(), halves[i].seconds);
  }
}

TEST_F(GangNetnsTest, TheLinkGoingDownEndsBothHalvesWithinTheCollectiveTimeout) {
  FinetuneSpec spec = Prepared(100000, "");
  spec.collective_timeout_ms = 4000;
  Clock::time_point down_at;
  std::vector<Half> halves = RunTwoNodes(spec, 29413, {Wrapper(0), Wrapper(1)}, [&] {
    ASSERT_EQ(Shell("ip -n " + ns_[0] + " link set " + veth_[0] + " down"), 0);
    down_at = Clock::now();
  });
  const double after = std::chrono::duration<double>(Clock::now() - down_at).count();
  EXPECT_LT(after, spec.collective_timeout_ms / 1000.0 + 8) << "the halves outlived the link by " << after << " s";
  for (int i = 0; i < 2; ++i) {
    ASSERT_FALSE(halves[i].result.ok()) << "node " << i;
    std::printf("node %d failed %.1f s after the link went down: %s\n", i, after,
                halves[i].result.status().ToString().c_str());
    ASSERT_EQ(halves[i].pids.size(), 2u);
    for (pid_t pid : halves[i].pids) EXPECT_NE(::kill(pid, 0), 0) << "pid " << pid << " is still alive";
  }
}

// Node-b's ranks bind Gloo to 10.0.0.9, an address of node-b that node-a's packets never reach
// (node-a routes it onto the link, where node-b answers no ARP for it: a silent drop). All ranks
// meet at the store, but node-a's Gloo connections to node-b never form: every rank fails within
// the timeout, none hangs.
TEST_F(GangNetnsTest, PeersThatCannotConnectFailWithinTheCollectiveTimeout) {
  FinetuneSpec spec = Prepared(2, "");
  spec.collective_timeout_ms = 4000;
  for (const std::string& command : {"ip -n " + ns_[1] + " addr add 10.0.0.9/32 dev lo",
                                      "ip netns exec " + ns_[1] + " sysctl -w net.ipv4.conf.all.arp_ignore=1",
                                      "ip -n " + ns_[0] + " route add 10.0.0.9/32 dev " + veth_[0]}) {
    ASSERT_EQ(Shell(command), 0) << command;
  }
  std::vector<Half> halves(2);
  std::vector<std::thread> threads;
  const auto begin = Clock::now();
  for (int i = 0; i < 2; ++i) {
    threads.emplace_back([&, i] {
      FinetuneSpec s = spec;
      s.node = i == 0 ? "node-a" : "node-b";
      s.bind_addr = i == 0 ? "10.77.0.1" : "10.0.0.9";
      GangOptions o;
      o.executable = Wrapper(i);
      o.world_size = 4;
      o.first_rank = 2 * i;
      o.local_ranks = 2;
      o.rendezvous = "tcp:10.77.0.1:29415";
      o.terminate_grace = milliseconds(2000);
      Gang gang(s, o);
      halves[static_cast<size_t>(i)].result = gang.Run(GangCallbacks{});
      halves[static_cast<size_t>(i)].seconds = std::chrono::duration<double>(Clock::now() - begin).count();
      halves[static_cast<size_t>(i)].failure = gang.failure();
    });
  }
  for (auto& t : threads) t.join();
  const double seconds = std::chrono::duration<double>(Clock::now() - begin).count();
  for (int i = 0; i < 2; ++i) {
    ASSERT_FALSE(halves[i].result.ok()) << "node " << i;
    ASSERT_TRUE(halves[i].failure);
    // The failing rank reported its error, and it ended (by itself or at the gang's SIGTERM)
    // without the grace's SIGKILL: a Gloo connection still pending on another thread holds
    // nothing up.
    EXPECT_EQ(halves[i].failure->kind, GangFailure::Kind::kRankError);
    EXPECT_NE(halves[i].failure->exit.signal, SIGKILL) << halves[i].failure->exit.Describe();
    std::printf("node %d failed after %.1f s: %s (the rank %s)\n", i, halves[i].seconds,
                halves[i].result.status().ToString().c_str(), halves[i].failure->exit.Describe().c_str());
  }
  EXPECT_LT(seconds, spec.collective_timeout_ms / 1000.0 + 10);
  std::printf("both halves failed within %.1f s\n", seconds);
}

TEST_F(GangNetnsTest, AGangWhoseStoreHostIsGoneFailsAtStartNamingTheRendezvous) {
  FinetuneSpec spec = Prepared(2, "");
  spec.collective_timeout_ms = 3000;
  spec.node = "node-b";
  spec.bind_addr = "10.77.0.2";
  GangOptions o;
  o.executable = Wrapper(1);
  o.world_size = 4;
  o.first_rank = 2;
  o.local_ranks = 2;
  o.rendezvous = "tcp:10.77.0.1:29414";  // node-a hosts nothing there
  Gang gang(spec, o);
  const auto begin = Clock::now();
  Result<nlohmann::json> result = gang.Run(GangCallbacks{});
  const double seconds = std::chrono::duration<double>(Clock::now() - begin).count();
  ASSERT_FALSE(result.ok());
  EXPECT_NE(result.status().message().find("rendezvous tcp:10.77.0.1:29414: "), std::string::npos)
      << result.status().ToString();
  EXPECT_LT(seconds, spec.collective_timeout_ms / 1000.0 + 8);
  std::printf("without its store host the gang failed in %.1f s: %s\n", seconds, result.status().ToString().c_str());
}

}  // namespace
}  // namespace fuji::launch
