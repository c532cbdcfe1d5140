// examples/python/fuji_client.py, a client of fujid's gRPC API in Python (Debian's python3-grpcio,
// stubs generated from proto/ at build time), against real fujid, fuji-agent and fuji-rank
// processes: its job list and its nvidia-smi CSV equal the fuji CLI's, and a refused token, an
// unreachable fujid and another user's job are one clear line and a non-zero exit. The job is a
// fine-tune whose spec says nothing about retention, on an agent started with --keep-last 2: only
// its two newest checkpoints remain.
#include <sys/stat.h>

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "tests/integration/process_util.h"
#include "worker/ckpt/retention.h"

namespace fuji::testing {
namespace {

class PythonClientTest : public ServiceTestBase {
 protected:
  static void SetUpTestSuite() {
    MakeRootWithTextAndTinyModel("python_client_test");
  }
  static void TearDownTestSuite() { RemoveRoot(); }

  // A file holding `token`, readable by its owner only.
  std::string TokenFile(const std::string& name, const std::string& token) {
    const std::string path = dir_ + "/" + name;
    std::ofstream(path) << token << "\n";
    EXPECT_EQ(::chmod(path.c_str(), 0600), 0);
    return path;
  }

  // /usr/bin/python3 examples/python/fuji_client.py with fujid's address and CA, the token in
  // token_file, the stubs of the build, then `args`.
  CliResult Client(const std::string& token_file, const std::vector<std::string>& args,
                   const std::string& address = "") {
    std::string cmd = std::string(FUJI_SYSTEM_PYTHON) + " " + Quote(std::string(FUJI_SOURCE_DIR) +
                                                                     "/examples/python/fuji_client.py");
    for (const std::string& a : std::vector<std::string>{"--stubs", FUJI_PY_STUBS, "--address",
                                                         address.empty() ? address_ : address, "--ca", ca_,
                                                         "--token-file", token_file, "--timeout", "20"}) {
      cmd += " " + Quote(a);
    }
    for (const std::string& a : args) cmd += " " + Quote(a);
    CliResult r;
    const int status = std::system((cmd + " >" + dir_ + "/py.out 2>" + dir_ + "/py.err </dev/null").c_str());
    r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    r.out = Slurp(dir_ + "/py.out");
    r.err = Slurp(dir_ + "/py.err");
    return r;
  }

  // One line on stderr naming `needle`, exit 1, no Python traceback.
  static void ExpectOneLineError(const CliResult& r, const std::string& needle) {
    EXPECT_EQ(r.exit_code, 1) << r.err;
    EXPECT_NE(r.err.find(needle), std::string::npos) << r.err;
    EXPECT_EQ(r.err.find("Traceback"), std::string::npos) << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
    EXPECT_TRUE(r.out.empty()) << r.out;
  }
};

TEST_F(PythonClientTest, ListsJobsAndPrintsSamplesAsTheCliDoes) {
  auto daemon = StartDaemon();
  auto agent = StartAgentWith("node-a", 2, {"--allow-read", root_, "--allow-write", root_, "--keep-last", "2"});
  const std::string save_to = dir_ + "/ckpt";
  nlohmann::json done = Json({"submit", "finetune", "--model", root_ + "/tiny", "--data", root_ + "/text/english.txt",
                              "--ranks", "2", "--seq-len", "32", "--micro-batch", "2", "--steps", "5", "--lr", "1e-3",
                              "--save-to", save_to, "--save-every", "1", "--cache-dir", root_ + "/cache",
                              "--threads", "1", "--wait", "--output", "json"});
  ASSERT_TRUE(done.is_object()) << daemon->log() << agent->log();
  ASSERT_EQ(done["state"], "SUCCEEDED") << done.dump() << agent->log();
  const std::string id = std::to_string(done["id"].get<int64_t>());
  // The agent's --keep-last reached the ranks of a spec that said nothing.
  const nlohmann::json shown = Show(done["id"].get<int64_t>());
  ASSERT_TRUE(shown.is_object() && shown["spec"].is_object()) << shown.dump();
  EXPECT_EQ(shown["spec"].value("keep_last", 0), -1) << shown["spec"].dump();
  auto kept = ckpt::StepDirNames(save_to);
  ASSERT_TRUE(kept.ok()) << kept.status().ToString();
  EXPECT_EQ(*kept, (std::vector<std::string>{"step-00000004", "step-00000005"})) << agent->log();
  // A second job, of another kind and state, for the list.
  ASSERT_EQ(Fuji({"submit", "infer", "--model", root_ + "/tiny", "--prompt", "Mt. Fuji", "--max-new-tokens", "1",
                  "--priority", "3", "--wait"}, address_).exit_code, 0);

  const std::string token = TokenFile("alice.token", token_);
  CliResult jobs = Client(token, {"jobs"});
  ASSERT_EQ(jobs.exit_code, 0) << jobs.err;
  nlohmann::json cli = Json({"jobs", "--output", "json"});
  ASSERT_TRUE(cli.is_object());
  std::vector<std::string> want = {"ID STATE KIND PRIO ATTEMPTS"};
  for (const auto& j : cli["jobs"]) {
    std::string attempts = std::to_string(j["attempts"].get<int>());
    if (j["max_attempts"].get<int>() > 0) attempts += "/" + std::to_string(j["max_attempts"].get<int>());
    want.push_back(std::to_string(j["id"].get<int64_t>()) + " " + j["state"].get<std::string>() + " " +
                   j["kind"].get<std::string>() + " " + std::to_string(j["priority"].get<int>()) + " " + attempts);
  }
  ASSERT_EQ(want.size(), 3u) << cli.dump();
  std::vector<std::string> got;
  std::istringstream lines(jobs.out);
  for (std::string line; std::getline(lines, line);) {
    std::istringstream words(line);
    std::string w, first5;
    for (int i = 0; i < 5 && words >> w; ++i) first5 += (i ? " " : "") + w;
    got.push_back(first5);
  }
  EXPECT_EQ(got, want) << jobs.out;

  CliResult csv = Client(token, {"samples", id});
  ASSERT_EQ(csv.exit_code, 0) << csv.err;
  CliResult cli_csv = Fuji({"samples", id, "--format", "csv"}, address_);
  ASSERT_EQ(cli_csv.exit_code, 0) << cli_csv.err;
  EXPECT_EQ(csv.out, cli_csv.out);
  EXPECT_GE(std::count(csv.out.begin(), csv.out.end(), '\n'), 2) << "a header and samples: " << csv.out;

  // Refusals: a token fujid does not know, a fujid not there, another user's job.
  ExpectOneLineError(Client(TokenFile("wrong.token", "not-a-token"), {"jobs"}), "refused the token");
  ExpectOneLineError(Client(token, {"jobs"}, "127.0.0.1:1"), "cannot reach fujid at 127.0.0.1:1");
  ExpectOneLineError(Client(TokenFile("bob.token", AddUser("bob")), {"samples", id}), "NOT_FOUND");
  CliResult no_file = Client(dir_ + "/missing.token", {"jobs"});
  EXPECT_EQ(no_file.exit_code, 2) << no_file.err;
  EXPECT_NE(no_file.err.find("--token-file"), std::string::npos) << no_file.err;
  EXPECT_EQ(no_file.err.find("Traceback"), std::string::npos) << no_file.err;
}

}  // namespace
}  // namespace fuji::testing
