// Gangs across agents through the service, on one machine: real fujid and two real fuji-agents,
// each with two CPU devices and --advertise-addr 127.0.0.1 (their gang port ranges apart), driven
// by the real fuji CLI. A 4-rank fine-tune fits neither agent: fujid places ranks 0-1 on one and
// 2-3 on the other in one pass, both run their part against rank 0's TCPStore, and the job succeeds
// with rank 0's result; `fuji show` names the gang. With --nodes 2 a 2-rank fine-tune that one agent
// could hold runs one rank on each. A member agent that dies (its ranks with it) ends the attempt
// for both: fujid tells the other agent to stop its ranks (long before their collective timeout),
// the job waits for a second agent, and the retry runs once the agent is back.
#include <signal.h>

#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include "tests/integration/process_util.h"

namespace fuji::testing {
namespace {

class GangPlacementTest : public ServiceTestBase {
 protected:
  static void SetUpTestSuite() {
    MakeRootWithTextAndTinyModel("gang_placement_test");
  }
  static void TearDownTestSuite() { RemoveRoot(); }

  std::unique_ptr<Service> StartGangAgent(const std::string& id, const std::string& ports) {
    return StartAgentWith(id, 2, {"--allow-read", root_, "--allow-write", root_, "--advertise-addr", "127.0.0.1",
                                  "--gang-ports", ports});
  }

  // Waits until `count` agents are ONLINE (`fuji workers`); false after 60 s.
  bool WaitForAgents(size_t count) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    while (std::chrono::steady_clock::now() < deadline) {
      const nlohmann::json workers = Json({"workers", "--output", "json"});
      size_t online = 0;
      if (workers.is_object() && workers["workers"].is_array()) {
        for (const auto& w : workers["workers"]) online += w.value("state", "") == "ONLINE";
      }
      if (online >= count) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    return false;
  }

  nlohmann::json SubmitFinetune(int ranks, const std::vector<std::string>& extra) {
    std::vector<std::string> args = {
        "submit", "finetune", "--model", root_ + "/tiny", "--data", root_ + "/text/english.txt",
        "--ranks", std::to_string(ranks), "--seq-len", "32", "--micro-batch", "2", "--steps", "4",
        "--lr", "1e-3", "--cache-dir", root_ + "/cache", "--threads", "1", "--max-attempts", "1",
        "--output", "json"};
    args.insert(args.end(), extra.begin(), extra.end());
    return Json(args);
  }
};

TEST_F(GangPlacementTest, FourRanksSpanTwoTwoDeviceAgents) {
  auto daemon = StartDaemon();
  auto a = StartGangAgent("node-a", "29610-29619");
  auto b = StartGangAgent("node-b", "29620-29629");
  ASSERT_TRUE(WaitForAgents(2)) << daemon->log() << a->log() << b->log();
  nlohmann::json j = SubmitFinetune(4, {"--wait"});
  ASSERT_TRUE(j.is_object()) << daemon->log() << a->log() << b->log();
  ASSERT_EQ(j["state"], "SUCCEEDED") << j.dump() << daemon->log() << a->log() << b->log();
  const int64_t id = j["id"].get<int64_t>();
  nlohmann::json job = Show(id);
  ASSERT_EQ(job["gang"].size(), 2u) << job.dump();
  EXPECT_EQ(job["devices"], 4);
  std::vector<std::string> workers;
  for (int i = 0; i < 2; ++i) {
    const nlohmann::json& member = job["gang"][i];
    workers.push_back(member["worker_id"].get<std::string>());
    EXPECT_EQ(member["first_rank"], 2 * i) << job.dump();
    EXPECT_EQ(member["ranks"], 2) << job.dump();
    EXPECT_EQ(member["advertise_addr"], "127.0.0.1");
    EXPECT_EQ(member["device_indices"], nlohmann::json::array({0, 1}));
  }
  EXPECT_NE(workers[0], workers[1]);
  EXPECT_EQ(job["worker_id"], "") << "ended: no agent holds it";
  CliResult shown = Fuji({"show", std::to_string(id)}, address_);
  EXPECT_NE(shown.out.find("gang:       " + workers[0] + " ranks 0-1 (devices 0,1), " + workers[1] +
                           " ranks 2-3 (devices 0,1)"),
            std::string::npos)
      << shown.out;
  // Rank 0's agent's result: its two ranks of four, every step's loss.
  nlohmann::json result = Json({"result", std::to_string(id), "--output", "json"})["result"];
  EXPECT_EQ(result["world_size"], 4) << result.dump();
  EXPECT_EQ(result["first_rank"], 0) << result.dump();
  EXPECT_EQ(result["ranks"], 2) << result.dump();
  EXPECT_EQ(result["losses"].size(), 4u) << result.dump();
  EXPECT_EQ(RanksOf(a->pid()), 0);
  EXPECT_EQ(RanksOf(b->pid()), 0);

  // --nodes 2: two ranks, one on each agent, though either could hold both.
  nlohmann::json pair = SubmitFinetune(2, {"--nodes", "2", "--wait"});
  ASSERT_TRUE(pair.is_object()) << daemon->log();
  ASSERT_EQ(pair["state"], "SUCCEEDED") << pair.dump() << daemon->log() << a->log() << b->log();
  nlohmann::json split = Show(pair["id"].get<int64_t>());
  ASSERT_EQ(split["gang"].size(), 2u) << split.dump();
  EXPECT_EQ(split["gang"][1]["first_rank"], 1);
}

TEST_F(GangPlacementTest, ALostMemberEndsTheAttemptForBothAndTheRetryWaitsForItsReturn) {
  using namespace std::chrono_literals;
  auto daemon = StartDaemon();
  auto a = StartGangAgent("node-a", "29630-29639");
  auto b = StartGangAgent("node-b", "29640-29649");
  ASSERT_TRUE(WaitForAgents(2)) << daemon->log() << a->log() << b->log();
  // Long enough to be running when node-b dies; a collective timeout far beyond what fujid needs.
  std::vector<std::string> args = {
      "submit", "finetune", "--model", root_ + "/tiny", "--data", root_ + "/text/english.txt",
      "--ranks", "4", "--seq-len", "32", "--micro-batch", "2", "--steps", "100000", "--lr", "1e-3",
      "--cache-dir", root_ + "/cache", "--threads", "1", "--max-attempts", "2", "--collective-timeout-ms",
      "300000", "--output", "json"};
  nlohmann::json submitted = Json(args);
  ASSERT_TRUE(submitted.is_object()) << daemon->log();
  const int64_t id = submitted["id"].get<int64_t>();
  ASSERT_TRUE(WaitForState(id, "RUNNING", 120s)) << Show(id).dump() << daemon->log();
  const auto end = std::chrono::steady_clock::now() + 120s;
  while ((RanksOf(a->pid()) < 2 || RanksOf(b->pid()) < 2) && std::chrono::steady_clock::now() < end) {
    std::this_thread::sleep_for(50ms);
  }
  ASSERT_EQ(RanksOf(b->pid()), 2) << b->log();
  const std::vector<pid_t> b_ranks = RankPids(b->pid());
  b->Kill9();
  for (pid_t pid : b_ranks) ::kill(pid, SIGKILL);
  const auto killed_at = std::chrono::steady_clock::now();

  // node-b's lease runs out: the attempt is over, node-a's ranks are stopped by fujid.
  while (RanksOf(a->pid()) > 0 && std::chrono::steady_clock::now() < killed_at + 90s) {
    std::this_thread::sleep_for(100ms);
  }
  EXPECT_EQ(RanksOf(a->pid()), 0) << a->log();
  EXPECT_LT(std::chrono::steady_clock::now() - killed_at, 90s);
  ASSERT_TRUE(WaitForState(id, "QUEUED", 60s)) << Show(id).dump();
  nlohmann::json job = Show(id);
  EXPECT_EQ(job["attempts"], 1);
  // It waits for a second agent (once the agents of its attempt have been heard from or lost);
  // why its attempt ended is in its events.
  for (const auto until = std::chrono::steady_clock::now() + 20s;
       job["reason"].get<std::string>().find("node-a: 2 of 2") == std::string::npos &&
       std::chrono::steady_clock::now() < until;
       job = Show(id)) {
    std::this_thread::sleep_for(200ms);
  }
  EXPECT_NE(job["reason"].get<std::string>().find("node-a: 2 of 2"), std::string::npos) << job.dump();
  const std::string retried = Sql("SELECT message FROM job_events WHERE job_id = " + std::to_string(id) +
                                  " AND to_state = 'RETRYING'");
  EXPECT_NE(retried.find("agent node-b lost"), std::string::npos) << retried;

  // Back: the retry spans both agents again (then is cancelled: its run is long).
  auto b2 = StartGangAgent("node-b", "29640-29649");
  ASSERT_TRUE(WaitForState(id, "RUNNING", 120s)) << Show(id).dump() << daemon->log() << b2->log();
  job = Show(id);
  ASSERT_EQ(job["gang"].size(), 2u) << job.dump();
  CliResult cancel = Fuji({"cancel", std::to_string(id)}, address_);
  EXPECT_EQ(cancel.exit_code, 0) << cancel.err;
  ASSERT_TRUE(WaitForState(id, "CANCELLED", 60s)) << Show(id).dump() << daemon->log();
  const auto cancelled_at = std::chrono::steady_clock::now();
  while ((RanksOf(a->pid()) > 0 || RanksOf(b2->pid()) > 0) && std::chrono::steady_clock::now() < cancelled_at + 60s) {
    std::this_thread::sleep_for(100ms);
  }
  EXPECT_EQ(RanksOf(a->pid()), 0) << a->log();
  EXPECT_EQ(RanksOf(b2->pid()), 0) << b2->log();
}

}  // namespace
}  // namespace fuji::testing
