// Jobs touch only what they may, end to end: real fujid, a fuji-agent allowed one read root and one
// write root, the fuji-rank processes it runs, and the fuji CLI. Paths outside the roots (plain,
// through "..", through a link planted inside a root, /proc, a FIFO) are refused before any rank
// starts and nothing is created; links planted at the names the agent and its ranks create leave
// their targets untouched; the ranks of an agent started as root run as the unprivileged user,
// without the agent's other variables.
#include <algorithm>
#include <pwd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "tests/integration/process_util.h"

namespace fuji::testing {
namespace {

using namespace std::chrono_literals;

class AgentSecurityTest : public ServiceTestBase {
 protected:
  static void SetUpTestSuite() {
    MakeRoot("agent_security_test");
    read_ = root_ + "/read";
    outside_ = root_ + "/outside";
    ASSERT_EQ(std::system(("mkdir -p " + Quote(read_) + " " + Quote(outside_)).c_str()), 0);
    const std::string corpora = std::string(FUJI_SOURCE_DIR) + "/tests/reference/make_corpora.sh";
    ASSERT_EQ(std::system(("sh " + Quote(corpora) + " " + Quote(read_ + "/text")).c_str()), 0);
    CliResult r = Fuji({"model", "init", "--arch", "tiny", "--out", read_ + "/tiny", "--seed", "1"});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    // Slow enough to be caught mid-generation: 8 layers of 256, 2000 tokens take seconds here.
    r = Fuji({"model", "init", "--arch", "tiny", "--layers", "8", "--width", "256", "--heads", "4", "--positions",
              "2048", "--out", read_ + "/slow"});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    // Outside the agent's roots (but inside fujid's, so that the agent is the one to refuse).
    ASSERT_EQ(std::system(("cp -r " + Quote(read_ + "/tiny") + " " + Quote(outside_ + "/tiny")).c_str()), 0);
    std::ofstream(outside_ + "/secret.txt") << "a secret line of someone else's\n";
    ::chmod((outside_ + "/secret.txt").c_str(), 0600);
  }
  static void TearDownTestSuite() { RemoveRoot(); }

  void SetUp() override {
    ServiceTestBase::SetUp();
    write_ = dir_ + "/write";
    ASSERT_EQ(std::system(("mkdir -p " + Quote(write_)).c_str()), 0);
    GiveToRankUser(write_);
  }

  // The agent under test: it may read read_ and write write_, nothing else.
  std::unique_ptr<Service> StartConfinedAgent() {
    return StartAgentWith("node-a", 1, {"--allow-read", read_, "--allow-write", write_});
  }

  // A one-rank finetune of the tiny model writing under write_, with `extra` flags: the value of
  // one it already has replaces that value; others are added.
  std::vector<std::string> Finetune(const std::vector<std::string>& extra) {
    std::vector<std::string> args = {"submit", "finetune", "--model", read_ + "/tiny", "--data",
                                     read_ + "/text/english.txt", "--seq-len", "16", "--micro-batch", "2",
                                     "--steps", "2", "--threads", "1", "--save-to", write_ + "/ckpt",
                                     "--cache-dir", write_ + "/cache", "--resume", "never", "--output", "json"};
    for (size_t i = 0; i < extra.size(); ++i) {
      const bool has_value = i + 1 < extra.size() && extra[i + 1].rfind("--", 0) != 0;
      auto at = std::find(args.begin(), args.end(), extra[i]);
      if (at != args.end() && has_value) {
        *(at + 1) = extra[++i];
      } else {
        args.push_back(extra[i]);
        if (has_value) args.push_back(extra[++i]);
      }
    }
    return args;
  }

  // The job once it has ended (a discarded value if it does not within the deadline).
  nlohmann::json WaitForEnd(int64_t id, std::chrono::seconds deadline) {
    const auto end = std::chrono::steady_clock::now() + deadline;
    while (std::chrono::steady_clock::now() < end) {
      nlohmann::json j = Show(id);
      const std::string state = j.is_object() ? j.value("state", "") : "";
      if (state == "SUCCEEDED" || state == "FAILED" || state == "CANCELLED") return j;
      std::this_thread::sleep_for(100ms);
    }
    return nlohmann::json();
  }

  // Every entry below dir with its type, mode, size and modification time, one a line, sorted.
  static std::string Listing(const std::string& dir) {
    const std::string out = dir + ".listing";
    const std::string cmd = "find " + Quote(dir) + " -printf '%p %y %m %s %T@\\n' | sort > " + Quote(out);
    EXPECT_EQ(std::system(cmd.c_str()), 0);
    const std::string text = Slurp(out);
    ::unlink(out.c_str());
    return text;
  }

  // The regular files below dir.
  static std::vector<std::string> FilesBelow(const std::string& dir) {
    const std::string out = dir + ".files";
    EXPECT_EQ(std::system(("find " + Quote(dir) + " -type f | sort > " + Quote(out)).c_str()), 0);
    std::istringstream lines(Slurp(out));
    ::unlink(out.c_str());
    std::vector<std::string> files;
    for (std::string line; std::getline(lines, line);) files.push_back(line);
    return files;
  }

  inline static std::string read_, outside_;
  std::string write_;
};

TEST_F(AgentSecurityTest, PathsOutsideTheRootsAreRefusedBeforeAnyRankStartsAndNothingIsCreated) {
  auto daemon = StartDaemon();
  auto agent = StartConfinedAgent();
  // Ways out planted inside the write root (which is readable too): a link to outside_, a FIFO.
  ASSERT_EQ(::symlink(outside_.c_str(), (write_ + "/out").c_str()), 0);
  ASSERT_EQ(::mkfifo((write_ + "/fifo.txt").c_str(), 0644), 0);
  const std::string outside_before = Listing(outside_);
  const std::string write_before = Listing(write_);

  struct Case {
    std::string what;
    std::vector<std::string> args;
    std::string said;  // in the refusal
  };
  const Case cases[] = {
      {"data outside", Finetune({"--data", outside_ + "/secret.txt"}), "is outside this agent's read roots"},
      {"data through ..", Finetune({"--data", read_ + "/../outside/secret.txt"}), "is outside this agent's read roots"},
      {"data through a link", Finetune({"--data", write_ + "/out/secret.txt"}), "is outside this agent's read roots"},
      {"data in /proc", Finetune({"--data", "/proc/self/environ"}), "outside"},
      {"data a FIFO", Finetune({"--data", write_ + "/fifo.txt"}), "is a FIFO"},
      {"model outside", Finetune({"--model", outside_ + "/tiny"}), "is outside this agent's read roots"},
      {"save_to outside", Finetune({"--save-to", outside_ + "/ckpt"}), "is outside this agent's write roots"},
      {"save_to through a link", Finetune({"--save-to", write_ + "/out/ckpt"}), "is outside this agent's write roots"},
      {"cache_dir in a read root", Finetune({"--cache-dir", read_ + "/cache"}), "is outside this agent's write roots"},
      {"inference model outside",
       {"submit", "infer", "--model", outside_ + "/tiny", "--prompt", "Mt. Fuji is", "--max-new-tokens", "2",
        "--output", "json"},
       "is outside this agent's read roots"},
  };
  for (const Case& c : cases) {
    CliResult r = Fuji(c.args, address_);
    if (r.exit_code != 0) {
      // fujid refused it at submit against its own roots: before any rank too.
      EXPECT_TRUE(r.err.find(c.said) != std::string::npos || r.err.find("outside") != std::string::npos)
          << c.what << ": " << r.err;
      EXPECT_EQ(r.err.find("No such file"), std::string::npos) << c.what << ": " << r.err;
      continue;
    }
    const nlohmann::json submitted = nlohmann::json::parse(r.out, nullptr, false);
    ASSERT_TRUE(submitted.is_object()) << c.what << ": " << r.out;
    const nlohmann::json job = WaitForEnd(submitted["id"].get<int64_t>(), 60s);
    ASSERT_TRUE(job.is_object()) << c.what << daemon->log() << agent->log();
    EXPECT_EQ(job["state"], "FAILED") << c.what << ": " << job.dump();
    const std::string reason = job.value("reason", "");
    EXPECT_EQ(reason.rfind("bad_input: ", 0), 0u) << c.what << ": " << reason;
    EXPECT_NE(reason.find(c.said), std::string::npos) << c.what << ": " << reason;
    EXPECT_EQ(reason.find("No such file"), std::string::npos) << c.what << ": " << reason;
    EXPECT_EQ(job.value("started_at_ms", int64_t{-1}), 0) << "a rank started: " << c.what << ": " << job.dump();
    EXPECT_LE(job.value("attempts", 0), 1) << "bad input is not retried: " << job.dump();
  }
  EXPECT_EQ(Listing(outside_), outside_before) << "something was created or changed outside the roots";
  EXPECT_EQ(Listing(write_), write_before) << "a refused job created something";
  EXPECT_EQ(RanksOf(agent->pid()), 0);
}

TEST_F(AgentSecurityTest, LinksPlantedAtTheNamesItCreatesLeaveTheirTargetsUntouched) {
  auto daemon = StartDaemon();
  auto agent = StartConfinedAgent();
  const std::vector<std::string> args = Finetune({"--wait"});
  // A first run shows every name the agent and its rank create: the token cache, the checkpoint's
  // files, `latest`.
  nlohmann::json first = Json(args);
  ASSERT_TRUE(first.is_object()) << daemon->log() << agent->log();
  ASSERT_EQ(first["state"], "SUCCEEDED") << first.dump() << agent->log();
  const std::vector<std::string> files = FilesBelow(write_);
  std::string joined;
  for (const std::string& f : files) joined += f + "\n";
  EXPECT_NE(joined.find(".tok\n"), std::string::npos) << joined;
  EXPECT_NE(joined.find(".safetensors\n"), std::string::npos) << joined;
  EXPECT_NE(joined.find("/ckpt/latest\n"), std::string::npos) << joined;
  EXPECT_NE(joined.find("/meta.json\n"), std::string::npos) << joined;
  // What they wrote is theirs alone: files 0600 in directories 0700.
  for (const std::string& f : files) {
    struct stat st {};
    ASSERT_EQ(::stat(f.c_str(), &st), 0) << f;
    EXPECT_EQ(st.st_mode & 0777, 0600u) << f;
  }
  for (const std::string& d : {write_ + "/cache", write_ + "/ckpt"}) {
    struct stat st {};
    ASSERT_EQ(::stat(d.c_str(), &st), 0) << d;
    EXPECT_EQ(st.st_mode & 0777, 0700u) << d;
  }

  // A link planted at each of those names, to a file of its own outside the roots.
  std::map<std::string, std::string> targets;  // link -> target
  for (size_t i = 0; i < files.size(); ++i) {
    const std::string target = outside_ + "/target-" + std::to_string(i);
    std::ofstream(target) << "target " << i << "\n";
    ASSERT_EQ(::unlink(files[i].c_str()), 0);
    ASSERT_EQ(::symlink(target.c_str(), files[i].c_str()), 0);
    targets[files[i]] = target;
  }
  const std::string outside_before = Listing(outside_);

  nlohmann::json second = Json(args);
  ASSERT_TRUE(second.is_object()) << daemon->log() << agent->log();
  EXPECT_EQ(second["state"], "SUCCEEDED") << second.dump() << agent->log();
  EXPECT_EQ(Listing(outside_), outside_before) << "a planted link was written through";
  size_t i = 0;
  for (const auto& [link, target] : targets) {
    EXPECT_NE(Slurp(target).find("target "), std::string::npos) << target;
    struct stat st {};
    ASSERT_EQ(::lstat(link.c_str(), &st), 0) << link;
    EXPECT_TRUE(S_ISREG(st.st_mode)) << link << " is still a link: it was not replaced";
    ++i;
  }
  EXPECT_EQ(i, files.size());
}

TEST_F(AgentSecurityTest, ARootAgentsRanksRunUnprivilegedWithoutItsOtherVariables) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs an agent started as root";
  const passwd* fuji = ::getpwnam("fuji");
  ASSERT_NE(fuji, nullptr) << "run scripts/bootstrap: it creates the user fuji";
  const uid_t uid = fuji->pw_uid;
  const gid_t gid = fuji->pw_gid;
  const std::string home = fuji->pw_dir;
  auto daemon = StartDaemon();
  ::setenv("AGENT_SECRET", "planted", 1);
  auto agent = StartConfinedAgent();
  ::unsetenv("AGENT_SECRET");

  CliResult r = Fuji({"submit", "infer", "--model", read_ + "/slow", "--prompt", "Mt. Fuji is", "--max-new-tokens",
                      "2000", "--ignore-eos", "--output", "json"},
                     address_);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const int64_t id = nlohmann::json::parse(r.out)["id"].get<int64_t>();
  ASSERT_TRUE(WaitForState(id, "RUNNING", 60s)) << daemon->log() << agent->log();
  std::vector<pid_t> ranks;
  for (int i = 0; i < 100 && ranks.empty(); ++i) {
    ranks = RankPids(agent->pid());
    if (ranks.empty()) std::this_thread::sleep_for(50ms);
  }
  ASSERT_EQ(ranks.size(), 1u) << agent->log();
  const std::string proc = "/proc/" + std::to_string(ranks[0]);

  // Its real, effective, saved and file-system ids are the user's, with no supplementary groups.
  std::map<std::string, std::string> status;
  std::istringstream lines(Slurp(proc + "/status"));
  for (std::string line; std::getline(lines, line);) {
    const size_t colon = line.find(':');
    if (colon != std::string::npos) status[line.substr(0, colon)] = line.substr(colon + 1);
  }
  const std::string u = std::to_string(uid), g = std::to_string(gid);
  EXPECT_EQ(status["Uid"], "\t" + u + "\t" + u + "\t" + u + "\t" + u);
  EXPECT_EQ(status["Gid"], "\t" + g + "\t" + g + "\t" + g + "\t" + g);
  EXPECT_EQ(status["Groups"].find_first_not_of("\t "), std::string::npos) << status["Groups"];

  // The agent holds the planted variable; its rank does not, and has the user's HOME.
  const auto variables = [](const std::string& environ) {
    std::map<std::string, std::string> vars;
    std::istringstream in(environ);
    for (std::string kv; std::getline(in, kv, '\0');) {
      const size_t eq = kv.find('=');
      if (eq != std::string::npos) vars[kv.substr(0, eq)] = kv.substr(eq + 1);
    }
    return vars;
  };
  EXPECT_EQ(variables(Slurp("/proc/" + std::to_string(agent->pid()) + "/environ"))["AGENT_SECRET"], "planted");
  const auto rank_env = variables(Slurp(proc + "/environ"));
  EXPECT_EQ(rank_env.count("AGENT_SECRET"), 0u);
  EXPECT_EQ(rank_env.count("FUJI_JOIN_TOKEN"), 0u);
  ASSERT_EQ(rank_env.count("HOME"), 1u);
  EXPECT_EQ(rank_env.at("HOME"), home);
  for (const auto& [name, value] : rank_env) {
    EXPECT_TRUE(launch::PassesToConfinedChild(name) || name == "CUDA_VISIBLE_DEVICES") << name << "=" << value;
  }

  ASSERT_EQ(Fuji({"cancel", std::to_string(id)}, address_).exit_code, 0);
  EXPECT_TRUE(WaitForState(id, "CANCELLED", 30s)) << agent->log();
}

}  // namespace
}  // namespace fuji::testing
