// `fuji usage`: what jobs used, from fujid's database, like Slurm's sreport: device-hours, jobs,
// attempts and tokens, grouped by user, model or kind.
#include <ctime>
#include <memory>

#include "client/cli.h"
#include "client/daemon_client.h"
#include "client/daemon_commands.h"
#include "lib/common/duration.h"

namespace fuji::client {
namespace {

constexpr int64_t kDayMs = int64_t{24} * 3600 * 1000;
constexpr int64_t kMaxSinceDays = 100 * 366;

// "30d", "2w" or what ParseDurationMs takes ("12h", "90m", "30s"), as milliseconds.
Result<int64_t> ParseSince(const std::string& text) {
  const char unit = text.empty() ? '\0' : text.back();
  if (unit == 'd' || unit == 'w') {
    const std::string number = text.substr(0, text.size() - 1);
    if (number.empty() || number.size() > 6 || number.find_first_not_of("0123456789") != std::string::npos) {
      return InvalidArgument("--since '" + text.substr(0, 32) + "': a number then d, w, h, m or s (30d, 12h)");
    }
    const int64_t days = std::stoll(number) * (unit == 'w' ? 7 : 1);
    if (days > kMaxSinceDays) return InvalidArgument("--since covers at most " + std::to_string(kMaxSinceDays) + " days");
    return days * kDayMs;
  }
  Result<int64_t> ms = ParseDurationMs(text);
  if (!ms.ok()) return ms.status().WithContext("--since");
  return ms;
}

std::string UtcTime(int64_t ms) {
  const std::time_t seconds = static_cast<std::time_t>(ms / 1000);
  std::tm tm{};
  ::gmtime_r(&seconds, &tm);
  char text[32];
  std::strftime(text, sizeof text, "%Y-%m-%d %H:%M UTC", &tm);
  return text;
}

nlohmann::json UsageJson(const v1::UsageResponse& response, const std::string& by) {
  nlohmann::json rows = nlohmann::json::array();
  for (const v1::UsageRow& row : response.rows()) {
    rows.push_back({{"key", row.key()},
                    {"jobs", row.jobs()},
                    {"attempts", row.attempts()},
                    {"device_ms", row.device_ms()},
                    {"device_hours", row.device_hours()},
                    {"tokens", row.tokens()}});
  }
  return {{"since_ms", response.since_ms()}, {"until_ms", response.until_ms()}, {"by", by}, {"rows", rows}};
}

// sreport's shape: a title line, a header, one line per group, and the total.
void PrintUsageTable(const v1::UsageResponse& response, const std::string& by, const std::string& since) {
  std::printf("Usage from %s to %s (%s), by %s\n", UtcTime(response.since_ms()).c_str(),
              UtcTime(response.until_ms()).c_str(), since.c_str(), by.c_str());
  int width = static_cast<int>(by.size());
  for (const v1::UsageRow& row : response.rows()) width = std::max(width, static_cast<int>(row.key().size()));
  width = std::min(width, 60);
  std::string header = by;
  for (char& c : header) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  std::printf("%-*s %8s %9s %13s %14s\n", width, header.c_str(), "JOBS", "ATTEMPTS", "DEVICE-HOURS", "TOKENS");
  int64_t jobs = 0, attempts = 0, device_ms = 0, tokens = 0;
  for (const v1::UsageRow& row : response.rows()) {
    const std::string key = row.key().empty() ? "-" : row.key().substr(0, 60);
    std::printf("%-*s %8lld %9lld %13.2f %14lld\n", width, key.c_str(), static_cast<long long>(row.jobs()),
                static_cast<long long>(row.attempts()), row.device_hours(), static_cast<long long>(row.tokens()));
    jobs += row.jobs();
    attempts += row.attempts();
    device_ms += row.device_ms();
    tokens += row.tokens();
  }
  std::printf("%-*s %8lld %9lld %13.2f %14lld\n", width, "TOTAL", static_cast<long long>(jobs),
              static_cast<long long>(attempts), static_cast<double>(device_ms) / 3.6e6,
              static_cast<long long>(tokens));
}

}  // namespace

void RegisterUsageCommands(CLI::App& app, CliState* state) {
  struct Flags {
    ServerFlags server;
    std::string since = "30d", by = "user";
    bool all = false, json = false;
  };
  auto f = std::make_shared<Flags>();
  CLI::App* cmd = app.add_subcommand("usage", "Device-hours, jobs and tokens by user, model or kind (like sreport)");
  cmd->footer(
      "Counted from fujid's records, for the jobs submitted in the window: JOBS; ATTEMPTS placed on devices; "
      "DEVICE-HOURS, each attempt from its placement to its end (or now while it runs) times the job's devices, "
      "so loading counts and queueing does not; TOKENS, an inference's prompt and generated tokens and a "
      "fine-tune's tokens trained, of each attempt that left a result.");
  AddServerOption(cmd, &f->server);
  cmd->add_option("--since", f->since, "The window: jobs submitted this long ago or later (30d, 2w, 12h, 90m)")
      ->capture_default_str();
  cmd->add_option("--by", f->by, "Group by user, model or kind")
      ->check(CLI::IsMember({"user", "model", "kind"}))
      ->capture_default_str();
  cmd->add_flag("--all", f->all, "Every user's jobs (admins only; else your own)");
  cmd->add_flag("--json", f->json, "JSON instead of a table");
  cmd->callback([state, f] {
    Result<int64_t> window = ParseSince(f->since);
    if (!window.ok()) {
      state->exit_code = ReportStatus(window.status());
      return;
    }
    v1::UsageRequest request;
    request.set_since_ms(std::max<int64_t>(0, WallClockMs() - *window));
    request.set_by(f->by);
    request.set_all(f->all);
    DaemonClient client(f->server);
    Result<v1::UsageResponse> response = client.Usage(request);
    if (!response.ok()) {
      state->exit_code = ReportStatus(response.status());
      return;
    }
    if (f->json) {
      PrintJson(UsageJson(*response, f->by));
    } else {
      PrintUsageTable(*response, f->by, f->since);
    }
  });
}

}  // namespace fuji::client
