// Process and host facts read from /proc and the scheduler: usable cores, resident memory.
#pragma once

#include <cstdint>
#include <sys/types.h>

namespace fuji {

// CPUs this process may run on (sched_getaffinity), at least 1.
int UsableCores();
// Peak resident set size of this process (VmHWM), in bytes; 0 if unknown.
int64_t PeakRssBytes();
// Current resident set size of a process (VmRSS), in bytes; 0 if it is gone.
int64_t RssBytes(pid_t pid);

struct HostMemory {
  int64_t total_bytes = 0;
  int64_t available_bytes = 0;
};
HostMemory ReadHostMemory();
// Processes the kernel's OOM killer has killed since boot (/proc/vmstat oom_kill, cgroup limits
// included); -1 when the kernel does not say.
int64_t OomKillCount();

}  // namespace fuji
