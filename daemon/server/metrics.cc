// Registry and the Prometheus text format; see metrics.h.
#include "daemon/server/metrics.h"

#include <cmath>
#include <cstdio>
#include <cstdlib>

namespace fuji::metrics {
namespace {

const char* TypeName(Type type) {
  switch (type) {
    case Type::kCounter: return "counter";
    case Type::kGauge: return "gauge";
    case Type::kHistogram: return "histogram";
  }
  return "untyped";
}

// Cut to kMaxLabelBytes, never inside a UTF-8 sequence.
std::string Cut(const std::string& value) {
  if (value.size() <= kMaxLabelBytes) return value;
  size_t end = kMaxLabelBytes;
  while (end > 0 && (static_cast<unsigned char>(value[end]) & 0xC0) == 0x80) --end;
  return value.substr(0, end);
}

// HELP text escapes only \ and newline.
std::string EscapeHelp(std::string_view help) {
  std::string out;
  for (char c : help) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out;
}

// {a="x",b="y"} with `extra` (le="...") last; "" with no labels at all.
std::string LabelText(const std::vector<std::string>& names, const std::vector<std::string>& values,
                      const std::string& extra = "") {
  std::string out;
  for (size_t i = 0; i < names.size(); ++i) {
    out += out.empty() ? "{" : ",";
    out += names[i] + "=\"" + EscapeLabelValue(values[i]) + "\"";
  }
  if (!extra.empty()) out += (out.empty() ? "{" : ",") + extra;
  if (!out.empty()) out += "}";
  return out;
}

}  // namespace

std::vector<double> LatencyBuckets() {
  return {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
          0.1,    0.25,    0.5,    1,     2.5,    5,     10,   60};
}

std::vector<double> DurationBuckets() {
  return {1, 5, 15, 30, 60, 300, 900, 1800, 3600, 3 * 3600, 6 * 3600, 12 * 3600, 24 * 3600};
}

std::string EscapeLabelValue(std::string_view value) {
  std::string out;
  out.reserve(value.size());
  for (char c : value) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '"') {
      out += "\\\"";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out;
}

std::string FormatValue(double value) {
  if (std::isnan(value)) return "NaN";
  if (std::isinf(value)) return value > 0 ? "+Inf" : "-Inf";
  if (value == std::floor(value) && std::fabs(value) < 1e15) {
    return std::to_string(static_cast<int64_t>(value));
  }
  // The shortest form that reads back as the same double (0.1, not 0.10000000000000001).
  char buffer[32];
  for (int precision = 1; precision <= 17; ++precision) {
    std::snprintf(buffer, sizeof buffer, "%.*g", precision, value);
    if (std::strtod(buffer, nullptr) == value) break;
  }
  return buffer;
}

void Registry::Define(const std::string& name, Type type, const std::string& help,
                      std::vector<std::string> label_names, std::vector<double> buckets,
                      size_t max_series) {
  std::lock_guard<std::mutex> lock(mu_);
  if (families_.count(name)) return;
  Family& family = families_[name];
  family.type = type;
  family.help = help;
  family.label_names = std::move(label_names);
  family.buckets = std::move(buckets);
  family.max_series = max_series;
}

Registry::Series* Registry::Find(const std::string& name, const std::vector<std::string>& labels,
                                 Type type) {
  auto f = families_.find(name);
  if (f == families_.end() || f->second.type != type ||
      f->second.label_names.size() != labels.size()) {
    return nullptr;
  }
  Family& family = f->second;
  std::vector<std::string> key;
  key.reserve(labels.size());
  for (const std::string& label : labels) key.push_back(Cut(label));
  auto s = family.series.find(key);
  if (s != family.series.end()) return &s->second;
  if (family.series.size() >= family.max_series) {
    ++dropped_series_;
    return nullptr;
  }
  Series& series = family.series[std::move(key)];
  if (type == Type::kHistogram) series.counts.assign(family.buckets.size() + 1, 0);
  return &series;
}

void Registry::Add(const std::string& name, const std::vector<std::string>& labels, double delta) {
  std::lock_guard<std::mutex> lock(mu_);
  if (Series* series = Find(name, labels, Type::kCounter)) series->value += delta;
}

void Registry::Set(const std::string& name, const std::vector<std::string>& labels, double value) {
  std::lock_guard<std::mutex> lock(mu_);
  if (Series* series = Find(name, labels, Type::kGauge)) series->value = value;
}

void Registry::Observe(const std::string& name, const std::vector<std::string>& labels,
                       double value) {
  std::lock_guard<std::mutex> lock(mu_);
  Series* series = Find(name, labels, Type::kHistogram);
  if (series == nullptr) return;
  const std::vector<double>& buckets = families_[name].buckets;
  size_t bucket = 0;
  while (bucket < buckets.size() && value > buckets[bucket]) ++bucket;
  ++series->counts[bucket];
  series->sum += value;
  ++series->count;
}

void Registry::Remove(const std::string& name, const std::vector<std::string>& labels) {
  std::lock_guard<std::mutex> lock(mu_);
  auto f = families_.find(name);
  if (f == families_.end()) return;
  std::vector<std::string> key;
  for (const std::string& label : labels) key.push_back(Cut(label));
  f->second.series.erase(key);
}

void Registry::Clear(const std::string& name) {
  std::lock_guard<std::mutex> lock(mu_);
  auto f = families_.find(name);
  if (f != families_.end()) f->second.series.clear();
}

std::vector<std::vector<std::string>> Registry::SeriesOf(const std::string& name) const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<std::vector<std::string>> keys;
  auto f = families_.find(name);
  if (f == families_.end()) return keys;
  for (const auto& [labels, series] : f->second.series) keys.push_back(labels);
  return keys;
}

double Registry::Value(const std::string& name, const std::vector<std::string>& labels) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto f = families_.find(name);
  if (f == families_.end()) return 0;
  std::vector<std::string> key;
  for (const std::string& label : labels) key.push_back(Cut(label));
  auto s = f->second.series.find(key);
  return s == f->second.series.end() ? 0 : s->second.value;
}

std::string Registry::Text() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::string out;
  for (const auto& [name, family] : families_) {
    out += "# HELP " + name + " " + EscapeHelp(family.help) + "\n";
    out += "# TYPE " + name + " " + TypeName(family.type) + "\n";
    for (const auto& [labels, series] : family.series) {
      if (family.type != Type::kHistogram) {
        out +=
            name + LabelText(family.label_names, labels) + " " + FormatValue(series.value) + "\n";
        continue;
      }
      uint64_t cumulative = 0;
      for (size_t i = 0; i <= family.buckets.size(); ++i) {
        cumulative += series.counts[i];
        const std::string le = i < family.buckets.size() ? FormatValue(family.buckets[i]) : "+Inf";
        out += name + "_bucket" + LabelText(family.label_names, labels, "le=\"" + le + "\"") + " " +
               std::to_string(cumulative) + "\n";
      }
      out += name + "_sum" + LabelText(family.label_names, labels) + " " + FormatValue(series.sum) +
             "\n";
      out += name + "_count" + LabelText(family.label_names, labels) + " " +
             std::to_string(series.count) + "\n";
    }
  }
  out +=
      "# HELP fuji_metrics_dropped_series_total Series not kept because their family was full.\n";
  out += "# TYPE fuji_metrics_dropped_series_total counter\n";
  out += "fuji_metrics_dropped_series_total " + std::to_string(dropped_series_) + "\n";
  return out;
}

Registry& Registry::Default() {
  static Registry* registry = new Registry();
  return *registry;
}

}  // namespace fuji::metrics
