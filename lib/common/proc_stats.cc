// /proc readers.
#include "lib/common/proc_stats.h"

#include <sched.h>

#include <cstdio>
#include <cstring>
#include <fstream>
#include <string>

namespace fuji {
namespace {

// Reads "<key>: <value> kB" from a /proc file, in bytes.
int64_t ReadKilobytes(const std::string& path, const char* key) {
  std::ifstream in(path);
  std::string line;
  const size_t key_len = std::strlen(key);
  while (std::getline(in, line)) {
    if (line.compare(0, key_len, key) == 0 && line.size() > key_len && line[key_len] == ':') {
      return std::stoll(line.substr(key_len + 1)) * 1024;
    }
  }
  return 0;
}

}  // namespace

int UsableCores() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof set, &set) != 0) return 1;
  const int n = CPU_COUNT(&set);
  return n > 0 ? n : 1;
}

int64_t PeakRssBytes() { return ReadKilobytes("/proc/self/status", "VmHWM"); }

int64_t RssBytes(pid_t pid) {
  return ReadKilobytes("/proc/" + std::to_string(pid) + "/status", "VmRSS");
}

int64_t OomKillCount() {
  std::ifstream in("/proc/vmstat");
  std::string key;
  int64_t value = 0;
  while (in >> key >> value) {
    if (key == "oom_kill") return value;
  }
  return -1;
}

HostMemory ReadHostMemory() {
  return {ReadKilobytes("/proc/meminfo", "MemTotal"), ReadKilobytes("/proc/meminfo", "MemAvailable")};
}

}  // namespace fuji
