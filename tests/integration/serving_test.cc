// Serving through fujid, end to end with real processes: a model stays loaded in its agent's rank
// after an inference job (--keep-warm), tokens stream to watchers while they are generated, a
// serving job pins a model, and fuji workers shows what is warm.
#include <sys/stat.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "fuji/v1/jobs.grpc.pb.h"
#include "lib/rpc/connection.h"
#include "tests/integration/process_util.h"

namespace fuji::testing {
namespace {

using namespace std::chrono_literals;

class ServingTest : public ServiceTestBase {
 protected:
  static void SetUpTestSuite() {
    MakeRoot("serving_test");
    ASSERT_EQ(Fuji({"model", "init", "--arch", "tiny", "--out", root_ + "/tiny"}).exit_code, 0);
    const std::string corpora = std::string(FUJI_SOURCE_DIR) + "/tests/reference/make_corpora.sh";
    ASSERT_EQ(std::system(("sh " + Quote(corpora) + " " + Quote(root_ + "/text") + " >/dev/null").c_str()), 0);
    // Slow enough that a stream is seen before the end: 8 layers of 256.
    ASSERT_EQ(Fuji({"model", "init", "--arch", "tiny", "--layers", "8", "--width", "256", "--heads", "4",
                    "--positions", "1024", "--out", root_ + "/slow"})
                  .exit_code,
              0);
  }
  static void TearDownTestSuite() { RemoveRoot(); }

  nlohmann::json InferWait(const std::string& model, int tokens) {
    CliResult r = Fuji({"submit", "infer", "--model", model, "--prompt", "Mt. Fuji is", "--max-new-tokens",
                        std::to_string(tokens), "--ignore-eos", "--wait", "--output", "json"},
                       address_);
    EXPECT_EQ(r.exit_code, 0) << r.err;
    return nlohmann::json::parse(r.out, nullptr, false);
  }

  // The warm models of the first worker, as fuji workers reports them.
  nlohmann::json Warm() {
    nlohmann::json workers = Json({"workers", "--output", "json"});
    if (!workers.is_object() || workers["workers"].empty()) return nlohmann::json::array();
    return workers["workers"][0]["warm"];
  }

  // Waits until `pred(Warm())` holds (heartbeats carry the warm list every few seconds).
  template <typename Pred>
  bool WaitForWarm(Pred pred, std::chrono::seconds within = 20s) {
    const auto until = std::chrono::steady_clock::now() + within;
    while (std::chrono::steady_clock::now() < until) {
      if (pred(Warm())) return true;
      std::this_thread::sleep_for(300ms);
    }
    return false;
  }
};

TEST_F(ServingTest, TheSecondRequestFindsTheModelLoaded) {
  auto daemon = StartDaemon();
  auto agent = StartAgent("node-a", 1);
  nlohmann::json first = InferWait(root_ + "/tiny", 8);
  ASSERT_EQ(first.value("state", ""), "SUCCEEDED") << first.dump() << agent->log();
  EXPECT_FALSE(first["result"]["model"]["resident"].get<bool>());
  nlohmann::json second = InferWait(root_ + "/tiny", 8);
  ASSERT_EQ(second.value("state", ""), "SUCCEEDED") << second.dump() << agent->log();
  EXPECT_TRUE(second["result"]["model"]["resident"].get<bool>()) << second.dump();
  EXPECT_EQ(second["result"]["output_ids"], first["result"]["output_ids"]);
  // fujid knows where it is warm: the model directory, its precision, the device, idle.
  ASSERT_TRUE(WaitForWarm([](const nlohmann::json& warm) {
    return warm.size() == 1 && warm[0].value("active", -1) == 0;
  })) << Warm().dump();
  const nlohmann::json w = Warm()[0];
  EXPECT_NE(w["model"].get<std::string>().find("/tiny"), std::string::npos) << w.dump();
  EXPECT_EQ(w["precision"], "fp32");
  EXPECT_EQ(w["device_index"], 0);
  CliResult table = Fuji({"workers"}, address_);
  EXPECT_NE(table.out.find("WARM MODEL"), std::string::npos) << table.out;
}

TEST_F(ServingTest, KeepWarmZeroLoadsForEveryRequest) {
  auto daemon = StartDaemon();
  auto agent = StartAgentWith("node-cold", 1, {"--allow-read", root_, "--keep-warm", "0"});
  for (int i = 0; i < 2; ++i) {
    nlohmann::json job = InferWait(root_ + "/tiny", 4);
    ASSERT_EQ(job.value("state", ""), "SUCCEEDED") << job.dump() << agent->log();
    EXPECT_FALSE(job["result"]["model"]["resident"].get<bool>()) << job.dump();
  }
  std::this_thread::sleep_for(4s);  // a heartbeat or more
  EXPECT_TRUE(Warm().empty()) << Warm().dump();
}

TEST_F(ServingTest, TokensStreamToWatchersWhileTheyAreGenerated) {
  auto daemon = StartDaemon();
  auto agent = StartAgent("node-s", 1);
  CliResult submitted = Fuji({"submit", "infer", "--model", root_ + "/slow", "--prompt", "Mt. Fuji is",
                              "--max-new-tokens", "400", "--ignore-eos", "--output", "json"},
                             address_);
  ASSERT_EQ(submitted.exit_code, 0) << submitted.err;
  const int64_t id = nlohmann::json::parse(submitted.out)["id"].get<int64_t>();

  auto channel = rpc::MakeChannel({address_, ca_, false}, grpc::ChannelArguments());
  ASSERT_TRUE(channel.ok());
  auto stub = v1::JobService::NewStub(*channel);
  grpc::ClientContext context;
  rpc::Authorize(&context, token_);
  context.set_deadline(std::chrono::system_clock::now() + 300s);
  v1::WatchJobRequest request;
  request.set_id(id);
  request.set_tokens(true);
  auto reader = stub->WatchJob(&context, request);
  v1::WatchEvent event;
  std::string text;
  int runs = 0, runs_before_end = 0;
  int64_t next = 0;
  bool ended = false;
  while (reader->Read(&event)) {
    if (event.what_case() == v1::WatchEvent::kTokens) {
      EXPECT_EQ(event.tokens().index(), next) << "runs come in order, each once";
      next += event.tokens().ids_size();
      text += event.tokens().text();
      ++runs;
      if (!ended) ++runs_before_end;
    } else if (event.what_case() == v1::WatchEvent::kState &&
               (event.state() == v1::SUCCEEDED || event.state() == v1::FAILED)) {
      ended = true;
    }
  }
  ASSERT_TRUE(reader->Finish().ok());
  nlohmann::json result = Json({"result", std::to_string(id), "--output", "json"});
  ASSERT_TRUE(result.is_object()) << agent->log();
  EXPECT_EQ(next, 400);
  EXPECT_EQ(text, result["result"]["text"].get<std::string>());
  // Streamed: many runs, all of them before the job's end.
  EXPECT_GT(runs, 5);
  EXPECT_EQ(runs_before_end, runs);

  // The CLI's stream prints the same text.
  CliResult streamed = Fuji({"submit", "infer", "--model", root_ + "/tiny", "--prompt", "Mt. Fuji is",
                             "--max-new-tokens", "24", "--ignore-eos", "--stream"},
                            address_);
  ASSERT_EQ(streamed.exit_code, 0) << streamed.err;
  EXPECT_NE(streamed.err.find("first token"), std::string::npos) << streamed.err;
}

TEST_F(ServingTest, AServingJobPinsItsModelUntilStopped) {
  auto daemon = StartDaemon();
  auto agent = StartAgentWith("node-pin", 1, {"--allow-read", root_, "--keep-warm", "0"});
  CliResult started = Fuji({"serve", "start", "--model", root_ + "/tiny"}, address_);
  ASSERT_EQ(started.exit_code, 0) << started.err;
  const std::string serving = started.out.substr(0, started.out.find('\n'));
  ASSERT_TRUE(WaitForWarm([&](const nlohmann::json& warm) {
    return warm.size() == 1 && std::to_string(warm[0].value("serving_job_id", 0)) == serving;
  })) << Warm().dump() << agent->log();
  // Even with --keep-warm 0, a request finds the pinned model loaded.
  nlohmann::json job = InferWait(root_ + "/tiny", 4);
  ASSERT_EQ(job.value("state", ""), "SUCCEEDED") << job.dump() << agent->log();
  EXPECT_TRUE(job["result"]["model"]["resident"].get<bool>()) << job.dump();
  CliResult list = Fuji({"serve", "list"}, address_);
  EXPECT_NE(list.out.find(serving), std::string::npos) << list.out;
  EXPECT_EQ(Show(std::stoll(serving)).value("state", ""), "RUNNING");
  ASSERT_EQ(Fuji({"serve", "stop", serving}, address_).exit_code, 0);
  EXPECT_TRUE(WaitForWarm([](const nlohmann::json& warm) { return warm.empty(); })) << Warm().dump();
  EXPECT_EQ(Show(std::stoll(serving)).value("state", ""), "CANCELLED");
}

TEST_F(ServingTest, ConcurrentRequestsShareOneRanksBatch) {
  auto daemon = StartDaemon();
  auto agent = StartAgent("node-b", 1);
  // The model warm first, then 12 requests at once (not --share: jobs of one warm model batch).
  ASSERT_EQ(InferWait(root_ + "/slow", 4).value("state", ""), "SUCCEEDED") << agent->log();
  constexpr int kRequests = 12;
  std::vector<std::string> prompts;
  for (int i = 0; i < kRequests; ++i) prompts.push_back("Mt. Fuji " + std::string(1 + i * 3, 'x'));
  std::vector<nlohmann::json> results(kRequests);
  std::vector<std::thread> clients;
  for (int i = 0; i < kRequests; ++i) {
    clients.emplace_back([&, i] {
      CliResult r = Fuji({"submit", "infer", "--model", root_ + "/slow", "--prompt", prompts[i], "--max-new-tokens",
                          "48", "--ignore-eos", "--wait", "--output", "json"},
                         address_);
      results[i] = nlohmann::json::parse(r.out, nullptr, false);
    });
  }
  for (auto& t : clients) t.join();
  int max_batch = 0;
  for (int i = 0; i < kRequests; ++i) {
    ASSERT_TRUE(results[i].is_object()) << agent->log();
    ASSERT_EQ(results[i].value("state", ""), "SUCCEEDED") << results[i].dump();
    EXPECT_TRUE(results[i]["result"]["model"]["resident"].get<bool>());
    max_batch = std::max(max_batch, results[i]["result"]["batch"]["max_batch_seen"].get<int>());
  }
  EXPECT_GT(max_batch, 1) << "requests placed on the warm device run in one batch";
  // Batching changes no result: the first and the last request again, alone.
  for (int i : {0, kRequests - 1}) {
    CliResult r = Fuji({"submit", "infer", "--model", root_ + "/slow", "--prompt", prompts[i], "--max-new-tokens",
                        "48", "--ignore-eos", "--wait", "--output", "json"},
                       address_);
    nlohmann::json alone = nlohmann::json::parse(r.out, nullptr, false);
    ASSERT_TRUE(alone.is_object()) << r.err;
    EXPECT_EQ(alone["result"]["output_ids"], results[i]["result"]["output_ids"]) << i;
  }
}

TEST_F(ServingTest, AWarmRankThatTakesNoRequestIsRetiredAndTheRequestGoesToANewOne) {
  // A rank that serves one request and then lingers with its input closed, as a rank killed a
  // moment ago does until its agent has seen it go: the next request written to it fails, and the
  // pool must retire it and give the request to a new rank, not fail the attempt on it again.
  const std::string shim = root_ + "/one-request-rank";
  {
    std::ofstream f(shim);
    f << "#!/bin/bash\nIFS= read -r line\nexec 0<&-\n" << kBin << "fuji-rank <<<\"$line\"\nsleep 20\n";
  }
  ASSERT_EQ(::chmod(shim.c_str(), 0755), 0);
  auto daemon = StartDaemon();
  ::setenv("FUJI_RANK", shim.c_str(), 1);
  auto agent = StartAgent("node-f", 1);
  ::unsetenv("FUJI_RANK");
  nlohmann::json first = InferWait(root_ + "/tiny", 4);
  ASSERT_EQ(first.value("state", ""), "SUCCEEDED") << first.dump() << agent->log();
  nlohmann::json second = InferWait(root_ + "/tiny", 4);
  ASSERT_EQ(second.value("state", ""), "SUCCEEDED") << second.dump() << agent->log();
  EXPECT_FALSE(second["result"]["model"]["resident"].get<bool>()) << second.dump();
  EXPECT_EQ(Show(second.value("id", int64_t{0})).value("attempts", -1), 0) << "no attempt failed\n" << agent->log();
  EXPECT_NE(agent->log().find("took no request"), std::string::npos) << agent->log();
  EXPECT_EQ(second["result"]["output_ids"], first["result"]["output_ids"]);
}

TEST_F(ServingTest, AFineTuneUnloadsTheIdleWarmModelsOfItsDevices) {
  auto daemon = StartDaemon();
  auto agent = StartAgent("node-e", 1);
  ASSERT_EQ(InferWait(root_ + "/tiny", 4).value("state", ""), "SUCCEEDED") << agent->log();
  ASSERT_TRUE(WaitForWarm([](const nlohmann::json& warm) { return warm.size() == 1; })) << Warm().dump();
  nlohmann::json ft = Json({"submit", "finetune", "--model", root_ + "/tiny", "--data", root_ + "/text/english.txt",
                            "--ranks", "1", "--seq-len", "32", "--micro-batch", "2", "--steps", "2", "--lr", "1e-3",
                            "--cache-dir", root_ + "/cache", "--threads", "1", "--wait", "--output", "json"});
  ASSERT_TRUE(ft.is_object()) << agent->log();
  EXPECT_EQ(ft.value("state", ""), "SUCCEEDED") << ft.dump() << agent->log();
  EXPECT_NE(agent->log().find("unloading warm model"), std::string::npos) << agent->log();
  EXPECT_TRUE(WaitForWarm([](const nlohmann::json& warm) { return warm.empty(); })) << Warm().dump();
}

}  // namespace
}  // namespace fuji::testing
