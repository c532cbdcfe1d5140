// MetricsCollector: what fujid shows Prometheus. The families are defined once at start; counters
// and histograms are updated where things happen (submits, transitions, passes, RPCs, commits),
// and the gauges of the present (jobs by state, agents, devices, running jobs' progress) are read
// afresh from the store and the dispatcher at each scrape, so a job that ended or an agent that
// left drops out at the next one.
#pragma once

#include <mutex>
#include <string>

#include "daemon/server/dispatcher.h"
#include "daemon/server/metrics.h"
#include "daemon/store/job_store.h"

namespace fuji::daemon {

// Most jobs read per scrape to count fuji_jobs (pages of 1,000); past it the counts are partial
// and fuji_jobs_counted_partial is 1.
inline constexpr int kMaxScrapedJobs = 1'000'000;
// Most running jobs given per-job series at a scrape.
inline constexpr int kMaxScrapedRunningJobs = 1000;

// Defines every family fujid exports in `registry`. Idempotent.
void DefineDaemonMetrics(metrics::Registry& registry);

// Thread-safe: scrapes are serialized. store, dispatcher and registry are not owned and outlive it.
class MetricsCollector {
 public:
  MetricsCollector(store::JobStore* store, Dispatcher* dispatcher, metrics::Registry* registry);
  // Refreshes the gauges of the present, then renders the registry (text format 0.0.4).
  std::string Scrape();

 private:
  void CollectJobs();
  void CollectAgents();

  store::JobStore* store_;
  Dispatcher* dispatcher_;
  metrics::Registry* registry_;
  std::mutex mu_;  // one scrape at a time
};

}  // namespace fuji::daemon
