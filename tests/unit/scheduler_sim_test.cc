// Simulations of many scheduling passes over a fake cluster in fake time: a big job is not starved
// by a stream of small ones, and under random arrivals, finishes and disconnects no device is ever
// over-committed and every satisfiable job eventually runs.
#include <algorithm>
#include <map>
#include <random>
#include <set>

#include <gtest/gtest.h>

#include "daemon/scheduler/scheduler.h"

namespace fuji::sched {
namespace {

// Agents, their running jobs and the queue. The daemon's role: it applies each pass's placements,
// finishes jobs when their (actual) run is over, and requeues the jobs of a lost agent.
class FakeCluster {
 public:
  void AddAgent(const std::string& worker_id, int devices, const std::string& kind, bool shareable,
                int64_t total_mib = 16000) {
    AgentView agent;
    agent.worker_id = worker_id;
    agent.device_kind = kind;
    for (int i = 0; i < devices; ++i) {
      agent.devices.push_back({i, total_mib, total_mib, {}, shareable});
    }
    agents_.push_back(agent);
  }

  void Submit(const JobRequest& job, int64_t actual_run_ms) {
    queue_.push_back(job);
    actual_run_ms_[job.id] = actual_run_ms;
  }

  PassResult Pass(int64_t now_ms) {
    std::vector<RunningJob> running;
    for (const auto& [id, job] : running_) {
      running.push_back({id, job.request.shareable,
                         job.request.estimated_run_ms == kUnknownMs
                             ? kUnknownMs
                             : job.start_ms + job.request.estimated_run_ms});
    }
    PassResult result = Schedule(queue_, agents_, running, now_ms);
    EXPECT_EQ(result.placements.size() + result.waiting_reasons.size(), queue_.size());
    for (const Placement& placement : result.placements) Start(placement, now_ms);
    CheckCapacity();
    return result;
  }

  // Ends the jobs whose run is over; returns their ids.
  std::vector<int64_t> FinishDue(int64_t now_ms) {
    std::vector<int64_t> done;
    for (const auto& [id, job] : running_) {
      if (job.start_ms + actual_run_ms_.at(id) <= now_ms) done.push_back(id);
    }
    for (int64_t id : done) Remove(id);
    return done;
  }

  // Disconnects an agent; its jobs go back to the queue, as the daemon does when a lease expires.
  void Disconnect(size_t agent_index) {
    AgentView& agent = agents_[agent_index];
    agent.connected = false;
    std::set<int64_t> lost;
    for (const DeviceView& device : agent.devices) {
      lost.insert(device.jobs.begin(), device.jobs.end());
    }
    for (int64_t id : lost) {
      queue_.push_back(running_.at(id).request);
      Remove(id);
    }
  }

  std::vector<AgentView>& agents() { return agents_; }
  const std::vector<JobRequest>& queue() const { return queue_; }
  const std::map<int64_t, int64_t>& started_at() const { return started_at_; }
  size_t running() const { return running_.size(); }

 private:
  struct Running {
    JobRequest request;
    std::string worker_id;
    std::vector<int> devices;
    int64_t start_ms;
  };

  void Start(const Placement& placement, int64_t now_ms) {
    const auto queued = std::find_if(queue_.begin(), queue_.end(),
                                     [&](const JobRequest& j) { return j.id == placement.job_id; });
    ASSERT_NE(queued, queue_.end()) << "placed a job that is not queued: " << placement.job_id;
    const JobRequest job = *queued;
    queue_.erase(queued);
    const auto agent = std::find_if(agents_.begin(), agents_.end(), [&](const AgentView& a) {
      return a.worker_id == placement.worker_id;
    });
    ASSERT_NE(agent, agents_.end());
    EXPECT_TRUE(agent->connected);
    EXPECT_EQ(agent->device_kind, job.device_kind);
    ASSERT_EQ(static_cast<int>(placement.device_indices.size()), job.devices);
    std::set<int> distinct(placement.device_indices.begin(), placement.device_indices.end());
    EXPECT_EQ(distinct.size(), placement.device_indices.size());
    for (int index : placement.device_indices) {
      ASSERT_GE(index, 0);
      ASSERT_LT(index, static_cast<int>(agent->devices.size()));
      DeviceView& device = agent->devices[static_cast<size_t>(index)];
      device.jobs.push_back(job.id);
      device.free_mib -= job.memory_mib;
    }
    running_[job.id] = {job, placement.worker_id, placement.device_indices, now_ms};
    started_at_.emplace(job.id, now_ms);
  }

  void Remove(int64_t id) {
    const Running& job = running_.at(id);
    for (AgentView& agent : agents_) {
      if (agent.worker_id != job.worker_id) continue;
      for (int index : job.devices) {
        DeviceView& device = agent.devices[static_cast<size_t>(index)];
        device.jobs.erase(std::find(device.jobs.begin(), device.jobs.end(), id));
        device.free_mib += job.request.memory_mib;
      }
    }
    running_.erase(id);
  }

  // A device holds one job, or several that all share and whose memory fits it.
  void CheckCapacity() const {
    for (const AgentView& agent : agents_) {
      for (const DeviceView& device : agent.devices) {
        if (device.jobs.size() <= 1) continue;
        EXPECT_TRUE(device.shareable) << agent.worker_id << ":" << device.index;
        int64_t memory = 0;
        for (int64_t id : device.jobs) {
          const JobRequest& job = running_.at(id).request;
          EXPECT_TRUE(job.shareable && job.memory_mib > 0) << "job " << id;
          memory += job.memory_mib;
        }
        EXPECT_LE(memory, device.total_mib) << agent.worker_id << ":" << device.index;
      }
    }
  }

  std::vector<AgentView> agents_;
  std::vector<JobRequest> queue_;
  std::map<int64_t, Running> running_;
  std::map<int64_t, int64_t> actual_run_ms_;
  std::map<int64_t, int64_t> started_at_;
};

JobRequest Job(int64_t id, int devices, int64_t estimated_run_ms) {
  JobRequest job;
  job.id = id;
  job.devices = devices;
  job.estimated_run_ms = estimated_run_ms;
  return job;
}

TEST(SchedulerSimTest, ReservationKeepsABigJobFromStarving) {
  FakeCluster cluster;
  cluster.AddAgent("node-a", 4, "cpu", false);
  std::mt19937 rng(7);
  std::uniform_int_distribution<int64_t> small_run(2'000, 8'000);
  constexpr int64_t kPassMs = 1'000;
  constexpr int64_t kBigRunMs = 10'000;
  std::map<int64_t, int64_t> big_submitted;  // id -> time
  int64_t next_id = 1;
  for (int64_t now = 0; now < 400'000; now += kPassMs) {
    cluster.FinishDue(now);
    // A small job every 2 s keeps some device busy nearly all the time; a big job every 40 s
    // needs all four. The big one has the higher priority, so the only thing that can delay it is
    // a small job taking a freed device. Estimates are exact (a timeout the jobs run up to).
    if (now % 2'000 == 0) {
      const int64_t run = small_run(rng);
      cluster.Submit(Job(next_id++, 1, run), run);
    }
    if (now % 40'000 == 0) {
      JobRequest big = Job(next_id++, 4, kBigRunMs);
      big.priority = 1;
      big_submitted[big.id] = now;
      cluster.Submit(big, kBigRunMs);
    }
    cluster.Pass(now);
  }
  int backfilled_while_big_waited = 0;
  for (const auto& [id, submitted] : big_submitted) {
    ASSERT_TRUE(cluster.started_at().count(id)) << "big job " << id << " never started";
    const int64_t started = cluster.started_at().at(id);
    // Every small job running at submission ends within 8 s; the next pass starts the big job.
    EXPECT_LE(started - submitted, small_run.max() + kPassMs) << "big job " << id;
    for (const auto& [other, at] : cluster.started_at()) {
      backfilled_while_big_waited += at >= submitted && at < started;
    }
  }
  EXPECT_GT(backfilled_while_big_waited, 0) << "small jobs with short estimates should backfill";
}

TEST(SchedulerSimTest, RandomTrafficNeverOverCommitsAndDrains) {
  FakeCluster cluster;
  cluster.AddAgent("cpu-a", 4, "cpu", false);
  cluster.AddAgent("cpu-b", 2, "cpu", false);
  cluster.AddAgent("gpu-a", 8, "cuda", true);
  cluster.AddAgent("gpu-b", 2, "cuda", true, 8000);
  cluster.AddAgent("gpu-c", 1, "cuda", false);
  std::mt19937 rng(2024);
  auto uniform = [&](int64_t lo, int64_t hi) {
    return std::uniform_int_distribution<int64_t>(lo, hi)(rng);
  };
  int64_t next_id = 1, now = 0;
  int placed = 0;
  for (int pass = 0; pass < 4000; ++pass) {
    now += uniform(100, 3'000);
    cluster.FinishDue(now);
    // About half the cluster's capacity on average, with bursts that queue jobs up.
    for (int64_t arrivals = uniform(0, 1); arrivals > 0; --arrivals) {
      // One job in 20 is larger than any agent: it waits, and must not block the others.
      const int devices = static_cast<int>(uniform(0, 19) == 0 ? 9 : uniform(1, 4));
      JobRequest job = Job(next_id++, devices, 0);
      job.priority = static_cast<int>(uniform(0, 3));
      job.device_kind = uniform(0, 1) ? "cuda" : "cpu";
      job.shareable = uniform(0, 2) == 0;
      job.memory_mib = uniform(0, 10'000);
      const int64_t run = uniform(1'000, 20'000);
      // Estimates: none, exact, or too short (a job that overruns its estimate).
      const int64_t estimate_kind = uniform(0, 2);
      job.estimated_run_ms = estimate_kind == 0 ? kUnknownMs : estimate_kind == 1 ? run : run / 2;
      cluster.Submit(job, run);
    }
    if (uniform(0, 99) == 0) {
      const size_t agent = static_cast<size_t>(uniform(0, 4));
      if (cluster.agents()[agent].connected) {
        cluster.Disconnect(agent);
      } else {
        cluster.agents()[agent].connected = true;
      }
    }
    placed += static_cast<int>(cluster.Pass(now).placements.size());
    if (HasFailure()) return;
  }
  EXPECT_GT(placed, 1000);

  // No more arrivals: run until nothing runs and nothing starts. Every job left then is one no
  // agent can hold; any other would be a job the policy stranded.
  for (AgentView& agent : cluster.agents()) agent.connected = true;
  for (int pass = 0; pass < 100'000; ++pass) {
    now += 1'000;
    cluster.FinishDue(now);
    if (cluster.Pass(now).placements.empty() && cluster.running() == 0) break;
  }
  EXPECT_EQ(cluster.running(), 0u);
  for (const JobRequest& job : cluster.queue()) {
    EXPECT_FALSE(CheckSatisfiable(job, cluster.agents()).ok()) << "job " << job.id << " stranded";
  }
}

}  // namespace
}  // namespace fuji::sched
