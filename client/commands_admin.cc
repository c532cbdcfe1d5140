// Who the CLI is and what admins do: `login`, `whoami`, and `admin user add|list|revoke`,
// `admin agent-token`, `admin agent list|revoke|drain|undrain`, `admin drain|undrain` (the same
// two), `admin backup`. A token is printed once, alone on stdout, so that a script can take it;
// everything said around it goes to stderr.
#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <filesystem>
#include <iostream>
#include <memory>

#include "client/cli.h"
#include "client/daemon_client.h"
#include "client/daemon_commands.h"
#include "client/format_telemetry.h"
#include "client/format_text.h"
#include "client/profile.h"
#include "lib/common/file_util.h"

namespace fuji::client {
namespace {

std::string TimeOrDash(int64_t ms) { return ms > 0 ? FormatLocalTime(ms) : "-"; }

void RegisterLogin(CLI::App& app, CliState* state) {
  struct Flags {
    std::string server, ca, token;
  };
  auto f = std::make_shared<Flags>();
  CLI::App* cmd = app.add_subcommand(
      "login", "Check a token with fujid and keep the server, CA and token in ~/.config/fuji (0600)");
  cmd->add_option("--server", f->server, "fujid address (default: $FUJI_SERVER, else 127.0.0.1:7070)");
  cmd->add_option("--ca", f->ca, "The cluster CA (ca.crt in fujid's state directory; default: $FUJI_CA)");
  cmd->add_option("--token", f->token, "Your token; - reads it from stdin (default: $FUJI_TOKEN)");
  cmd->callback([state, f] {
    auto run = [&]() -> Status {
      Connection c;
      c.endpoint.address = !f->server.empty() ? f->server : "";
      if (c.endpoint.address.empty()) {
        const char* env = std::getenv("FUJI_SERVER");
        c.endpoint.address = env != nullptr && *env != '\0' ? env : kDefaultServer;
      }
      c.endpoint.ca_file = f->ca;
      if (c.endpoint.ca_file.empty()) {
        const char* env = std::getenv("FUJI_CA");
        if (env != nullptr) c.endpoint.ca_file = env;
      }
      if (c.endpoint.ca_file.empty()) {
        return InvalidArgument("login needs the cluster CA: --ca FILE (ca.crt in fujid's state directory)");
      }
      c.token = f->token;
      c.token_source = "--token";
      if (c.token == "-") {
        std::getline(std::cin, c.token);
        c.token_source = "stdin";
      } else if (c.token.empty()) {
        const char* env = std::getenv("FUJI_TOKEN");
        if (env != nullptr) c.token = env;
        c.token_source = "FUJI_TOKEN";
      }
      while (!c.token.empty() && (c.token.back() == '\n' || c.token.back() == '\r' || c.token.back() == ' ')) {
        c.token.pop_back();
      }
      if (c.token.empty()) return InvalidArgument("login needs a token: --token TOKEN, --token - (stdin) or FUJI_TOKEN");
      FUJI_ASSIGN_OR_RETURN(std::string ca_pem, ReadFile(c.endpoint.ca_file, 1 << 20));
      DaemonClient client(c);
      FUJI_ASSIGN_OR_RETURN(v1::HealthResponse who, client.Health());
      const std::string dir = ProfileDir();
      FUJI_RETURN_IF_ERROR(SaveProfile(dir, c.endpoint.address, ca_pem, c.token));
      std::printf("logged in to %s as %s%s; profile in %s\n", c.endpoint.address.c_str(), who.user().c_str(),
                  who.admin() ? " (admin)" : "", dir.c_str());
      return Status::Ok();
    };
    state->exit_code = ReportStatus(run());
  });
}

void RegisterWhoami(CLI::App& app, CliState* state) {
  auto f = std::make_shared<ServerFlags>();
  CLI::App* cmd = app.add_subcommand("whoami", "Who fujid says your token is");
  AddServerOption(cmd, f.get());
  cmd->callback([state, f] {
    DaemonClient client(*f);
    auto who = client.Health();
    if (!who.ok()) {
      state->exit_code = ReportStatus(who.status());
      return;
    }
    std::printf("%s%s at %s (fujid %s)\n", who->user().c_str(), who->admin() ? " (admin)" : "",
                client.address().c_str(), who->version().c_str());
    if (who->status() == "NOT_SERVING") {
      std::fprintf(stderr, "fuji: fujid is NOT_SERVING: %s; submits fail until it clears\n", who->reason().c_str());
      state->exit_code = 1;
    }
  });
}

void RegisterUserCommands(CLI::App* admin, CliState* state) {
  CLI::App* user = admin->add_subcommand("user", "Users and their tokens");
  user->require_subcommand(1);

  struct AddFlags {
    ServerFlags server;
    std::string name;
    bool admin = false;
  };
  auto af = std::make_shared<AddFlags>();
  CLI::App* add = user->add_subcommand("add", "Make a user and print their token (shown only this once)");
  add->add_option("name", af->name, "1-64 of A-Z a-z 0-9 . _ -, starting with a letter or digit")->required();
  add->add_flag("--admin", af->admin, "The user may administer fujid");
  AddServerOption(add, &af->server);
  add->callback([state, af] {
    DaemonClient client(af->server);
    auto made = client.CreateUser(af->name, af->admin);
    if (!made.ok()) {
      state->exit_code = ReportStatus(made.status());
      return;
    }
    std::printf("%s\n", made->token().c_str());
    std::fflush(stdout);
    std::fprintf(stderr, "user %s%s made; fujid keeps only a hash of the token above: hand it over now\n",
                 made->user().name().c_str(), made->user().admin() ? " (admin)" : "");
  });

  struct ListFlags {
    ServerFlags server;
    std::string output = "table";
  };
  auto lf = std::make_shared<ListFlags>();
  CLI::App* list = user->add_subcommand("list", "Every user, revoked ones too");
  AddServerOption(list, &lf->server);
  list->add_option("--output", lf->output, "table or json")->check(CLI::IsMember({"table", "json"}));
  list->callback([state, lf] {
    DaemonClient client(lf->server);
    auto users = client.ListUsers();
    if (!users.ok()) {
      state->exit_code = ReportStatus(users.status());
      return;
    }
    if (lf->output == "json") {
      nlohmann::json list = nlohmann::json::array();
      for (const v1::User& u : *users) {
        list.push_back({{"name", u.name()}, {"admin", u.admin()}, {"created_at_ms", u.created_at_ms()},
                        {"revoked_at_ms", u.revoked_at_ms()}});
      }
      PrintJson({{"users", list}});
      return;
    }
    std::vector<std::vector<std::string>> rows;
    for (const v1::User& u : *users) {
      rows.push_back({u.name(), u.admin() ? "yes" : "no", TimeOrDash(u.created_at_ms()), TimeOrDash(u.revoked_at_ms())});
    }
    PrintText(RenderTable({"NAME", "ADMIN", "CREATED", "REVOKED"}, rows));
  });

  struct RevokeFlags {
    ServerFlags server;
    std::string name;
  };
  auto rf = std::make_shared<RevokeFlags>();
  CLI::App* revoke = user->add_subcommand("revoke", "Revoke a user's token from their next call on");
  revoke->add_option("name", rf->name, "The user")->required();
  AddServerOption(revoke, &rf->server);
  revoke->callback([state, rf] {
    DaemonClient client(rf->server);
    auto user = client.RevokeUser(rf->name);
    if (!user.ok()) {
      state->exit_code = ReportStatus(user.status());
      return;
    }
    std::printf("user %s revoked\n", user->name().c_str());
  });
}

// `drain AGENT [--requeue]` and `undrain AGENT` under `parent`: `fuji admin` and `fuji admin agent`
// have the same two.
void RegisterDrainCommands(CLI::App* parent, CliState* state) {
  struct DrainFlags {
    ServerFlags server;
    std::string worker_id;
    bool requeue = false;
  };
  for (const bool drain : {true, false}) {
    auto df = std::make_shared<DrainFlags>();
    CLI::App* cmd = parent->add_subcommand(
        drain ? "drain" : "undrain",
        drain ? "Place no new job on the agent (the jobs it runs go on, DRAINING until they end, then DRAINED); "
                "fujid keeps this across restarts"
              : "Let the agent take new jobs again");
    cmd->add_option("worker_id", df->worker_id, "The agent's worker id")->required();
    if (drain) {
      cmd->add_flag("--requeue", df->requeue,
                    "Its fine-tunes checkpoint at their next step and go back to the queue (no attempt used), "
                    "to resume elsewhere; inference jobs still finish there");
    }
    AddServerOption(cmd, &df->server);
    cmd->callback([state, df, drain] {
      DaemonClient client(df->server);
      auto agent = client.DrainAgent(df->worker_id, drain, df->requeue);
      if (!agent.ok()) {
        state->exit_code = ReportStatus(agent.status());
        return;
      }
      if (!drain) {
        std::printf("agent %s undrained\n", agent->worker_id().c_str());
        return;
      }
      const std::string word = DrainWord(agent->drained_at_ms(), agent->running_jobs());
      std::printf("agent %s %s (%d running job%s%s)\n", agent->worker_id().c_str(), word == "DRAINING" ? "draining" : "drained",
                  agent->running_jobs(), agent->running_jobs() == 1 ? "" : "s",
                  agent->drain_requeue() ? "; its fine-tunes checkpoint and requeue" : "");
    });
  }
}

void RegisterAgentCommands(CLI::App* admin, CliState* state) {
  struct TokenFlags {
    ServerFlags server;
    std::string expires = "1h";
  };
  auto tf = std::make_shared<TokenFlags>();
  CLI::App* token = admin->add_subcommand(
      "agent-token", "Print a join token: fuji-agent --join-token T enrolls with it until it expires");
  token->add_option("--expires", tf->expires, "How long it lets agents enroll: 30m, 1h (default), 720h at most");
  AddServerOption(token, &tf->server);
  token->callback([state, tf] {
    auto ms = ParseDurationMs(tf->expires);
    if (!ms.ok()) {
      state->exit_code = ReportStatus(ms.status().WithContext("--expires"));
      return;
    }
    if (*ms <= 0) {
      state->exit_code = ReportStatus(InvalidArgument("--expires must be longer than 0"));
      return;
    }
    DaemonClient client(tf->server);
    auto made = client.CreateJoinToken(*ms);
    if (!made.ok()) {
      state->exit_code = ReportStatus(made.status());
      return;
    }
    std::printf("%s\n", made->token().c_str());
    std::fflush(stdout);
    std::fprintf(stderr, "agents may enroll with the join token above until %s\n",
                 FormatLocalTime(made->expires_at_ms()).c_str());
  });

  CLI::App* agent = admin->add_subcommand("agent", "Enrolled agents");
  agent->require_subcommand(1);
  struct ListFlags {
    ServerFlags server;
    std::string output = "table";
  };
  auto lf = std::make_shared<ListFlags>();
  CLI::App* list = agent->add_subcommand("list", "Every enrolled agent, revoked ones too");
  AddServerOption(list, &lf->server);
  list->add_option("--output", lf->output, "table or json")->check(CLI::IsMember({"table", "json"}));
  list->callback([state, lf] {
    DaemonClient client(lf->server);
    auto agents = client.ListAgents();
    if (!agents.ok()) {
      state->exit_code = ReportStatus(agents.status());
      return;
    }
    if (lf->output == "json") {
      nlohmann::json list = nlohmann::json::array();
      for (const v1::Agent& a : *agents) {
        list.push_back({{"worker_id", a.worker_id()}, {"enrolled_at_ms", a.enrolled_at_ms()},
                        {"revoked_at_ms", a.revoked_at_ms()}, {"drained_at_ms", a.drained_at_ms()},
                        {"drain", DrainWord(a.drained_at_ms(), a.running_jobs())}, {"drain_requeue", a.drain_requeue()},
                        {"running_jobs", a.running_jobs()}});
      }
      PrintJson({{"agents", list}});
      return;
    }
    std::vector<std::vector<std::string>> rows;
    for (const v1::Agent& a : *agents) {
      rows.push_back({a.worker_id(), TimeOrDash(a.enrolled_at_ms()), TimeOrDash(a.revoked_at_ms()),
                      a.drained_at_ms() > 0 ? DrainWord(a.drained_at_ms(), a.running_jobs()) + " since " +
                                                  FormatLocalTime(a.drained_at_ms()) +
                                                  (a.drain_requeue() ? " (requeue)" : "")
                                            : "-"});
    }
    PrintText(RenderTable({"WORKER", "ENROLLED", "REVOKED", "DRAINED"}, rows));
  });

  struct RevokeFlags {
    ServerFlags server;
    std::string worker_id;
  };
  auto rf = std::make_shared<RevokeFlags>();
  CLI::App* revoke = agent->add_subcommand(
      "revoke", "Revoke an agent's credential: its next call fails, and the worker id may enroll again");
  revoke->add_option("worker_id", rf->worker_id, "The agent's worker id")->required();
  AddServerOption(revoke, &rf->server);
  revoke->callback([state, rf] {
    DaemonClient client(rf->server);
    auto agent = client.RevokeAgent(rf->worker_id);
    if (!agent.ok()) {
      state->exit_code = ReportStatus(agent.status());
      return;
    }
    std::printf("agent %s revoked\n", agent->worker_id().c_str());
  });

  RegisterDrainCommands(agent, state);
}

// Writes a backup streamed from fujid to `path`, which must not exist: into a new private file
// beside it (O_EXCL|O_NOFOLLOW, 0600), checked against the size fujid announced, fsynced, then
// renamed to path without replacing anything there. Returns the bytes written.
Result<int64_t> WriteBackup(DaemonClient& client, const std::string& path) {
  struct stat st {};
  if (::lstat(path.c_str(), &st) == 0) return AlreadyExists(path + " exists; a backup never replaces a file");
  const std::filesystem::path target(path);
  const std::string dir = target.has_parent_path() ? target.parent_path().string() : ".";
  const std::string partial = dir + "/." + target.filename().string() + ".partial-" + RandomHex64();
  FUJI_ASSIGN_OR_RETURN(int fd, CreateExclusiveFile(partial, 0600));
  int64_t written = 0, total = -1;
  Status status = client.Backup([&](const v1::BackupChunk& chunk) -> Status {
    if (total < 0) total = chunk.total_bytes();
    if (chunk.total_bytes() != total || written + static_cast<int64_t>(chunk.data().size()) > total) {
      return Internal("fujid sent more of the backup than it announced");
    }
    for (size_t done = 0; done < chunk.data().size();) {
      const ssize_t n = ::write(fd, chunk.data().data() + done, chunk.data().size() - done);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) return Internal("writing " + partial + ": " + ErrnoMessage());
      done += static_cast<size_t>(n);
    }
    written += static_cast<int64_t>(chunk.data().size());
    return Status::Ok();
  });
  if (status.ok() && written != total) status = Internal("the backup ended early: " + std::to_string(written) +
                                                         " of " + std::to_string(total) + " bytes");
  if (status.ok() && ::fsync(fd) != 0) status = Internal("fsync " + partial + ": " + ErrnoMessage());
  ::close(fd);
  if (status.ok() && ::renameat2(AT_FDCWD, partial.c_str(), AT_FDCWD, path.c_str(), RENAME_NOREPLACE) != 0) {
    status = errno == EEXIST ? AlreadyExists(path + " appeared meanwhile; a backup never replaces a file")
                             : Internal("rename to " + path + ": " + ErrnoMessage());
  }
  if (!status.ok()) {
    ::unlink(partial.c_str());
    return status;
  }
  // The rename itself is durable once the directory is.
  if (int dir_fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC); dir_fd >= 0) {
    ::fsync(dir_fd);
    ::close(dir_fd);
  }
  return written;
}

void RegisterBackup(CLI::App* admin, CliState* state) {
  struct Flags {
    ServerFlags server;
    std::string path;
  };
  auto f = std::make_shared<Flags>();
  CLI::App* cmd = admin->add_subcommand(
      "backup", "Copy fujid's database as of now into FILE (new, 0600) while fujid runs; fujid --db FILE starts from it");
  cmd->add_option("file", f->path, "Where the copy goes; must not exist")->required();
  AddServerOption(cmd, &f->server);
  cmd->callback([state, f] {
    DaemonClient client(f->server);
    auto written = WriteBackup(client, f->path);
    if (!written.ok()) {
      state->exit_code = ReportStatus(written.status());
      return;
    }
    std::printf("backup of fujid's database in %s (%lld bytes)\n", f->path.c_str(), static_cast<long long>(*written));
  });
}

}  // namespace

void RegisterAdminCommands(CLI::App& app, CliState* state) {
  RegisterLogin(app, state);
  RegisterWhoami(app, state);
  CLI::App* admin = app.add_subcommand("admin", "Users, tokens, agents and backups (an admin's token)");
  admin->require_subcommand(1);
  RegisterUserCommands(admin, state);
  RegisterAgentCommands(admin, state);
  RegisterDrainCommands(admin, state);
  RegisterBackup(admin, state);
}

}  // namespace fuji::client
