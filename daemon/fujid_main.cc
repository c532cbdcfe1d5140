// fujid: the fuji daemon. Flags -> store -> server and loop -> wait for SIGTERM/SIGINT -> stop in
// reverse order.
#include <csignal>
#include <filesystem>
#include <memory>
#include <string>

#include <CLI/CLI.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>

#include "daemon/server/daemon_server.h"
#include "daemon/store/clock.h"
#include "daemon/store/job_store.h"
#include "lib/common/log.h"

namespace {

// Everything fujid is told on its command line.
struct Config {
  std::string db_path = "./var/fujid.db";
  fuji::daemon::ServerOptions server;
};

int Fail(const std::string& message) {
  fuji::log::Error(message);
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  // ---- Flags ----
  fuji::log::SetProgram("fujid");
  Config config;
  CLI::App app{"fujid: the fuji job scheduler daemon"};
  app.add_option("--db", config.db_path, "SQLite database path")->capture_default_str();
  app.add_option("--listen", config.server.listen, "gRPC address (port 0: any free port)")
      ->capture_default_str();
  app.add_option("--lease-ttl-ms", config.server.lease_ttl_ms, "lease of an assignment")
      ->check(CLI::Range(int64_t{100}, int64_t{3'600'000}))
      ->capture_default_str();
  app.add_option("--max-poll-wait-ms", config.server.max_poll_wait_ms,
                 "longest an agent's poll for work is held open")
      ->check(CLI::Range(int64_t{100}, int64_t{3'600'000}))
      ->capture_default_str();
  app.add_option("--max-attempts", config.server.max_attempts, "default runs per job")
      ->check(CLI::Range(1, 100))
      ->capture_default_str();
  CLI11_PARSE(app, argc, argv);

  // ---- Store ----
  std::filesystem::path parent = std::filesystem::path(config.db_path).parent_path();
  std::error_code ec;
  if (!parent.empty() && !std::filesystem::exists(parent, ec)) {
    std::filesystem::create_directories(parent, ec);
    if (ec) return Fail("cannot create " + parent.string() + ": " + ec.message());
  }
  fuji::store::SystemClock clock;
  fuji::Result<std::unique_ptr<fuji::store::JobStore>> store =
      fuji::store::JobStore::Open(config.db_path, &clock);
  if (!store.ok()) return Fail(config.db_path + ": " + store.status().message());

  // ---- Server and loop ----
  fuji::Result<std::unique_ptr<fuji::daemon::DaemonServer>> server =
      fuji::daemon::DaemonServer::Start(config.server, store->get(), &clock);
  if (!server.ok()) return Fail(server.status().message());
  fuji::log::Info("listening on " + config.server.listen + " (port " +
                  std::to_string((*server)->port()) + "), database " + config.db_path);

  // ---- Wait for a signal ----
  boost::asio::io_context signals_io;
  boost::asio::signal_set signals(signals_io, SIGINT, SIGTERM);
  signals.async_wait([](const boost::system::error_code&, int) {});
  signals_io.run();

  // ---- Stop in reverse order ----
  (*server)->Stop();
  server->reset();
  store->reset();
  fuji::log::Info("stopped");
  return 0;
}
