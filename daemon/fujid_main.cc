// fujid: the fuji daemon. Flags -> store -> server and loop -> wait for SIGTERM/SIGINT -> stop in
// reverse order.
#include <sys/stat.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif

#include <csignal>
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>

#include "daemon/server/daemon_server.h"
#include "daemon/store/clock.h"
#include "daemon/store/job_store.h"
#include "daemon/store/retention.h"
#include "lib/common/log.h"
#include "lib/security/pki.h"

namespace {

// Everything fujid is told on its command line.
struct Config {
  std::string db_path = "./var/fujid.db";
  std::string state_dir;  // default: the database's directory
  std::string tls_cert, tls_key, tls_ca;
  std::vector<std::string> tls_sans;
  std::vector<std::string> allow_read;
  std::string metrics_token_file;
  std::vector<std::string> notify_allow;
  // Days the logs, samples and losses of an ended job are kept; 0: for good.
  int retain_days = 0, retain_logs_days = 0, retain_samples_days = 0, retain_losses_days = 0;
  fuji::daemon::ServerOptions server;
};

// --retain-TABLE wins over --retain; nullopt keeps the table's rows for good.
fuji::store::RetentionPolicy RetentionOf(const Config& config) {
  constexpr int64_t kDayMs = int64_t{24} * 3600 * 1000;
  auto days = [&](int table_days) -> std::optional<int64_t> {
    const int chosen = table_days > 0 ? table_days : config.retain_days;
    if (chosen <= 0) return std::nullopt;
    return chosen * kDayMs;
  };
  fuji::store::RetentionPolicy policy;
  policy.logs_ms = days(config.retain_logs_days);
  policy.samples_ms = days(config.retain_samples_days);
  policy.losses_ms = days(config.retain_losses_days);
  return policy;
}

// Every call allocates and frees buffers on gRPC's and the store's threads. glibc hands the top of a
// thread's arena back to the kernel as soon as 128 KiB of it are free: a madvise, and a TLB
// shootdown on every other CPU, about once per submit, 8% of fujid's CPU time under a stream of
// submits (perf stat: 0.75 madvise calls per submit). fujid keeps up to 64 MiB of freed memory per
// arena instead; allocations from 4 MiB up still get their own mapping.
void TuneAllocator() {
#ifdef __GLIBC__
  ::mallopt(M_TRIM_THRESHOLD, 64 << 20);
  ::mallopt(M_MMAP_THRESHOLD, 4 << 20);
#endif
}

// The metrics token: one line of 16 to 256 printable characters, in a file only its owner may read
// or write (mode 0600 or stricter), as fujid's own admin token.
fuji::Result<std::string> ReadMetricsToken(const std::string& path) {
  struct stat info {};
  const std::string flag = "--metrics-token-file " + path;
  if (::stat(path.c_str(), &info) != 0) return fuji::InvalidArgument(flag + ": cannot read it");
  if (!S_ISREG(info.st_mode)) return fuji::InvalidArgument(flag + ": not a regular file");
  if ((info.st_mode & 077) != 0) {
    return fuji::InvalidArgument(flag + ": others may read or write it; chmod 600 it (it is a credential)");
  }
  std::ifstream in(path);
  std::string token;
  char c = 0;
  while (in.get(c) && token.size() <= 256) {
    if (c == '\n' || c == '\r') break;
    token += c;
  }
  if (token.size() < 16 || token.size() > 256) {
    return fuji::InvalidArgument(flag + ": the token must be 16 to 256 characters");
  }
  for (char t : token) {
    if (t <= ' ' || t > '~') return fuji::InvalidArgument(flag + ": unprintable token");
  }
  return token;
}

int Fail(const std::string& message) {
  fuji::log::Error(message);
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  TuneAllocator();
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
  app.add_option("--state-dir", config.state_dir,
                 "where the cluster CA, fujid's certificate and the first admin token live "
                 "(default: the database's directory)");
  app.add_option("--tls-san", config.tls_sans,
                 "another name or address for fujid's certificate (repeatable)");
  CLI::Option* cert = app.add_option("--tls-cert", config.tls_cert, "your own certificate for fujid (PEM)");
  CLI::Option* key = app.add_option("--tls-key", config.tls_key, "its key (PEM)");
  CLI::Option* ca = app.add_option("--tls-ca", config.tls_ca, "the CA that signed it, for clients (PEM)");
  cert->needs(key, ca);
  key->needs(cert, ca);
  ca->needs(cert, key);
  app.add_option("--allow-read", config.allow_read,
                 "a directory whose models and data jobs may name (repeatable); fujid reads models' "
                 "configs there to plan, and refuses submits naming paths elsewhere");
  const auto days = CLI::Range(0, 36500);
  app.add_option("--retain", config.retain_days,
                 "delete the logs, samples and losses of jobs that ended more than DAYS ago (0: keep "
                 "them); the jobs themselves stay")
      ->check(days);
  app.add_option("--retain-logs", config.retain_logs_days, "as --retain, for logs only (wins over it)")->check(days);
  app.add_option("--retain-samples", config.retain_samples_days, "as --retain, for memory samples only")
      ->check(days);
  app.add_option("--retain-losses", config.retain_losses_days, "as --retain, for losses only")->check(days);
  app.add_option("--http-listen", config.server.http_listen,
                 "serve the OpenAI-compatible HTTP API (/v1/models, /v1/completions, /v1/chat/completions) "
                 "on ADDR:PORT, with fujid's TLS certificate (port 0: any free port)");
  app.add_option("--models", config.server.model_dirs,
                 "a directory whose model directories (those holding a config.json) the HTTP API offers by "
                 "name (repeatable; each must be under an --allow-read directory)");
  app.add_option("--metrics-listen", config.server.metrics_listen,
                 "also serve GET /metrics (Prometheus) in plaintext HTTP on ADDR:PORT, a loopback address only "
                 "(/metrics is always on --http-listen, over TLS)");
  app.add_option("--metrics-token-file", config.metrics_token_file,
                 "a file (mode 0600) holding a token that may scrape /metrics besides admins' tokens");
  app.add_flag("--metrics-open-on-loopback", config.server.metrics_open_on_loopback,
               "answer /metrics without a token on listeners bound to a loopback address");
  app.add_option("--notify-allow", config.notify_allow,
                 "hosts fuji submit --notify may name: CIDR blocks (loopback, link-local and private addresses "
                 "are refused unless one holds them), host names, or * for any public address; none: no "
                 "notifications");
  app.add_option("--notify-attempts", config.server.notify.max_attempts, "POSTs of a notification before fujid "
                 "gives up")->check(CLI::Range(1, 20))->capture_default_str();
  app.add_option("--notify-backoff-ms", config.server.notify.first_backoff_ms,
                 "wait before a notification's second POST, doubled before each next one")
      ->check(CLI::Range(10, 3600000))->capture_default_str();
  app.add_option("--notify-timeout-ms", config.server.notify.request_timeout_ms, "one notification POST, whole")
      ->check(CLI::Range(100, 60000))->capture_default_str();
  app.add_flag("--insecure", config.server.insecure,
               "plaintext without TLS, on a loopback address only (tokens are still checked)");
  CLI11_PARSE(app, argc, argv);

  // Everything fujid creates (database, keys, tokens) is private to its user.
  ::umask(077);

  // ---- Store ----
  std::filesystem::path parent = std::filesystem::path(config.db_path).parent_path();
  std::error_code ec;
  if (!parent.empty() && !std::filesystem::exists(parent, ec)) {
    std::filesystem::create_directories(parent, ec);
    if (ec) return Fail("cannot create " + parent.string() + ": " + ec.message());
  }
  if (config.state_dir.empty()) config.state_dir = parent.empty() ? "." : parent.string();
  if (!std::filesystem::is_directory(config.state_dir, ec)) {
    std::filesystem::create_directories(config.state_dir, ec);
    if (ec) return Fail("cannot create " + config.state_dir + ": " + ec.message());
  }

  fuji::Result<fuji::PathPolicy> policy = fuji::PathPolicy::Create(config.allow_read, {}, "fujid");
  if (!policy.ok()) return Fail(policy.status().message());
  config.server.read_policy = *policy;
  fuji::Result<fuji::daemon::NotifyPolicy> notify = fuji::daemon::NotifyPolicy::Parse(config.notify_allow);
  if (!notify.ok()) return Fail(notify.status().message());
  config.server.notify_policy = *notify;

  if (!config.metrics_token_file.empty()) {
    fuji::Result<std::string> token = ReadMetricsToken(config.metrics_token_file);
    if (!token.ok()) return Fail(token.status().message());
    config.server.metrics_token = *token;
  }

  // ---- TLS ----
  std::string ca_path;
  if (config.server.insecure) {
    fuji::log::Warn("--insecure: plaintext on " + config.server.listen +
                    "; tokens cross the loopback unencrypted. Never use this beyond one machine.");
  } else if (!config.tls_cert.empty()) {
    fuji::Result<fuji::security::TlsMaterial> tls =
        fuji::security::LoadTlsMaterial({config.tls_ca, config.tls_cert, config.tls_key});
    if (!tls.ok()) return Fail(tls.status().message());
    config.server.tls_cert_pem = tls->cert_pem;
    config.server.tls_key_pem = tls->key_pem;
    ca_path = config.tls_ca;
  } else {
    fuji::Result<fuji::security::TlsFiles> files = fuji::security::EnsureClusterPki(
        config.state_dir, fuji::security::ServerSans(config.server.listen, config.tls_sans));
    if (!files.ok()) return Fail(files.status().message());
    fuji::Result<fuji::security::TlsMaterial> tls = fuji::security::LoadTlsMaterial(*files);
    if (!tls.ok()) return Fail(tls.status().message());
    config.server.tls_cert_pem = tls->cert_pem;
    config.server.tls_key_pem = tls->key_pem;
    ca_path = files->ca_cert;
  }
  fuji::store::SystemClock clock;
  fuji::Result<std::unique_ptr<fuji::store::JobStore>> store =
      fuji::store::JobStore::Open(config.db_path, &clock);
  if (!store.ok()) return Fail(config.db_path + ": " + store.status().message());

  // ---- Server and loop ----
  fuji::Result<std::unique_ptr<fuji::daemon::DaemonServer>> server =
      fuji::daemon::DaemonServer::Start(config.server, store->get(), &clock);
  if (!server.ok()) return Fail(server.status().message());
  const std::string admin_token = (std::filesystem::path(config.state_dir) / "admin.token").string();
  fuji::Result<bool> made_admin = (*server)->auth()->EnsureAdmin(admin_token);
  if (!made_admin.ok()) return Fail("cannot create the first admin: " + made_admin.status().message());
  std::unique_ptr<fuji::store::Retention> retention;
  if (fuji::store::RetentionPolicy policy = RetentionOf(config); policy.any()) {
    retention = std::make_unique<fuji::store::Retention>(store->get(), &clock, policy);
    retention->Start();
  }
  if (*made_admin) fuji::log::Info("created user admin; its token is in " + admin_token + " (mode 0600)");
  if (!ca_path.empty()) {
    fuji::log::Info("TLS with the CA " + std::filesystem::absolute(ca_path).string() +
                    ": clients and agents verify fujid with it (--ca, FUJI_CA, fuji login)");
  }
  fuji::log::Info("listening on " + config.server.listen + " (port " +
                  std::to_string((*server)->port()) + "), database " + config.db_path);
  if (const int http_port = (*server)->http_port(); http_port != 0) {
    const std::string host = config.server.http_listen.substr(0, config.server.http_listen.rfind(':'));
    fuji::log::Info(std::string("OpenAI-compatible HTTP API on ") + (config.server.insecure ? "http" : "https") +
                    "://" + host + ":" + std::to_string(http_port) + "/v1 (and /metrics)");
    fuji::log::Info(std::string("dashboard on ") + (config.server.insecure ? "http" : "https") + "://" + host + ":" +
                    std::to_string(http_port) + "/ui/ (log in with a fuji token)");
  }
  if (const int metrics_port = (*server)->metrics_port(); metrics_port != 0) {
    const std::string host = config.server.metrics_listen.substr(0, config.server.metrics_listen.rfind(':'));
    fuji::log::Info("Prometheus metrics on http://" + host + ":" + std::to_string(metrics_port) + "/metrics");
  }

  // ---- Wait for a signal ----
  boost::asio::io_context signals_io;
  boost::asio::signal_set signals(signals_io, SIGINT, SIGTERM);
  signals.async_wait([](const boost::system::error_code&, int) {});
  signals_io.run();

  // ---- Stop in reverse order ----
  retention.reset();
  (*server)->Stop();
  server->reset();
  store->reset();
  fuji::log::Info("stopped");
  return 0;
}
