// NodeRates: the rates each agent measured on its node (RegisterRequest/HeartbeatRequest
// rates_json, from fuji-rank's calibration), for the planner's step times at submit. A job is
// planned before it is placed, so it is planned with the rates of the slowest node that has its
// kind of device (CPU or GPU): its predicted step time then holds wherever it lands.
#pragma once

#include <map>
#include <mutex>
#include <string>

#include "lib/plan/plan.h"

namespace fuji::daemon {

// Thread-safe.
class NodeRates {
 public:
  // At Register: the node's kind and its rates (rates_json as the agent sent it; "" until the
  // agent has measured them; malformed ones are ignored).
  void Register(const std::string& worker_id, bool has_gpus, const std::string& rates_json);
  // At Heartbeat: rates measured since the node registered (ignored for an unknown node).
  void Heartbeat(const std::string& worker_id, const std::string& rates_json);
  // The rates to plan a job on `gpus` (true) or CPU devices with: of the nodes of that kind that
  // measured theirs, the one with the lowest compute rate; plan::kThroughput when there is none.
  plan::Throughput For(bool gpus) const;

 private:
  struct Node {
    bool has_gpus = false;
    bool measured = false;
    plan::Throughput rates;
  };
  // Parses rates_json into node (unchanged when empty or malformed). Takes no lock.
  static void Read(const std::string& rates_json, Node* node);
  mutable std::mutex mu_;
  std::map<std::string, Node> nodes_;
};

}  // namespace fuji::daemon
