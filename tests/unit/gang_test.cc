// Tests of the fine-tuning gang with real child processes: /bin/sh scripts stand in for fuji-rank's
// side of the protocol (one request line in, events on fd 3), then a gang of the real fuji-rank
// when it is built.
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <optional>
#include <set>
#include <thread>

#include <gtest/gtest.h>

#include "worker/launcher/finetune_prepare.h"
#include "worker/launcher/gang.h"

namespace fuji::launch {
namespace {

using std::chrono::milliseconds;
using Clock = std::chrono::steady_clock;

// Writes an executable script whose $r is the rank of the request it reads.
std::string Script(const std::string& name, const std::string& body) {
  const std::string dir = std::filesystem::temp_directory_path() / ("fuji-gang-test-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  const std::string path = dir + "/" + name;
  std::ofstream(path) << "#!/bin/sh\nread req\nr=$(echo \"$req\" | sed 's/.*\"rank\":\\([0-9]*\\).*/\\1/')\n" << body << "\n";
  ::chmod(path.c_str(), 0755);
  return path;
}

FinetuneSpec Spec(int ranks) {
  FinetuneSpec s;
  s.model = "/m";
  s.data = "/d";
  s.ranks = ranks;
  return s;
}

bool Alive(pid_t pid) { return ::kill(pid, 0) == 0; }

struct Outcome {
  Result<nlohmann::json> result = Internal("not run");
  std::vector<GangOutput> outputs;
  double seconds = 0;
};

Outcome RunGang(Gang& gang) {
  Outcome run;
  const auto begin = Clock::now();
  run.result = gang.Run([&](const GangOutput& o) { run.outputs.push_back(o); });
  run.seconds = std::chrono::duration<double>(Clock::now() - begin).count();
  return run;
}

TEST(GangTest, SendsEachRankItsRequestAndMergesResults) {
  GangOptions o;
  o.executable = Script("ok.sh", R"(echo "$req" >&2
echo '{"event":"started","op":"finetune"}' >&3
echo "{\"event\":\"result\",\"result\":{\"rank\":$r,\"losses\":[{\"step\":1,\"loss\":2.5}],\"tokens_per_s\":10,\"steps_done\":1,\"timings\":{\"train_ms\":$r},\"memory\":{\"peak_rss_bytes\":$r},\"comm\":{\"bytes_sent\":$r},\"zero\":2,\"offload\":\"none\",\"precision\":\"fp32\"}}" >&3)");
  o.rank_env = [](int rank) { return std::map<std::string, std::string>{{"FUJI_GANG_TEST", std::to_string(rank)}}; };
  o.corpus_tokens = 123456;
  Gang gang(Spec(3), o);
  Outcome run = RunGang(gang);
  ASSERT_TRUE(run.result.ok()) << run.result.status().ToString();
  const nlohmann::json& j = *run.result;
  EXPECT_EQ(j["ranks"], 3);
  EXPECT_EQ(j["corpus_tokens"], 123456);
  EXPECT_EQ(j["losses"], nlohmann::json::parse(R"([{"step":1,"loss":2.5}])"));
  EXPECT_EQ(j["steps"], 1);
  EXPECT_EQ(j["zero"], 2);
  ASSERT_EQ(j["memory"]["ranks"].size(), 3u);
  for (int r = 0; r < 3; ++r) {
    EXPECT_EQ(j["memory"]["ranks"][r]["peak_rss_bytes"], r);
    EXPECT_EQ(j["timings_per_rank"][r]["train_ms"], r);
    EXPECT_EQ(j["comm"]["ranks"][r]["bytes_sent"], r);
  }
  // Each rank logged its own request: same spec, its rank, one rendezvous that is gone now.
  std::set<int> ranks;
  std::set<std::string> rendezvous;
  for (const auto& out : run.outputs) {
    if (out.output.kind != ChildOutput::Kind::kLog) continue;
    auto req = nlohmann::json::parse(out.output.line);
    EXPECT_EQ(req["op"], "finetune");
    EXPECT_EQ(req["ranks"], 3);
    EXPECT_EQ(req["rank"], out.rank);
    ranks.insert(out.rank);
    rendezvous.insert(req["rendezvous"].get<std::string>());
  }
  EXPECT_EQ(ranks, (std::set<int>{0, 1, 2}));
  ASSERT_EQ(rendezvous.size(), 1u);
  const std::string rv = *rendezvous.begin();
  ASSERT_EQ(rv.rfind("file:/", 0), 0u) << rv;
  EXPECT_FALSE(std::filesystem::exists(std::filesystem::path(rv.substr(5)).parent_path()));
  EXPECT_TRUE(gang.pids().empty());
}

// One agent's part of a gang across agents: ranks 2-3 of 4 at the given tcp: rendezvous; outputs,
// failures and the merged result name global ranks.
TEST(GangTest, OneAgentsPartOfAGangAcrossAgentsRunsItsGlobalRanks) {
  GangOptions o;
  o.executable = Script("part.sh", R"(echo "$req" >&2
echo "{\"event\":\"result\",\"result\":{\"losses\":[],\"steps_done\":1,\"memory\":{\"peak_rss_bytes\":$r}}}" >&3)");
  o.world_size = 4;
  o.first_rank = 2;
  o.local_ranks = 2;
  o.rendezvous = "tcp:10.0.0.1:29400";
  std::set<int> env_ranks;
  o.rank_env = [&](int rank) {
    env_ranks.insert(rank);
    return std::map<std::string, std::string>{};
  };
  Gang gang(Spec(4), o);
  Outcome run = RunGang(gang);
  ASSERT_TRUE(run.result.ok()) << run.result.status().ToString();
  EXPECT_EQ(env_ranks, (std::set<int>{2, 3}));
  std::set<int> ranks;
  for (const auto& out : run.outputs) {
    if (out.output.kind != ChildOutput::Kind::kLog) continue;
    auto req = nlohmann::json::parse(out.output.line);
    EXPECT_EQ(req["ranks"], 4);
    EXPECT_EQ(req["rank"], out.rank);
    EXPECT_EQ(req["rendezvous"], "tcp:10.0.0.1:29400");
    ranks.insert(out.rank);
  }
  EXPECT_EQ(ranks, (std::set<int>{2, 3}));
  const nlohmann::json& j = *run.result;
  EXPECT_EQ(j["ranks"], 2);
  EXPECT_EQ(j["first_rank"], 2);
  EXPECT_EQ(j["world_size"], 4);
  EXPECT_EQ(j["memory"]["ranks"][0]["peak_rss_bytes"], 2);
  EXPECT_EQ(j["memory"]["ranks"][1]["peak_rss_bytes"], 3);

  // A failure names the global rank.
  o.executable = Script("part-fail.sh", R"(if [ "$r" = 3 ]; then
  echo '{"event":"error","code":"INVALID_ARGUMENT","reason":"bad_input","message":"no"}' >&3; exit 1
fi
exec sleep 60)");
  Gang failing(Spec(4), o);
  Outcome failed = RunGang(failing);
  ASSERT_FALSE(failed.result.ok());
  EXPECT_EQ(failed.result.status().message(), "rank 3: no");
  ASSERT_TRUE(failing.failure());
  EXPECT_EQ(failing.failure()->rank, 3);
}

TEST(GangTest, APartOfAGangAcrossAgentsNeedsATcpRendezvousAndRanksWithinTheGang) {
  GangOptions o;
  o.executable = Script("never.sh", "exit 0");
  o.world_size = 4;
  o.first_rank = 3;
  o.local_ranks = 2;
  o.rendezvous = "tcp:10.0.0.1:29400";
  Gang outside(Spec(4), o);
  Outcome run = RunGang(outside);
  EXPECT_EQ(run.result.status().code(), StatusCode::kInvalidArgument) << run.result.status().ToString();
  o.first_rank = 2;
  o.rendezvous = "file:/tmp/x";
  Gang file(Spec(4), o);
  run = RunGang(file);
  EXPECT_EQ(run.result.status().code(), StatusCode::kInvalidArgument) << run.result.status().ToString();
}

// Every rank of this machine lost a peer elsewhere (the link went down): each reports its own
// collective error and exits; none of them is named as the one that died.
TEST(GangTest, RanksThatReportTheirOwnCollectiveErrorAreNotNamedAsDead) {
  GangOptions o;
  o.executable = Script("lost.sh", R"(sleep 0.2
echo '{"event":"error","code":"UNAVAILABLE","reason":"collective_timeout","message":"all-gather timed out"}' >&3
exit 1)");
  Gang gang(Spec(2), o);
  Outcome run = RunGang(gang);
  ASSERT_FALSE(run.result.ok());
  EXPECT_EQ(run.result.status().code(), StatusCode::kUnavailable) << run.result.status().ToString();
  ASSERT_TRUE(gang.failure());
  EXPECT_EQ(gang.failure()->kind, GangFailure::Kind::kRankError);
  EXPECT_NE(run.result.status().message().find("all-gather timed out"), std::string::npos);
}

TEST(GangTest, ARanksErrorEventStopsTheOthers) {
  GangOptions o;
  // Rank 1 fails after the others have surely started, so that the watcher sees all three pids.
  o.executable = Script("error.sh", R"(if [ "$r" = 1 ]; then
  sleep 0.5
  echo '{"event":"error","code":"INVALID_ARGUMENT","reason":"bad_input","message":"seq_len too long"}' >&3; exit 1
fi
exec sleep 60)");
  o.terminate_grace = milliseconds(2000);
  Gang gang(Spec(3), o);
  std::vector<pid_t> pids;
  std::thread watch([&] {
    for (int i = 0; i < 200 && pids.size() < 3; ++i) {
      pids = gang.pids();
      std::this_thread::sleep_for(milliseconds(5));
    }
  });
  Outcome run = RunGang(gang);
  watch.join();
  ASSERT_FALSE(run.result.ok());
  EXPECT_EQ(run.result.status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(run.result.status().message(), "rank 1: seq_len too long");
  ASSERT_TRUE(gang.failure());
  EXPECT_EQ(gang.failure()->rank, 1);
  EXPECT_EQ(gang.failure()->reason, FailureKind::kBadInput);
  EXPECT_LT(run.seconds, 10);
  ASSERT_EQ(pids.size(), 3u);
  for (pid_t pid : pids) EXPECT_FALSE(Alive(pid)) << pid;
}

// The gang failed naming `rank`, killed by SIGKILL, as the rank that failed.
void ExpectKilledRankNamed(const Gang& gang, const Outcome& run, int rank) {
  ASSERT_FALSE(run.result.ok());
  ASSERT_TRUE(gang.failure());
  EXPECT_EQ(gang.failure()->kind, GangFailure::Kind::kRankExit);
  EXPECT_EQ(gang.failure()->rank, rank);
  EXPECT_EQ(gang.failure()->exit.signal, SIGKILL);
  EXPECT_NE(run.result.status().message().find("rank " + std::to_string(rank) + " killed by signal 9"),
            std::string::npos)
      << run.result.status().message();
}

TEST(GangTest, ARankKilledBySigkillStopsTheOthersAndIsNamed) {
  GangOptions o;
  // Rank 0 plays a peer whose collective fails after the death: the dead rank is still named.
  o.executable = Script("kill.sh", R"(if [ "$r" = 2 ]; then echo "dying" >&2; kill -9 $$; fi
if [ "$r" = 0 ]; then sleep 0.5
  echo '{"event":"error","code":"UNAVAILABLE","reason":"collective_timeout","message":"peer gone"}' >&3; exit 1
fi
exec sleep 60)");
  Gang gang(Spec(3), o);
  Outcome run = RunGang(gang);
  ASSERT_NO_FATAL_FAILURE(ExpectKilledRankNamed(gang, run, 2));
  EXPECT_EQ(gang.failure()->last_stderr, "dying");
  EXPECT_LT(run.seconds, 10);
}

TEST(GangTest, ADeadRankIsNamedWhenItsExitComesAfterThePeersError) {
  GangOptions o;
  // Rank 0's collective fails at once; the exit of rank 1, whose death caused it, comes later.
  o.executable = Script("late.sh", R"(if [ "$r" = 1 ]; then sleep 0.1; kill -9 $$; fi
echo '{"event":"error","code":"UNAVAILABLE","reason":"collective_timeout","message":"peer gone"}' >&3; exit 1)");
  Gang gang(Spec(2), o);
  Outcome run = RunGang(gang);
  ASSERT_NO_FATAL_FAILURE(ExpectKilledRankNamed(gang, run, 1));
  EXPECT_NE(run.result.status().message().find("rank 0: peer gone"), std::string::npos)
      << run.result.status().message();
}

TEST(GangTest, ARankExitingWithoutAResultFails) {
  GangOptions o;
  o.executable = Script("quiet.sh", "exit 0");
  Gang gang(Spec(2), o);
  Outcome run = RunGang(gang);
  ASSERT_FALSE(run.result.ok());
  EXPECT_NE(run.result.status().message().find("exited without a result"), std::string::npos);
}

TEST(GangTest, StopFromAnotherThreadCancels) {
  GangOptions o;
  o.executable = Script("sleep.sh", "exec sleep 60");
  o.terminate_grace = milliseconds(1000);
  Gang gang(Spec(2), o);
  std::thread stopper([&] {
    std::this_thread::sleep_for(milliseconds(300));
    gang.Stop();
  });
  Outcome run = RunGang(gang);
  stopper.join();
  EXPECT_EQ(run.result.status().code(), StatusCode::kCancelled);
  EXPECT_LT(run.seconds, 5);
}

TEST(GangTest, DeadlineStopsTheRanks) {
  GangOptions o;
  o.executable = Script("sleep2.sh", "exec sleep 60");
  o.deadline = milliseconds(300);
  Gang gang(Spec(2), o);
  Outcome run = RunGang(gang);
  ASSERT_FALSE(run.result.ok());
  EXPECT_EQ(gang.failure()->kind, GangFailure::Kind::kDeadline);
  EXPECT_LT(run.seconds, 5);
}

// A lone rank (an inference job): its request as given plus op and id, with no rank, ranks or
// rendezvous; its result is the gang's.
TEST(GangTest, ALoneRankGetsItsRequestAsGivenAndItsResultIsTheGangs) {
  GangOptions o;
  o.executable = Script("lone.sh", R"(echo "$req" >&2
echo '{"event":"result","result":{"output_ids":[1,2]}}' >&3)");
  o.op = "infer";
  o.id = "7";
  Gang gang(nlohmann::json{{"prompt", "hi"}}, o);
  EXPECT_FALSE(gang.has_peers());
  std::vector<pid_t> started;
  std::vector<std::string> logs;
  GangCallbacks callbacks;
  callbacks.started = [&](const std::vector<pid_t>& pids) { started = pids; };
  callbacks.output = [&](const GangOutput& out) {
    if (out.output.kind == ChildOutput::Kind::kLog) logs.push_back(out.output.line);
  };
  auto result = gang.Run(callbacks);
  ASSERT_TRUE(result.ok()) << result.status().ToString();
  EXPECT_EQ(*result, nlohmann::json::parse(R"({"output_ids":[1,2]})"));
  EXPECT_EQ(started.size(), 1u);
  ASSERT_EQ(logs.size(), 1u);
  EXPECT_EQ(nlohmann::json::parse(logs[0]), nlohmann::json::parse(R"({"id":"7","op":"infer","prompt":"hi"})"));
}

// A lone rank's error is in its own words, and with no peers to stop it is read to its end: what
// it says after the error arrives and its own exit is kept.
TEST(GangTest, ALoneRanksErrorIsItsOwnWordsAndItIsReadToItsEnd) {
  GangOptions o;
  o.executable = Script("lone_error.sh", R"(echo '{"event":"error","code":"NOT_FOUND","reason":"bad_input","message":"no model at /m"}' >&3
sleep 0.3; echo "after the error" >&2; exit 3)");
  o.op = "infer";
  Gang gang(nlohmann::json::object(), o);
  Outcome run = RunGang(gang);
  ASSERT_FALSE(run.result.ok());
  EXPECT_EQ(run.result.status().code(), StatusCode::kInvalidArgument);
  ASSERT_TRUE(gang.failure());
  EXPECT_EQ(gang.failure()->kind, GangFailure::Kind::kRankError);
  EXPECT_EQ(gang.failure()->reason, FailureKind::kBadInput);
  EXPECT_EQ(gang.failure()->message, "no model at /m");
  EXPECT_EQ(gang.failure()->exit.exit_code, 3);
  EXPECT_EQ(gang.failure()->last_stderr, "after the error");
}

// A rank's result is its own words: one that is no object, or whose fields have other types, merges
// as absent fields instead of throwing out of Gang::Run (and the agent's thread).
TEST(GangTest, MergingResultsOfTheWrongShapeReadsThemAsAbsent) {
  const nlohmann::json odd = nlohmann::json::parse(R"({"tokens_per_s":"fast","tokens":1.5,"device":7,"losses":[1]})");
  const nlohmann::json merged = MergeRankResults({odd, nlohmann::json(1)});
  EXPECT_EQ(merged["tokens_per_s"], 0.0);
  EXPECT_EQ(merged["tokens"], 0);
  EXPECT_EQ(merged["device"], "");
  EXPECT_EQ(merged["losses"], nlohmann::json::array({1}));
  EXPECT_EQ(merged["ranks"], 2);
  EXPECT_EQ(MergeRankResults({nlohmann::json("result")})["memory"]["ranks"][0], nlohmann::json::object());
}

// One request to a single fuji-rank process; its result event's "result", or the error event's
// message.
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

// fuji-rank, when it is built (FUJI_WITH_TORCH), with a tiny random model and a text file in a
// scratch directory, and a spec prepared as the launcher prepares it (the token cache made once).
class RealRankTest : public ::testing::Test {
 protected:
  void SetUp() override {
    rank_ = std::string(FUJI_BINARY_DIR) + "/bin/fuji-rank";
    if (::access(rank_.c_str(), X_OK) != 0) GTEST_SKIP() << "fuji-rank not built (FUJI_WITH_TORCH=OFF)";
    dir_ = std::filesystem::temp_directory_path() / ("fuji-gang-real-" + std::to_string(::getpid()));
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
    auto init = RunRankOnce(rank_, {{"op", "init"}, {"id", "init"}, {"arch", "tiny"}, {"seed", 1},
                                    {"out", (dir_ / "tiny").string()}, {"vocab_dir", DefaultVocabDir()}});
    ASSERT_TRUE(init.ok()) << init.status().ToString();
    std::ofstream text(dir_ / "text.txt");
    for (int i = 0; i < 300; ++i) text << "Mt. Fuji, " << i << " metres of it, is the highest mountain in Japan.\n";
  }
  void TearDown() override {
    if (!dir_.empty()) std::filesystem::remove_all(dir_);
  }

  // 2 ranks, seq_len 32, micro-batch 2, one thread each.
  FinetuneSpec Prepared(int64_t steps) {
    FinetuneSpec spec;
    spec.model = (dir_ / "tiny").string();
    spec.data = (dir_ / "text.txt").string();
    spec.cache_dir = (dir_ / "cache").string();
    spec.ranks = 2;
    spec.seq_len = 32;
    spec.micro_batch = 2;
    spec.steps = steps;
    spec.threads = 1;
    PrepareOptions prepare;
    prepare.max_ranks = 2;
    auto prepared = PrepareFinetune(spec, prepare);
    EXPECT_TRUE(prepared.ok()) << prepared.status().ToString();
    return prepared.ok() ? prepared->spec : spec;
  }

  std::string rank_;
  std::filesystem::path dir_;
};

// A gang of 2 real ranks fine-tunes the tiny model for 3 steps over Gloo.
TEST_F(RealRankTest, TwoRanksFinetuneATinyModel) {
  GangOptions o;
  o.executable = rank_;
  Gang gang(Prepared(3), o);
  Outcome run = RunGang(gang);
  ASSERT_TRUE(run.result.ok()) << run.result.status().ToString();
  const nlohmann::json& j = *run.result;
  EXPECT_EQ(j["ranks"], 2);
  EXPECT_EQ(j["steps"], 3);
  EXPECT_EQ(j["start_step"], 0);
  ASSERT_EQ(j["losses"].size(), 3u) << j.dump();
  for (const auto& l : j["losses"]) EXPECT_GT(l["loss"].get<double>(), 0) << l.dump();
  ASSERT_EQ(j["memory"]["ranks"].size(), 2u) << j.dump();
  for (const auto& m : j["memory"]["ranks"]) EXPECT_GT(m["peak_rss_bytes"].get<double>(), 0) << m.dump();
  EXPECT_EQ(j["timings_per_rank"].size(), 2u);
  // Both ranks started, and only rank 0 reported losses.
  std::set<int> started, losses;
  for (const auto& out : run.outputs) {
    if (out.output.kind != ChildOutput::Kind::kEvent) continue;
    const std::string event = out.output.event.value("event", "");
    if (event == "started") started.insert(out.rank);
    if (event == "loss") losses.insert(out.rank);
  }
  EXPECT_EQ(started, (std::set<int>{0, 1}));
  EXPECT_EQ(losses, (std::set<int>{0}));
  EXPECT_TRUE(gang.pids().empty());
}

// Without a gang to stop it, a rank whose peer is SIGKILLed mid-training does not hang: its next
// collective fails (or times out), and it exits non-zero after an error event.
TEST_F(RealRankTest, ARankWhosePeerIsKilledFailsWithinTheCollectiveTimeout) {
  FinetuneSpec spec = Prepared(1000);
  spec.collective_timeout_ms = 3000;
  std::vector<std::unique_ptr<ChildProcess>> ranks;
  for (int r = 0; r < 2; ++r) {
    auto proc = ChildProcess::Spawn({rank_, {}, {}});
    ASSERT_TRUE(proc.ok()) << proc.status().ToString();
    nlohmann::json request = spec.ToJson();
    request["op"] = "finetune";
    request["id"] = "peer";
    request["rank"] = r;
    request["rendezvous"] = "file:" + (dir_ / "store").string();
    ASSERT_TRUE((*proc)->Send(request).ok());
    (*proc)->CloseInput();
    ranks.push_back(std::move(proc).value());
  }
  // Rank 0's events until its first train loss: both ranks are in the training loop then.
  auto next_event = [&](const char* name, Clock::time_point deadline) -> std::optional<nlohmann::json> {
    while (Clock::now() < deadline) {
      auto next = ranks[0]->Next(milliseconds(200));
      if (!next.ok()) continue;  // nothing yet
      if (!next->has_value()) return std::nullopt;
      if ((*next)->kind == ChildOutput::Kind::kEvent && (*next)->event.value("event", "") == name) return (*next)->event;
    }
    return std::nullopt;
  };
  ASSERT_TRUE(next_event("loss", Clock::now() + std::chrono::seconds(120))) << "rank 0 never reported a loss";
  ASSERT_EQ(::kill(ranks[1]->pid(), SIGKILL), 0);
  const auto killed_at = Clock::now();
  EXPECT_EQ(ranks[1]->Wait().signal, SIGKILL);
  auto error = next_event("error", killed_at + milliseconds(spec.collective_timeout_ms) + std::chrono::seconds(10));
  ASSERT_TRUE(error) << "rank 0 reported no error after its peer died";
  EXPECT_EQ(error->value("reason", ""), "collective_timeout") << error->dump();
  const ExitInfo exit = ranks[0]->Wait();
  const double seconds = std::chrono::duration<double>(Clock::now() - killed_at).count();
  EXPECT_FALSE(exit.Succeeded()) << exit.Describe();
  EXPECT_EQ(exit.signal, 0) << "it exited by itself: " << exit.Describe();
  EXPECT_LT(seconds, spec.collective_timeout_ms / 1000.0 + 5) << error->dump();
  std::printf("rank 0 exited %.2f s after its peer's SIGKILL: %s (%s)\n", seconds,
              error->value("message", "").c_str(), error->value("reason", "").c_str());
}

}  // namespace
}  // namespace fuji::launch
