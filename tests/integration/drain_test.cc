// Draining agents end to end: real fujid, two fuji-agents with two CPU devices each, the fuji-rank
// gangs they run and the real fuji CLI. `fuji admin drain AGENT --requeue` has a running 2-rank
// fine-tune of a tiny random model checkpoint at its next step and go back to the queue without
// using an attempt; it resumes from that checkpoint on the other agent and its losses continue
// those of an uninterrupted run. A drain without --requeue lets the job finish where it is
// (`fuji workers` says DRAINING, then DRAINED) and places nothing new there until the undrain.
#include <signal.h>

#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <map>
#include <regex>
#include <thread>

#include "tests/integration/process_util.h"

namespace fuji::testing {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

class DrainTest : public ServiceTestBase {
 protected:
  static void SetUpTestSuite() {
    MakeRootWithTextAndTinyModel("drain_test");
  }
  static void TearDownTestSuite() { RemoveRoot(); }

  // The job's train losses by step (`fuji losses ID --output json`).
  std::map<int64_t, double> TrainLosses(int64_t id) {
    nlohmann::json j = Json({"losses", std::to_string(id), "--output", "json"});
    std::map<int64_t, double> losses;
    if (!j.is_object()) return losses;
    for (const auto& p : j["losses"]) losses[p["step"].get<int64_t>()] = p["loss"].get<double>();
    return losses;
  }
  // `fuji admin ARGS` with the admin's token.
  CliResult Admin(const std::vector<std::string>& args) {
    std::vector<std::string> all = {"admin"};
    all.insert(all.end(), args.begin(), args.end());
    return FujiAs(admin_token_, all, address_);
  }
  // The "drain" word `fuji workers --output json` gives the agent ("" when not drained).
  std::string DrainOf(const std::string& worker) {
    nlohmann::json j = Json({"workers", "--output", "json"});
    for (const auto& w : j["workers"]) {
      if (w["id"] == worker) return w["drain"].get<std::string>();
    }
    return "(no such worker)";
  }
  // Waits until the agent runs both ranks and (ckpt given) the save directory has a checkpoint,
  // then stops the ranks (SIGSTOP) at once, so that the job cannot end while the test looks at
  // it; their pids. Reads only /proc and the directory: a CLI call per poll could miss a short run.
  static std::vector<pid_t> WaitForRanksAndHoldThem(pid_t agent, const std::string& ckpt) {
    const auto end = Clock::now() + 180s;
    while (Clock::now() < end) {
      std::vector<pid_t> ranks = RankPids(agent);
      if (ranks.size() == 2 && (ckpt.empty() || std::filesystem::exists(ckpt + "/latest"))) {
        for (pid_t pid : ranks) ::kill(pid, SIGSTOP);
        return ranks;
      }
      std::this_thread::sleep_for(5ms);
    }
    return {};
  }
  // Whether `signal` is pending for the process (its own or its thread group's).
  static bool SignalPending(pid_t pid, int signal) {
    const std::string status = Slurp("/proc/" + std::to_string(pid) + "/status");
    const uint64_t bit = uint64_t{1} << (signal - 1);
    for (const char* field : {"SigPnd:", "ShdPnd:"}) {
      const size_t at = status.find(field);
      if (at != std::string::npos && (std::stoull(status.substr(at + std::strlen(field)), nullptr, 16) & bit)) {
        return true;
      }
    }
    return false;
  }
};

TEST_F(DrainTest, RequeueCheckpointsAFinetuneThatResumesOnTheOtherAgent) {
  auto daemon = StartDaemon();
  auto agent_a = StartAgent("node-a", 2);
  auto agent_b = StartAgent("node-b", 2);
  const int steps = 30;

  // The uninterrupted run the preempted one must agree with.
  nlohmann::json reference = SubmitTinyFinetune(steps, {"--wait"});
  ASSERT_TRUE(reference.is_object()) << daemon->log();
  ASSERT_EQ(reference["state"], "SUCCEEDED") << reference.dump() << agent_a->log() << agent_b->log();
  const std::map<int64_t, double> expected = TrainLosses(reference["id"].get<int64_t>());
  ASSERT_EQ(expected.size(), static_cast<size_t>(steps));

  // One attempt only: a preemption counted as a failure would fail the job.
  const std::string ckpt = dir_ + "/ckpt";
  nlohmann::json submitted = SubmitTinyFinetune(steps, {"--save-to", ckpt, "--save-every", "2", "--max-attempts", "1"});
  ASSERT_TRUE(submitted.is_object());
  const int64_t id = submitted["id"].get<int64_t>();
  const std::string ids = std::to_string(id);
  // Which agent took it; the other one takes it after the drain.
  std::string from;
  const auto placed_by = Clock::now() + 120s;
  while (from.empty() && Clock::now() < placed_by) {
    from = Show(id).value("worker_id", "");
    std::this_thread::sleep_for(20ms);
  }
  ASSERT_FALSE(from.empty()) << Show(id).dump();
  const std::string to = from == "node-a" ? "node-b" : "node-a";
  Service& drained = from == "node-a" ? *agent_a : *agent_b;
  // The ranks are held still while the drain is asked and the agent signals them, so that the job
  // cannot finish first: the signal waits, pending, until they go on.
  const std::vector<pid_t> ranks = WaitForRanksAndHoldThem(drained.pid(), ckpt);
  ASSERT_EQ(ranks.size(), 2u) << Show(id).dump() << drained.log();
  CliResult drain = Admin({"drain", from, "--requeue"});
  ASSERT_EQ(drain.exit_code, 0) << drain.err;
  EXPECT_EQ(drain.out, "agent " + from + " draining (1 running job; its fine-tunes checkpoint and requeue)\n");
  EXPECT_EQ(DrainOf(from), "DRAINING");
  const auto signal_by = Clock::now() + 30s;
  while (!SignalPending(ranks[0], SIGUSR1) && !SignalPending(ranks[1], SIGUSR1) && Clock::now() < signal_by) {
    std::this_thread::sleep_for(20ms);
  }
  const bool signalled = SignalPending(ranks[0], SIGUSR1) || SignalPending(ranks[1], SIGUSR1);
  for (pid_t pid : ranks) ::kill(pid, SIGCONT);
  ASSERT_TRUE(signalled) << "the agent never asked its ranks to stop: " << drained.log();

  // Back to the queue with its attempt count as it was, then on the other agent to the end.
  ASSERT_TRUE(WaitForState(id, "SUCCEEDED", 300s)) << Show(id).dump() << daemon->log() << drained.log();
  nlohmann::json job = Show(id);
  EXPECT_EQ(job["attempts"], 0) << job.dump();
  const std::string history = Sql("SELECT to_state, message FROM job_events WHERE job_id = " + ids + " ORDER BY seq");
  std::smatch m;
  ASSERT_TRUE(std::regex_search(history, m, std::regex("QUEUED\\|requeued: agent " + from +
                                                       " drained \\(checkpointed at step (\\d+)\\)")))
      << history;
  const int64_t stopped_at = std::stoll(m[1].str());
  EXPECT_GT(stopped_at, 0);
  EXPECT_LT(stopped_at, steps);
  EXPECT_NE(history.find("assigned to " + to + " devices"), std::string::npos) << history;
  EXPECT_EQ(history.find("RETRYING"), std::string::npos) << "a preemption is no failure: " << history;

  nlohmann::json shown = Json({"result", ids, "--output", "json"});
  ASSERT_TRUE(shown.is_object());
  EXPECT_EQ(shown["result"]["start_step"].get<int64_t>(), stopped_at) << shown["result"].dump();
  EXPECT_EQ(shown["result"]["steps"], steps);

  // Every step's loss once, and equal (relative 1e-5) to the uninterrupted run's, before the stop
  // and after the resume.
  const std::map<int64_t, double> got = TrainLosses(id);
  ASSERT_EQ(got.size(), expected.size());
  for (const auto& [step, loss] : expected) {
    ASSERT_EQ(got.count(step), 1u) << "step " << step;
    EXPECT_LE(std::fabs(got.at(step) - loss), 1e-5 * std::fabs(loss)) << "step " << step;
  }
  std::printf("preempted after step %lld of %d on %s; resumed on %s from that checkpoint\n",
              static_cast<long long>(stopped_at), steps, from.c_str(), to.c_str());

  // Nothing runs there now: DRAINED, in both listings. Undrained, it takes work again.
  EXPECT_EQ(DrainOf(from), "DRAINED");
  CliResult listed = Admin({"agent", "list"});
  EXPECT_NE(listed.out.find("DRAINED since "), std::string::npos) << listed.out;
  EXPECT_NE(listed.out.find("(requeue)"), std::string::npos) << listed.out;
  CliResult undrain = Admin({"undrain", from});
  ASSERT_EQ(undrain.exit_code, 0) << undrain.err;
  EXPECT_EQ(undrain.out, "agent " + from + " undrained\n");
  EXPECT_EQ(DrainOf(from), "");
  EXPECT_EQ(RanksOf(drained.pid()), 0);
}

TEST_F(DrainTest, WithoutRequeueTheJobFinishesThereAndUndrainTakesWorkAgain) {
  auto daemon = StartDaemon();
  auto agent = StartAgent("node-a", 2);
  nlohmann::json tune = SubmitTinyFinetune(60, {});
  ASSERT_TRUE(tune.is_object()) << daemon->log();
  const int64_t id = tune["id"].get<int64_t>();
  // Held still while the drain is looked at: DRAINING while the job runs. `admin agent drain` is
  // the same command as `admin drain`.
  const std::vector<pid_t> ranks = WaitForRanksAndHoldThem(agent->pid(), "");
  ASSERT_EQ(ranks.size(), 2u) << Show(id).dump() << agent->log();
  CliResult drain = Admin({"agent", "drain", "node-a"});
  ASSERT_EQ(drain.exit_code, 0) << drain.err;
  EXPECT_EQ(drain.out, "agent node-a draining (1 running job)\n");
  EXPECT_EQ(DrainOf("node-a"), "DRAINING");
  CliResult table = Fuji({"workers"}, address_);
  EXPECT_NE(table.out.find("ONLINE,DRAINING"), std::string::npos) << table.out;
  CliResult listed = Admin({"agent", "list"});
  EXPECT_NE(listed.out.find("DRAINING since "), std::string::npos) << listed.out;
  // Nothing new is placed on it.
  nlohmann::json infer = Json({"submit", "infer", "--model", root_ + "/tiny", "--prompt", "hi", "--max-new-tokens",
                               "2", "--output", "json"});
  ASSERT_TRUE(infer.is_object());
  const int64_t infer_id = infer["id"].get<int64_t>();
  // A heartbeat or two: the agent is not asked to stop anything.
  std::this_thread::sleep_for(3s);
  for (pid_t pid : ranks) {
    EXPECT_FALSE(SignalPending(pid, SIGUSR1)) << "a drain without --requeue preempted the job";
    ::kill(pid, SIGCONT);
  }

  ASSERT_TRUE(WaitForState(id, "SUCCEEDED", 300s)) << Show(id).dump() << agent->log();
  nlohmann::json job = Show(id);
  EXPECT_EQ(job["attempts"], 0) << job.dump();
  const std::string history = Sql("SELECT message FROM job_events WHERE job_id = " + std::to_string(id));
  EXPECT_EQ(history.find("requeued"), std::string::npos) << history;
  EXPECT_EQ(Json({"result", std::to_string(id), "--output", "json"})["result"]["start_step"], 0);
  EXPECT_EQ(Show(infer_id)["state"], "QUEUED") << "placed on a drained agent";
  EXPECT_EQ(DrainOf("node-a"), "DRAINED");
  table = Fuji({"workers"}, address_);
  EXPECT_NE(table.out.find("ONLINE,DRAINED"), std::string::npos) << table.out;

  CliResult undrain = Admin({"undrain", "node-a"});
  ASSERT_EQ(undrain.exit_code, 0) << undrain.err;
  EXPECT_TRUE(WaitForState(infer_id, "SUCCEEDED", 120s)) << Show(infer_id).dump() << agent->log();
  EXPECT_EQ(DrainOf("node-a"), "");
  CliResult refused = Admin({"undrain", "node-a", "--requeue"});
  EXPECT_NE(refused.exit_code, 0) << "--requeue belongs to drain";
}

}  // namespace
}  // namespace fuji::testing
