// fuji-agent: parse flags into AgentConfig, discover devices, run the agent until SIGTERM/SIGINT.
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

#include <CLI/CLI.hpp>

#include "lib/common/duration.h"
#include "worker/agent/agent.h"
#include "worker/agent/enroll.h"
#include "worker/launcher/finetune_prepare.h"

int main(int argc, char** argv) {
  using namespace fuji::agent;
  // The agent's confined child that prepares a finetune's data (launch::PrepareFinetuneConfined).
  if (argc == 2 && std::string(argv[1]) == fuji::launch::kServePreparationArg) return fuji::launch::ServePreparation();
  AgentConfig config;
  std::string devices = "auto";
  std::vector<std::string> read_roots, write_roots;
  std::string run_as;
  std::string keep_warm = "10m";
  EnrollOptions enroll;
  enroll.state_dir = DefaultStateDir();
  CLI::App app{"fuji-agent: runs fujid's jobs on this node's devices"};
  app.add_option("--server", config.server, "fujid's address, host:port")->required();
  app.add_option("--devices", devices, "auto (GPUs through NVML, else one CPU device) or cpu:N");
  app.add_option("--sample-interval-ms", config.sample_interval_ms, "memory sample interval")
      ->check(CLI::Range(int64_t{10}, int64_t{3600000}));
  app.add_option("--worker-id", config.worker_id, "stable worker id (default: the host name)");
  app.add_option("--allow-read", read_roots, "a directory jobs may read models and data in (repeatable)")
      ->allow_extra_args(false);
  app.add_option("--allow-write", write_roots,
                 "a directory jobs may write checkpoints and token caches in, and read (repeatable)")
      ->allow_extra_args(false);
  app.add_option("--keep-warm", keep_warm,
                 "how long a rank keeps its model loaded after its last inference job (0: not at all)")
      ->capture_default_str();
  app.add_option("--run-as", run_as, "the user ranks run as when the agent runs as root (default: fuji)");
  app.add_option("--state-dir", enroll.state_dir, "where the agent keeps its credential")->capture_default_str();
  app.add_option("--ca", enroll.ca_file,
                 "the cluster CA that signed fujid's certificate (first start; kept in the state directory)");
  app.add_option("--join-token", enroll.join_token,
                 "enroll with this token from `fuji admin agent-token` (first start; or $FUJI_JOIN_TOKEN)");
  std::string gang_ports = "29400-29499";
  app.add_option("--advertise-addr", config.advertise_addr,
                 "the IP address or host name other nodes reach this agent's ranks at; a fine-tune's "
                 "ranks on several agents bind their collectives there (default: none, the agent takes "
                 "no part in gangs across agents)");
  app.add_option("--gang-ports", gang_ports,
                 "LO-HI: the TCP ports a gang's rank 0 on this agent may host the gang's rendezvous on")
      ->capture_default_str();
  app.add_option("--keep-last", config.keep_last,
                 "the newest N complete checkpoints a fine-tune keeps when its spec says nothing (0: all)")
      ->check(CLI::Range(int64_t{0}, int64_t{1000000}))
      ->capture_default_str();
  app.add_flag("--insecure", enroll.insecure, "plaintext to a loopback fujid started with --insecure");
  CLI11_PARSE(app, argc, argv);

  auto flag = ParseDeviceFlag(devices);
  if (!flag.ok()) {
    std::fprintf(stderr, "fuji-agent: %s\n", flag.status().message().c_str());
    return 2;
  }
  config.devices = *flag;
  auto keep_warm_ms = fuji::ParseDurationMs(keep_warm);
  if (!keep_warm_ms.ok()) {
    std::fprintf(stderr, "fuji-agent: --keep-warm: %s\n", keep_warm_ms.status().message().c_str());
    return 2;
  }
  config.keep_warm_ms = *keep_warm_ms;
  auto ports = ParseGangPorts(gang_ports);
  for (const fuji::Status& s : {ports.status(), CheckAdvertiseAddr(config.advertise_addr)}) {
    if (s.ok()) continue;
    std::fprintf(stderr, "fuji-agent: %s\n", s.message().c_str());
    return 2;
  }
  config.gang_port_lo = ports->first;
  config.gang_port_hi = ports->second;
  config.host = HostName();
  if (config.worker_id.empty()) config.worker_id = config.host;
  auto paths = fuji::PathPolicy::Create(read_roots, write_roots);
  auto rank_user = fuji::launch::RankUser(run_as);
  for (const fuji::Status& s : {paths.status(), rank_user.status()}) {
    if (s.ok()) continue;
    std::fprintf(stderr, "fuji-agent: %s\n", s.message().c_str());
    return 2;
  }
  config.paths = *paths;
  config.ranks.user = *rank_user;
  std::fprintf(stderr, "fuji-agent: jobs may use %s; ranks run as %s\n", config.paths.Describe().c_str(),
               config.ranks.user ? config.ranks.user->user.c_str() : "this agent's user");
  if (const char* env = std::getenv("FUJI_JOIN_TOKEN"); enroll.join_token.empty() && env != nullptr) {
    enroll.join_token = env;
  }
  enroll.server = config.server;
  enroll.worker_id = config.worker_id;
  enroll.host = config.host;
  fuji::Result<Identity> identity = LoadOrEnroll(enroll);
  if (!identity.ok()) {
    std::fprintf(stderr, "fuji-agent: %s\n", identity.status().message().c_str());
    return 1;
  }
  auto channel = MakeChannel(identity->endpoint);
  if (!channel.ok()) {
    std::fprintf(stderr, "fuji-agent: %s\n", channel.status().message().c_str());
    return 1;
  }

  // SIGTERM and SIGINT are taken by a waiting thread, not by handlers: Stop() is not signal-safe.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  DeviceInventory inventory = DiscoverDevices(config.devices, config.nvml_library);
  if (!inventory.note.empty()) std::fprintf(stderr, "fuji-agent: %s; offering CPU devices\n", inventory.note.c_str());
  Agent agent(config, std::move(inventory), *channel, identity->credential);
  std::thread waiter([&] {
    int sig = 0;
    sigwait(&signals, &sig);
    std::fprintf(stderr, "fuji-agent: signal %d: stopping\n", sig);
    agent.Stop();
  });
  const fuji::Status status = agent.Run();
  // Run() returns only after Stop(); the waiter has returned or is about to.
  waiter.join();
  if (!status.ok()) {
    std::fprintf(stderr, "fuji-agent: %s\n", status.ToString().c_str());
    return 1;
  }
  return 0;
}
