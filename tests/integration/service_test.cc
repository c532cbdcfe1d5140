// fuji as a service, end to end: real fujid, fuji-agent and fuji-rank processes on loopback,
// driven by the real fuji CLI. Submit and wait, timings and nvidia-smi-style samples, cancel,
// kill -9 of the agent and of the daemon, concurrent submitters, refusals at submit.
#include <chrono>
#include <csignal>
#include <cstdlib>
#include <regex>
#include <set>
#include <sstream>
#include <thread>

#include "tests/integration/process_util.h"

namespace fuji::testing {
namespace {

using namespace std::chrono_literals;

class ServiceTest : public ServiceTestBase {
 protected:
  static void SetUpTestSuite() {
    MakeRoot("service_test");
    ASSERT_EQ(Fuji({"model", "init", "--arch", "tiny", "--out", root_ + "/tiny"}).exit_code, 0);
    // Slow enough to be caught mid-run: 8 layers of 256, 2000 tokens take seconds here.
    ASSERT_EQ(Fuji({"model", "init", "--arch", "tiny", "--layers", "8", "--width", "256", "--heads",
                    "4", "--positions", "2048", "--out", root_ + "/slow"}).exit_code, 0);
  }
  static void TearDownTestSuite() { RemoveRoot(); }

  int64_t Submit(const std::string& model, int tokens, const std::vector<std::string>& extra = {}) {
    std::vector<std::string> args = {"submit", "infer", "--model", model, "--prompt", "Mt. Fuji is",
                                     "--max-new-tokens", std::to_string(tokens), "--ignore-eos", "--output", "json"};
    args.insert(args.end(), extra.begin(), extra.end());
    CliResult r = Fuji(args, address_);
    EXPECT_EQ(r.exit_code, 0) << r.err;
    auto j = nlohmann::json::parse(r.out, nullptr, false);
    return j.is_object() ? j.value("id", int64_t{0}) : 0;
  }
};

TEST_F(ServiceTest, SubmitWaitsForTextTimingsAndSamples) {
  auto daemon = StartDaemon();
  auto agent = StartAgent("node-a", 2);
  CliResult r = Fuji({"submit", "infer", "--model", root_ + "/tiny", "--prompt", "There are famous mountain like Mt.Fuji",
                      "--max-new-tokens", "48", "--ignore-eos", "--wait", "--output", "json"},
                     address_);
  ASSERT_EQ(r.exit_code, 0) << r.err << daemon->log() << agent->log();
  auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["state"], "SUCCEEDED");
  EXPECT_EQ(j["kind"], "infer");
  EXPECT_EQ(j["result"]["output_ids"].size(), 48u);
  EXPECT_TRUE(j["result"]["text"].is_string());
  const std::string id = std::to_string(j["id"].get<int64_t>());

  auto timings = nlohmann::json::parse(Fuji({"timings", id, "--output", "json"}, address_).out);
  std::set<std::string> phases;
  for (const auto& t : timings["timings"]) phases.insert(t["phase"].get<std::string>());
  for (const char* p : {"load", "prefill", "decode"}) EXPECT_TRUE(phases.count(p)) << p << timings.dump();

  CliResult csv = Fuji({"samples", id, "--format", "csv"}, address_);
  ASSERT_EQ(csv.exit_code, 0) << csv.err;
  std::istringstream lines(csv.out);
  std::string header, row;
  std::getline(lines, header);
  EXPECT_EQ(header, "timestamp, index, name, memory.used [MiB], memory.total [MiB], utilization.gpu [%]");
  ASSERT_TRUE(std::getline(lines, row)) << "no memory sample taken during the run";
  EXPECT_TRUE(std::regex_match(row, std::regex(R"(\d{4}/\d\d/\d\d \d\d:\d\d:\d\d\.\d{3}, -?\d+, [^,]+, \d+ MiB, \d+ MiB, \d+ %)")))
      << row;

  auto listed = nlohmann::json::parse(Fuji({"jobs", "--output", "json"}, address_).out);
  ASSERT_FALSE(listed["jobs"].empty());
  EXPECT_EQ(listed["jobs"][0]["id"], j["id"]);
  auto workers = Fuji({"workers", "--output", "json"}, address_);
  EXPECT_NE(workers.out.find("node-a"), std::string::npos) << workers.out;
  // The agent reports its host's memory; the scheduler's free memory is within it.
  const nlohmann::json node = nlohmann::json::parse(workers.out)["workers"][0];
  EXPECT_GT(node["host_total_mib"].get<int64_t>(), 0) << workers.out;
  EXPECT_GT(node["host_free_mib"].get<int64_t>(), 0) << workers.out;
  EXPECT_LE(node["host_free_mib"].get<int64_t>(), node["host_total_mib"].get<int64_t>()) << workers.out;
  // The job was placed with a plan of the planner: an inference's offload.
  const nlohmann::json shown = Show(j["id"].get<int64_t>());
  EXPECT_EQ(shown["plan"].value("offload", ""), "none") << shown.dump();
  EXPECT_EQ(daemon->Stop(), 0) << "SIGTERM shuts fujid down cleanly";
}

// With --keep-warm 0 the rank ends with its request; with a warm model it would stay, loaded
// (serving_test).
TEST_F(ServiceTest, CancelStopsARunningJobWithinFiveSeconds) {
  auto daemon = StartDaemon();
  auto agent = StartAgentWith("node-a", 1, {"--allow-read", root_, "--keep-warm", "0"});
  const int64_t id = Submit(root_ + "/slow", 2000);
  ASSERT_TRUE(WaitForState(id, "RUNNING", 60s)) << daemon->log() << agent->log();
  ASSERT_EQ(RanksOf(agent->pid()), 1);
  const auto start = std::chrono::steady_clock::now();
  CliResult r = Fuji({"cancel", std::to_string(id)}, address_);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  ASSERT_TRUE(WaitForState(id, "CANCELLED", 10s)) << daemon->log() << agent->log();
  EXPECT_LT(std::chrono::steady_clock::now() - start, 5s);
  for (int i = 0; i < 30 && RanksOf(agent->pid()) > 0; ++i) std::this_thread::sleep_for(100ms);
  EXPECT_EQ(RanksOf(agent->pid()), 0) << "the rank's processes are gone";
}

TEST_F(ServiceTest, KilledAgentsJobIsRequeuedAndFinishesOnARestartedAgent) {
  auto daemon = StartDaemon();
  auto agent = StartAgent("node-a", 1);
  const int64_t id = Submit(root_ + "/slow", 600);
  ASSERT_TRUE(WaitForState(id, "RUNNING", 60s)) << daemon->log() << agent->log();
  agent->Kill9();  // its rank dies with it (PR_SET_PDEATHSIG)
  agent = StartAgent("node-a", 1);
  ASSERT_TRUE(WaitForState(id, "SUCCEEDED", 120s)) << daemon->log() << agent->log();
  EXPECT_GE(Show(id)["attempts"].get<int>(), 1);
}

TEST_F(ServiceTest, KilledDaemonRestartsAndTheRunningJobIsRecordedOnce) {
  auto daemon = StartDaemon();
  auto agent = StartAgent("node-a", 1);
  const int64_t id = Submit(root_ + "/slow", 800);
  ASSERT_TRUE(WaitForState(id, "RUNNING", 60s)) << daemon->log() << agent->log();
  const std::string address = address_;
  daemon->Kill9();
  address_.clear();
  daemon = StartDaemon(address);  // same database, same address: the agent reconnects
  ASSERT_EQ(address_, address);
  ASSERT_TRUE(WaitForState(id, "SUCCEEDED", 120s)) << daemon->log() << agent->log();
  EXPECT_EQ(Show(id)["attempts"], 0) << "the job went on; it did not run twice";
  daemon->Stop();
  // History intact and the result recorded exactly once, read straight from the database.
  auto count = [&](const std::string& sql) { return std::atoi(Sql(sql).c_str()); };
  EXPECT_EQ(count("SELECT COUNT(*) FROM results WHERE job_id = " + std::to_string(id)), 1);
  EXPECT_EQ(count("SELECT COUNT(*) FROM job_events WHERE job_id = " + std::to_string(id) +
                  " AND to_state = 'SUCCEEDED'"), 1);
  EXPECT_GE(count("SELECT COUNT(*) FROM job_events WHERE job_id = " + std::to_string(id)), 4);
}

// Fencing: an agent cut off from fujid for its lease stops the job's ranks itself, before fujid
// (which waits the lease and a margin) could place the job elsewhere; once fujid is back, the
// stopped attempt ends and the job is retried, never run twice at once.
TEST_F(ServiceTest, AnAgentCutOffFromFujidStopsItsRanksWithinTheLease) {
  // Slow enough to outlive the lease (6 s) by far: 12 layers of 512, 2000 tokens.
  ASSERT_EQ(Fuji({"model", "init", "--arch", "tiny", "--layers", "12", "--width", "512", "--heads", "8",
                  "--positions", "2048", "--out", root_ + "/slower"}).exit_code, 0);
  auto daemon = StartDaemon();
  // --keep-warm 0: the rank ends with the request it stops (a warm one would stay, idle).
  auto agent = StartAgentWith("node-a", 1, {"--allow-read", root_, "--keep-warm", "0"});
  const int64_t id = Submit(root_ + "/slower", 2000);
  ASSERT_TRUE(WaitForState(id, "RUNNING", 60s)) << daemon->log() << agent->log();
  ASSERT_EQ(RanksOf(agent->pid()), 1);
  ASSERT_EQ(::kill(daemon->pid(), SIGSTOP), 0);  // fujid stops answering; the connection stays up
  const auto stopped = std::chrono::steady_clock::now();
  // The lease is 6 s, the rank's grace 2 s; fujid would requeue after 11 s.
  while (RanksOf(agent->pid()) > 0 && std::chrono::steady_clock::now() - stopped < 10s) {
    std::this_thread::sleep_for(100ms);
  }
  const auto gone_after = std::chrono::steady_clock::now() - stopped;
  EXPECT_EQ(RanksOf(agent->pid()), 0) << agent->log();
  // The agent counts the lease from its last successful heartbeat, sent up to one interval (a
  // third of the lease, 2 s) before fujid stopped; a rank that honours the cancel ends at once.
  EXPECT_GE(gone_after, 4s) << "stopped before the lease ran out";
  EXPECT_NE(agent->log().find("stopping its ranks before fujid places it elsewhere"), std::string::npos)
      << agent->log();
  ASSERT_EQ(::kill(daemon->pid(), SIGCONT), 0);
  // The stopped attempt ends (self-fencing is the node's fault: retried), and the job runs again.
  const auto end = std::chrono::steady_clock::now() + 60s;
  nlohmann::json shown = Show(id);
  while (shown.value("attempts", 0) < 1 && std::chrono::steady_clock::now() < end) {
    std::this_thread::sleep_for(100ms);
    shown = Show(id);
  }
  EXPECT_EQ(shown.value("attempts", 0), 1) << shown.dump() << daemon->log() << agent->log();
  EXPECT_EQ(Fuji({"cancel", std::to_string(id)}, address_).exit_code, 0);
}

// Four models, so that no two jobs batch in one warm rank (serving_test has that): each job holds
// its device alone.
TEST_F(ServiceTest, TwoAgentsNeverRunMoreThanTheirDevices) {
  auto daemon = StartDaemon();
  auto a = StartAgentWith("node-a", 1, {"--allow-read", root_, "--keep-warm", "0"});
  auto b = StartAgentWith("node-b", 1, {"--allow-read", root_, "--keep-warm", "0"});
  std::vector<int64_t> ids;
  for (int i = 0; i < 4; ++i) {
    const std::string model = root_ + "/slow-" + std::to_string(i);
    ASSERT_EQ(Fuji({"model", "init", "--arch", "tiny", "--layers", "8", "--width", "256", "--heads", "4",
                    "--positions", "2048", "--seed", std::to_string(i), "--out", model})
                  .exit_code,
              0);
    ids.push_back(Submit(model, 300));
  }
  std::set<std::string> workers_used;
  const auto end = std::chrono::steady_clock::now() + 180s;
  size_t done = 0;
  while (done < ids.size() && std::chrono::steady_clock::now() < end) {
    EXPECT_LE(RanksOf(a->pid()), 1);
    EXPECT_LE(RanksOf(b->pid()), 1);
    auto listed = nlohmann::json::parse(Fuji({"jobs", "--output", "json"}, address_).out);
    int active = 0;
    done = 0;
    for (const auto& j : listed["jobs"]) {
      const std::string state = j["state"];
      if (state == "ASSIGNED" || state == "RUNNING") {
        ++active;
        workers_used.insert(j.value("worker_id", ""));
      }
      if (state == "SUCCEEDED") ++done;
    }
    EXPECT_LE(active, 2) << listed.dump();
    std::this_thread::sleep_for(50ms);
  }
  EXPECT_EQ(done, ids.size()) << daemon->log();
  EXPECT_EQ(workers_used, (std::set<std::string>{"node-a", "node-b"}));
}

TEST_F(ServiceTest, SixteenConcurrentSubmittersEveryAcknowledgedJobOnce) {
  auto daemon = StartDaemon();
  std::vector<std::thread> clients;
  std::vector<std::vector<int64_t>> ids(16);
  for (int c = 0; c < 16; ++c) {
    clients.emplace_back([&, c] {
      for (int i = 0; i < 8; ++i) ids[c].push_back(Submit(root_ + "/tiny", 4));
    });
  }
  for (auto& t : clients) t.join();
  auto listed = nlohmann::json::parse(Fuji({"jobs", "--output", "json", "--limit", "1000"}, address_).out);
  std::multiset<int64_t> in_db;
  for (const auto& j : listed["jobs"]) in_db.insert(j["id"].get<int64_t>());
  size_t acknowledged = 0;
  for (const auto& per_client : ids) {
    for (int64_t id : per_client) {
      ASSERT_GT(id, 0);
      EXPECT_EQ(in_db.count(id), 1u) << "job " << id;
      ++acknowledged;
    }
  }
  EXPECT_EQ(in_db.size(), acknowledged);
}

TEST_F(ServiceTest, RefusesAtSubmitWhatCanNeverRun) {
  auto daemon = StartDaemon();
  auto agent = StartAgent("node-a", 1);
  // Wait until the agent registered, so that the daemon knows what exists.
  for (int i = 0; i < 100 && Fuji({"workers", "--output", "json"}, address_).out.find("node-a") == std::string::npos; ++i) {
    std::this_thread::sleep_for(50ms);
  }
  CliResult r = Fuji({"submit", "infer", "--model", root_ + "/tiny", "--prompt", "x", "--device", "cuda"}, address_);
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("cuda"), std::string::npos) << r.err;
  r = Fuji({"submit", "infer", "--model", dir_ + "/missing", "--prompt", "x"}, address_);
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("not found"), std::string::npos) << r.err;
  r = Fuji({"show", "999999"}, address_);
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("999999"), std::string::npos) << r.err;
  r = Fuji({"jobs", "--state", "SLEEPING"}, address_);
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("SLEEPING"), std::string::npos) << r.err;
  EXPECT_EQ(Fuji({"workers"}, address_).exit_code, 0) << "the daemon keeps serving";
}

}  // namespace
}  // namespace fuji::testing
