// Fine-tuning through the service, end to end: real fujid, a fuji-agent with two CPU devices and
// the gang of fuji-rank processes it runs, driven by the real fuji CLI. A 2-rank fine-tune of a
// tiny random model stores its losses, per-rank timings and samples; a rank killed with SIGKILL
// fails the attempt cleanly (the other rank stopped within the collective timeout) and the retry
// resumes from the last checkpoint.
#include <signal.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
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
    MakeRootWithTextAndTinyModel("service_finetune_test");
  }
  static void TearDownTestSuite() { RemoveRoot(); }


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
  nlohmann::json j = SubmitTinyFinetune(steps, {"--wait"});
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

// The time to train from what a job measured: `fuji estimate --job` of a finished fine-tune (the
// median rate of its steps, the corpus size from its result) and of a running one (its latest
// progress, which `fuji show` turns into a "time to train" line), and its refusals.
TEST_F(ServiceFinetuneTest, EstimateFromAJobsMeasuredRateAndCorpus) {
  auto daemon = StartDaemon();
  auto agent = StartAgent("node-a", 2);
  const std::string data = root_ + "/text/english.txt";

  // The corpus counted as `fuji estimate --corpus` counts it (its token cache kept in the test's dir).
  const char* xdg = std::getenv("XDG_CACHE_HOME");
  const std::string saved_xdg = xdg != nullptr ? xdg : "";
  ASSERT_EQ(::setenv("XDG_CACHE_HOME", (dir_ + "/xdg").c_str(), 1), 0);
  nlohmann::json counted = Json({"estimate", "--tokens-per-s", "1", "--corpus", data, "--output", "json"});
  if (xdg != nullptr) ::setenv("XDG_CACHE_HOME", saved_xdg.c_str(), 1);
  else ::unsetenv("XDG_CACHE_HOME");
  ASSERT_TRUE(counted.is_object());
  const double corpus = counted["corpus_tokens"].get<double>();
  ASSERT_GT(corpus, 0);

  // A finished job: its result carries the corpus size, its stored steps the rate.
  nlohmann::json done = SubmitTinyFinetune(6, {"--wait"});
  ASSERT_TRUE(done.is_object()) << daemon->log() << agent->log();
  ASSERT_EQ(done["state"], "SUCCEEDED") << done.dump() << agent->log();
  const std::string done_id = std::to_string(done["id"].get<int64_t>());
  EXPECT_EQ(done["result"]["corpus_tokens"].get<double>(), corpus) << done["result"].dump();
  nlohmann::json e = Json({"estimate", "--job", done_id, "--epochs", "2", "--output", "json"});
  ASSERT_TRUE(e.is_object());
  EXPECT_EQ(e["corpus_tokens"].get<double>(), corpus) << e.dump();
  EXPECT_EQ(e["job"]["corpus_from"], "result") << e.dump();
  EXPECT_EQ(e["job"]["rate_from"].get<std::string>().rfind("the median of ", 0), 0u) << e.dump();
  EXPECT_EQ(e["gpus"], 2) << "the job's devices";
  EXPECT_EQ(e["job"]["gpus"], 2);
  const double rate = e["tokens_per_s"].get<double>();
  ASSERT_GT(rate, 0) << e.dump();
  EXPECT_DOUBLE_EQ(rate, e["job"]["tokens_per_s"].get<double>()) << "same devices, same rate";
  EXPECT_NEAR(e["seconds"].get<double>(), 2 * corpus / rate, 1e-6 * 2 * corpus / rate) << e.dump();
  // On 4 GPUs the rate scales with them: half the time.
  nlohmann::json four = Json({"estimate", "--job", done_id, "--epochs", "2", "--gpus", "4", "--output", "json"});
  ASSERT_TRUE(four.is_object());
  EXPECT_NEAR(four["seconds"].get<double>(), corpus / rate, 1e-6 * corpus / rate) << four.dump();
  CliResult text = Fuji({"estimate", "--job", done_id}, address_);
  EXPECT_EQ(text.exit_code, 0) << text.err;
  EXPECT_NE(text.out.find("job " + done_id + ": "), std::string::npos) << text.out;
  EXPECT_NE(text.out.find("on 2 GPUs: "), std::string::npos) << text.out;

  // A running job: `fuji show` has the time to train one epoch at the rate of its latest progress.
  nlohmann::json running = SubmitTinyFinetune(100000, {});
  ASSERT_TRUE(running.is_object());
  const std::string running_id = std::to_string(running["id"].get<int64_t>());
  nlohmann::json shown;
  const auto until = Clock::now() + 60s;
  while (Clock::now() < until) {
    shown = Show(running["id"].get<int64_t>());
    const std::string state = shown.is_object() ? shown.value("state", "") : "";
    if (shown.contains("estimate") || state == "SUCCEEDED" || state == "FAILED" || state == "CANCELLED") break;
    std::this_thread::sleep_for(50ms);
  }
  ASSERT_TRUE(shown.contains("estimate")) << shown.dump() << agent->log();
  const nlohmann::json& est = shown["estimate"];
  EXPECT_EQ(est["corpus_tokens"].get<double>(), corpus) << est.dump();
  EXPECT_EQ(est["epochs"], 1);
  EXPECT_EQ(est["ranks"], 2);
  EXPECT_GT(est["tokens_per_s"].get<double>(), 0);
  EXPECT_NEAR(est["seconds"].get<double>(), corpus / est["tokens_per_s"].get<double>(), 1e-6 * est["seconds"].get<double>());
  CliResult show_text = Fuji({"show", running_id}, address_);
  EXPECT_NE(show_text.out.find("time to train: 1 epoch of "), std::string::npos) << show_text.out;
  nlohmann::json live = Json({"estimate", "--job", running_id, "--output", "json"});
  ASSERT_TRUE(live.is_object());
  EXPECT_EQ(live["job"]["rate_from"], "its latest progress") << live.dump();
  EXPECT_EQ(live["job"]["corpus_from"], "progress") << live.dump();
  EXPECT_EQ(live["corpus_tokens"].get<double>(), corpus);

  // Refusals, each one line: a job that has not finished a step (queued behind the running one),
  // an infer job, an unknown job, and --job with a rate or corpus of its own.
  auto refused = [&](const std::vector<std::string>& args, const std::string& message) {
    CliResult r = Fuji(args, address_);
    EXPECT_NE(r.exit_code, 0) << r.out;
    EXPECT_NE(r.err.find(message), std::string::npos) << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  };
  nlohmann::json queued = SubmitTinyFinetune(6, {});
  ASSERT_TRUE(queued.is_object());
  const std::string queued_id = std::to_string(queued["id"].get<int64_t>());
  refused({"estimate", "--job", queued_id}, "job " + queued_id + " has no measured tokens/s yet (it has not finished a step)");
  nlohmann::json infer = Json({"submit", "infer", "--model", root_ + "/tiny", "--prompt", "hi", "--max-new-tokens", "2",
                               "--output", "json"});
  ASSERT_TRUE(infer.is_object());
  const std::string infer_id = std::to_string(infer["id"].get<int64_t>());
  refused({"estimate", "--job", infer_id}, "job " + infer_id + " is an infer job");
  refused({"estimate", "--job", "99999"}, "job 99999 not found");
  refused({"estimate", "--job", done_id, "--tokens-per-s", "1000"}, "--job takes the rate and corpus from the job");
  refused({"estimate", "--job", done_id, "--corpus", data}, "--job takes the rate and corpus from the job");
  refused({"estimate", "--corpus-tokens", "1000"}, "give --tokens-per-s");

  for (const std::string& id : {queued_id, running_id}) Json({"cancel", id});
  EXPECT_TRUE(WaitForState(running["id"].get<int64_t>(), "CANCELLED", 60s)) << agent->log();
}

TEST_F(ServiceFinetuneTest, AKilledRankFailsTheAttemptAndTheRetryResumes) {
  auto daemon = StartDaemon();
  auto agent = StartAgent("node-a", 2);
  const int steps = 30;
  const std::string ckpt = dir_ + "/ckpt";
  const auto collective_timeout = 5000ms;
  nlohmann::json submitted =
      SubmitTinyFinetune(steps, {"--save-to", ckpt, "--save-every", "3", "--collective-timeout-ms",
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
