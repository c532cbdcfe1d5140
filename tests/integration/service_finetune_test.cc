// Fine-tuning through the service, end to end: real fujid, a fuji-agent with two CPU devices and
// the gang of fuji-rank processes it runs, driven by the real fuji CLI. A 2-rank fine-tune of a
// tiny random model stores its losses, per-rank timings and samples; a rank killed with SIGKILL
// fails the attempt cleanly (the other rank stopped within the collective timeout) and the retry
// resumes from the last checkpoint.
#include <signal.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <map>
#include <set>
#include <sstream>
#include <thread>

#include "tests/integration/process_util.h"

namespace fuji::testing {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

class ServiceFinetuneTest : public ServiceTestBase {
 protected:
  static void SetUpTestSuite() {
    MakeRoot("service_finetune_test");
    const std::string corpora = std::string(FUJI_SOURCE_DIR) + "/tests/reference/make_corpora.sh";
    ASSERT_EQ(std::system(("sh " + Quote(corpora) + " " + Quote(root_ + "/text")).c_str()), 0);
    CliResult r = Fuji({"model", "init", "--arch", "tiny", "--out", root_ + "/tiny", "--seed", "1"});
    ASSERT_EQ(r.exit_code, 0) << r.err;
  }
  static void TearDownTestSuite() { RemoveRoot(); }

  // `fuji submit finetune` of the tiny model on English text with 2 ranks; the JSON it prints.
  nlohmann::json SubmitFinetune(int steps, const std::vector<std::string>& extra) {
    std::vector<std::string> args = {
        "submit", "finetune", "--model", root_ + "/tiny", "--data", root_ + "/text/english.txt",
        "--ranks", "2", "--seq-len", "32", "--micro-batch", "2", "--steps", std::to_string(steps),
        "--lr", "1e-3", "--cache-dir", root_ + "/cache", "--threads", "1", "--output", "json"};
    args.insert(args.end(), extra.begin(), extra.end());
    return Json(args);
  }

  // The steps of `fuji losses ID --output json`'s train losses, in order.
  std::vector<int64_t> TrainSteps(int64_t id) {
    nlohmann::json j = Json({"losses", std::to_string(id), "--output", "json"});
    std::vector<int64_t> steps;
    if (!j.is_object()) return steps;
    for (const auto& p : j["losses"]) {
      EXPECT_TRUE(p["loss"].is_number()) << p.dump();
      steps.push_back(p["step"].get<int64_t>());
    }
    return steps;
  }

  static std::vector<int64_t> Range(int64_t first, int64_t last) {
    std::vector<int64_t> v;
    for (int64_t s = first; s <= last; ++s) v.push_back(s);
    return v;
  }
};

TEST_F(ServiceFinetuneTest, TwoRanksStoreLossesTimingsAndSamples) {
  auto daemon = StartDaemon();
  auto agent = StartAgent("node-a", 2);
  const int steps = 6;
  nlohmann::json j = SubmitFinetune(steps, {"--wait"});
  ASSERT_TRUE(j.is_object()) << daemon->log() << agent->log();
  ASSERT_EQ(j["state"], "SUCCEEDED") << j.dump() << daemon->log() << agent->log();
  EXPECT_EQ(j["kind"], "finetune");
  const int64_t id = j["id"].get<int64_t>();
  const std::string ids = std::to_string(id);
  nlohmann::json job = Show(id);
  EXPECT_EQ(job["devices"], 2) << job.dump();

  EXPECT_EQ(TrainSteps(id), Range(1, steps)) << "one train loss per step";

  // The launcher's result: both ranks' memory, rank 0's losses.
  nlohmann::json shown = Json({"result", ids, "--output", "json"});
  ASSERT_TRUE(shown.is_object());
  const nlohmann::json result = shown["result"];
  EXPECT_EQ(result["ranks"], 2) << result.dump();
  EXPECT_EQ(result["steps"], steps);
  EXPECT_EQ(result["start_step"], 0);
  ASSERT_EQ(result["memory"]["ranks"].size(), 2u) << result.dump();
  for (const auto& m : result["memory"]["ranks"]) {
    EXPECT_GT(m["peak_rss_bytes"].get<double>(), 0) << m.dump();
    EXPECT_GT(m["params_device_bytes"].get<double>() + m["params_host_bytes"].get<double>(), 0) << m.dump();
  }
  EXPECT_EQ(result["losses"].size(), static_cast<size_t>(steps));
  EXPECT_EQ(result["timings_per_rank"].size(), 2u);

  // The rank phases of both ranks, and the agent's prepare.
  nlohmann::json timings = Json({"timings", ids, "--output", "json"});
  std::map<int, std::set<std::string>> phases;
  for (const auto& t : timings["timings"]) phases[t["rank"].get<int>()].insert(t["phase"].get<std::string>());
  for (int rank : {0, 1}) {
    for (const char* p : {"load", "data", "train", "eval"}) {
      EXPECT_TRUE(phases[rank].count(p)) << "rank " << rank << " " << p << ": " << timings.dump();
    }
  }
  EXPECT_TRUE(phases[0].count("prepare")) << timings.dump();

  nlohmann::json samples = Json({"samples", ids, "--format", "json"});
  ASSERT_TRUE(samples.is_object()) << samples.dump();
  EXPECT_FALSE(samples["samples"].empty()) << "no memory sample taken during the run: " << samples.dump();
  EXPECT_EQ(RanksOf(agent->pid()), 0);
}

TEST_F(ServiceFinetuneTest, AKilledRankFailsTheAttemptAndTheRetryResumes) {
  auto daemon = StartDaemon();
  auto agent = StartAgent("node-a", 2);
  const int steps = 30;
  const std::string ckpt = dir_ + "/ckpt";
  const auto collective_timeout = 5000ms;
  nlohmann::json submitted =
      SubmitFinetune(steps, {"--save-to", ckpt, "--save-every", "3", "--collective-timeout-ms",
                             std::to_string(collective_timeout.count()), "--max-attempts", "2"});
  ASSERT_TRUE(submitted.is_object()) << daemon->log() << agent->log();
  const int64_t id = submitted["id"].get<int64_t>();
  const std::string ids = std::to_string(id);

  // Once the first checkpoint is complete and both ranks still run, SIGKILL one of them.
  std::vector<pid_t> ranks;
  const auto wait_end = Clock::now() + 180s;
  while (Clock::now() < wait_end) {
    ranks = RankPids(agent->pid());
    if (ranks.size() == 2 && std::filesystem::exists(ckpt + "/latest")) break;
    std::this_thread::sleep_for(20ms);
  }
  ASSERT_EQ(ranks.size(), 2u) << daemon->log() << agent->log();
  ASSERT_TRUE(std::filesystem::exists(ckpt + "/latest")) << agent->log();
  const pid_t victim = ranks[1], survivor = ranks[0];
  ASSERT_EQ(::kill(victim, SIGKILL), 0);
  const auto killed_at = Clock::now();

  // The attempt fails cleanly: the other rank is stopped within the collective timeout (plus a
  // margin), and none of the first attempt's ranks is left.
  while ((Running(survivor) || Running(victim)) && Clock::now() < killed_at + collective_timeout + 10s) {
    std::this_thread::sleep_for(20ms);
  }
  const auto stopped_in = Clock::now() - killed_at;
  EXPECT_FALSE(Running(survivor)) << "the surviving rank still runs " << agent->log();
  EXPECT_FALSE(Running(victim));
  EXPECT_LT(stopped_in, collective_timeout + 5s);
  for (pid_t pid : RankPids(agent->pid())) {
    EXPECT_NE(pid, survivor);
    EXPECT_NE(pid, victim);
  }

  // The retry resumes from the last checkpoint and finishes.
  ASSERT_TRUE(WaitForState(id, "SUCCEEDED", 300s)) << Show(id).dump() << daemon->log() << agent->log();
  nlohmann::json job = Show(id);
  EXPECT_EQ(job["attempts"], 1) << job.dump();
  nlohmann::json shown = Json({"result", ids, "--output", "json"});
  ASSERT_TRUE(shown.is_object());
  const nlohmann::json result = shown["result"];
  EXPECT_GT(result["start_step"].get<int64_t>(), 0) << result.dump();
  EXPECT_EQ(result["start_step"].get<int64_t>() % 3, 0) << result.dump();
  std::printf("ranks stopped %lld ms after the SIGKILL; the retry resumed from step %lld\n",
              static_cast<long long>(std::chrono::duration_cast<std::chrono::milliseconds>(stopped_in).count()),
              static_cast<long long>(result["start_step"].get<int64_t>()));
  EXPECT_EQ(result["steps"], steps);
  EXPECT_EQ(result["memory"]["ranks"].size(), 2u);
  EXPECT_EQ(TrainSteps(id), Range(1, steps)) << "the stored losses cover every step once";

  // The first attempt's failure, in the job's history, names the killed rank.
  const std::string history = Sql("SELECT from_state, to_state, message FROM job_events WHERE job_id = " + ids);
  EXPECT_NE(history.find("killed by signal 9"), std::string::npos) << history;
  EXPECT_EQ(history.find("no longer runs it"), std::string::npos) << "the retry was handed out once: " << history;
  EXPECT_EQ(RanksOf(agent->pid()), 0);
}

}  // namespace
}  // namespace fuji::testing
