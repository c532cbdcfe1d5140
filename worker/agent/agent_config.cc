// Parsing of fuji-agent's flags that need more than CLI11: the device flag, the host name.
#include "worker/agent/agent_config.h"

#include <unistd.h>

#include <cerrno>
#include <cstdlib>

namespace fuji::agent {

Result<DeviceFlag> ParseDeviceFlag(const std::string& text) {
  const std::string usage = "--devices: expected 'auto' or 'cpu:N' with 1 <= N <= 1024, got '" + text + "'";
  DeviceFlag flag;
  if (text == "auto") return flag;
  if (text.rfind("cpu:", 0) != 0) return InvalidArgument(usage);
  const std::string count = text.substr(4);
  if (count.empty() || count.size() > 4 || count.find_first_not_of("0123456789") != std::string::npos) {
    return InvalidArgument(usage);
  }
  const long n = std::strtol(count.c_str(), nullptr, 10);
  if (n < 1 || n > 1024) return InvalidArgument(usage);
  flag.auto_detect = false;
  flag.cpu_count = static_cast<int>(n);
  return flag;
}

Status CheckAdvertiseAddr(const std::string& text) {
  static const char kAllowed[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-:";
  if (text.size() > 253 || text.find_first_not_of(kAllowed) != std::string::npos ||
      (!text.empty() && (text.front() == '-' || text.front() == '.'))) {
    return InvalidArgument("--advertise-addr: expected an IP address or host name, got '" + text.substr(0, 300) + "'");
  }
  return Status::Ok();
}

Result<std::pair<int, int>> ParseGangPorts(const std::string& text) {
  const std::string usage =
      "--gang-ports: expected LO-HI with 1 <= LO <= HI <= 65535, got '" + text.substr(0, 100) + "'";
  const size_t dash = text.find('-');
  if (dash == std::string::npos) return InvalidArgument(usage);
  auto port = [](const std::string& p) -> long {
    if (p.empty() || p.size() > 5 || p.find_first_not_of("0123456789") != std::string::npos) return -1;
    return std::strtol(p.c_str(), nullptr, 10);
  };
  const long lo = port(text.substr(0, dash)), hi = port(text.substr(dash + 1));
  if (lo < 1 || hi > 65535 || lo > hi) return InvalidArgument(usage);
  return std::make_pair(static_cast<int>(lo), static_cast<int>(hi));
}

std::string HostName() {
  char name[256] = {};
  if (::gethostname(name, sizeof(name) - 1) != 0 || name[0] == '\0') return "localhost";
  return name;
}

}  // namespace fuji::agent
