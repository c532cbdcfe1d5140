// Metrics: fujid's Prometheus registry. Counters, gauges and histograms keyed by label values,
// rendered in the Prometheus text exposition format 0.0.4. Bounded: a label value is cut to
// kMaxLabelBytes, and a family holds at most its max_series series (a new series past that is
// dropped and counted in fuji_metrics_dropped_series_total), so a stream of job ids or worker
// names cannot grow fujid's memory or a scrape without end.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

namespace fuji::metrics {

enum class Type { kCounter, kGauge, kHistogram };

inline constexpr size_t kMaxLabelBytes = 128;
inline constexpr size_t kDefaultMaxSeries = 10000;

// Bucket upper bounds (seconds) for latencies from 100 µs to a minute, and for queue waits and
// run times from a second to a day.
std::vector<double> LatencyBuckets();
std::vector<double> DurationBuckets();

// A label value as the exposition format writes it between quotes: \ " and newline escaped.
std::string EscapeLabelValue(std::string_view value);
// A sample value: integers without a fraction, +Inf/-Inf/NaN by their names.
std::string FormatValue(double value);

// Thread-safe: every method may be called from any thread. Updating a series of a family that
// was not defined (or with the wrong number of labels) does nothing: a metric never fails a call.
class Registry {
 public:
  // Defines a family once; later definitions of the same name are ignored. Histograms need
  // ascending buckets (+Inf is implied).
  void Define(const std::string& name, Type type, const std::string& help,
              std::vector<std::string> label_names, std::vector<double> buckets = {},
              size_t max_series = kDefaultMaxSeries);

  void Add(const std::string& name, const std::vector<std::string>& labels, double delta = 1);
  void Set(const std::string& name, const std::vector<std::string>& labels, double value);
  void Observe(const std::string& name, const std::vector<std::string>& labels, double value);
  // Forgets one series, or every series of a family (gauges rebuilt at each scrape).
  void Remove(const std::string& name, const std::vector<std::string>& labels);
  void Clear(const std::string& name);

  // The label values of every series of a family (as kept: cut).
  std::vector<std::vector<std::string>> SeriesOf(const std::string& name) const;
  // The value of a counter or gauge series; 0 when absent. For tests.
  double Value(const std::string& name, const std::vector<std::string>& labels) const;

  // Every family, by name, in the text format (version 0.0.4).
  std::string Text() const;

  // fujid's registry: the store's writer and the daemon share it.
  static Registry& Default();

 private:
  struct Series {
    double value = 0;              // counters and gauges
    std::vector<uint64_t> counts;  // histograms: per bucket (not cumulative), +Inf last
    double sum = 0;
    uint64_t count = 0;
  };
  struct Family {
    Type type = Type::kGauge;
    std::string help;
    std::vector<std::string> label_names;
    std::vector<double> buckets;
    size_t max_series = kDefaultMaxSeries;
    std::map<std::vector<std::string>, Series> series;
  };
  // The series of `labels` (cut to kMaxLabelBytes), made when there is room; null otherwise.
  Series* Find(const std::string& name, const std::vector<std::string>& labels, Type type);

  mutable std::mutex mu_;
  std::map<std::string, Family> families_;  // guarded by mu_
  uint64_t dropped_series_ = 0;             // guarded by mu_
};

}  // namespace fuji::metrics
