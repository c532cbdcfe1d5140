// The nodes' measured rates; see node_rates.h.
#include "daemon/server/node_rates.h"

#include <nlohmann/json.hpp>

namespace fuji::daemon {

void NodeRates::Read(const std::string& rates_json, Node* node) {
  if (rates_json.empty() || rates_json.size() > 4096) return;
  const nlohmann::json j = nlohmann::json::parse(rates_json, nullptr, /*allow_exceptions=*/false);
  Result<plan::Throughput> rates = plan::RatesFromJson(j, plan::kThroughput);
  if (!rates.ok()) return;
  node->rates = *rates;
  node->measured = true;
}

void NodeRates::Register(const std::string& worker_id, bool has_gpus, const std::string& rates_json) {
  std::lock_guard<std::mutex> lock(mu_);
  Node& node = nodes_[worker_id];
  node.has_gpus = has_gpus;
  Read(rates_json, &node);
}

void NodeRates::Heartbeat(const std::string& worker_id, const std::string& rates_json) {
  if (rates_json.empty()) return;
  std::lock_guard<std::mutex> lock(mu_);
  const auto it = nodes_.find(worker_id);
  if (it != nodes_.end()) Read(rates_json, &it->second);
}

plan::Throughput NodeRates::For(bool gpus) const {
  std::lock_guard<std::mutex> lock(mu_);
  const Node* slowest = nullptr;
  for (const auto& [id, node] : nodes_) {
    if (node.has_gpus != gpus || !node.measured) continue;
    if (slowest == nullptr || node.rates.cpu_flops < slowest->rates.cpu_flops) slowest = &node;
  }
  return slowest != nullptr ? slowest->rates : plan::kThroughput;
}

}  // namespace fuji::daemon
