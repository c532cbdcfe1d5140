// fuji-agent: parse flags into AgentConfig, discover devices, run the agent until SIGTERM/SIGINT.
#include <csignal>
#include <cstdio>
#include <thread>

#include <CLI/CLI.hpp>

#include "worker/agent/agent.h"

int main(int argc, char** argv) {
  using namespace fuji::agent;
  AgentConfig config;
  std::string devices = "auto";
  CLI::App app{"fuji-agent: runs fujid's jobs on this node's devices"};
  app.add_option("--server", config.server, "fujid's address, host:port")->required();
  app.add_option("--devices", devices, "auto (GPUs through NVML, else one CPU device) or cpu:N");
  app.add_option("--sample-interval-ms", config.sample_interval_ms, "memory sample interval")
      ->check(CLI::Range(int64_t{10}, int64_t{3600000}));
  app.add_option("--worker-id", config.worker_id, "stable worker id (default: the host name)");
  CLI11_PARSE(app, argc, argv);

  auto flag = ParseDeviceFlag(devices);
  if (!flag.ok()) {
    std::fprintf(stderr, "fuji-agent: %s\n", flag.status().message().c_str());
    return 2;
  }
  config.devices = *flag;
  config.host = HostName();
  if (config.worker_id.empty()) config.worker_id = config.host;

  // SIGTERM and SIGINT are taken by a waiting thread, not by handlers: Stop() is not signal-safe.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  DeviceInventory inventory = DiscoverDevices(config.devices, config.nvml_library);
  if (!inventory.note.empty()) std::fprintf(stderr, "fuji-agent: %s; offering CPU devices\n", inventory.note.c_str());
  Agent agent(config, std::move(inventory), MakeChannel(config.server));
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
