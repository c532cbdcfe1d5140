// fuji-store-bench: job store throughput. Acknowledged submits/s and latency from concurrent
// clients (fsynced at every commit as fujid runs, and with --rounds R also alternated with
// synchronous=NORMAL, R rounds of each), the first List page over a million jobs, and
// memory-sample ingestion in rows/s. DIR must be on the disk a daemon would use (fsync on tmpfs
// costs nothing).
//
//   fuji-store-bench [--dir DIR] [--seconds S] [--clients N] [--jobs N] [--samples N] [--rounds R]
#include <sqlite3.h>
#include <sys/stat.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

#include "daemon/store/job_store.h"

namespace fuji::store {
namespace {

using SteadyClock = std::chrono::steady_clock;

struct BenchConfig {
  std::string dir = "/tmp/fuji-store-bench";
  double seconds = 3;
  int clients = 16;
  int64_t jobs = 1'000'000;
  int64_t samples = 1'000'000;
  int rounds = 0;  // > 0: submits alone, fsync per commit and at checkpoints alternated
};

double SecondsSince(SteadyClock::time_point start) {
  return std::chrono::duration<double>(SteadyClock::now() - start).count();
}

[[noreturn]] void Die(const std::string& what, const Status& status) {
  std::fprintf(stderr, "fuji-store-bench: %s: %s\n", what.c_str(), status.ToString().c_str());
  std::exit(1);
}

std::unique_ptr<JobStore> OpenFresh(const std::string& path, const Clock* clock,
                                    JobStore::Durability durability = JobStore::Durability::kFsyncEachCommit) {
  for (const char* suffix : {"", "-wal", "-shm"}) std::remove((path + suffix).c_str());
  auto store = JobStore::Open(path, clock, durability);
  if (!store.ok()) Die("open " + path, store.status());
  return std::move(store).value();
}

JobRecord InferJob() {
  JobRecord job;
  job.spec = R"({"model":"cerebras/Cerebras-GPT-111M","prompt":"There are famous mountain like )"
             R"(Mt.Fuji in Japan. Please tell me highest mountain in the world.","max_tokens":64})";
  return job;
}

void BenchSubmits(const BenchConfig& config, const Clock* clock,
                  JobStore::Durability durability = JobStore::Durability::kFsyncEachCommit) {
  std::unique_ptr<JobStore> store = OpenFresh(config.dir + "/submit.db", clock, durability);
  std::vector<std::vector<double>> latencies_ms(config.clients);
  SteadyClock::time_point start = SteadyClock::now();
  SteadyClock::time_point deadline = start + std::chrono::duration_cast<SteadyClock::duration>(
                                                 std::chrono::duration<double>(config.seconds));
  std::vector<std::thread> threads;
  for (int t = 0; t < config.clients; ++t) {
    threads.emplace_back([&, t] {
      JobRecord job = InferJob();
      while (SteadyClock::now() < deadline) {
        SteadyClock::time_point begin = SteadyClock::now();
        Result<int64_t> id = store->Submit(job);
        if (!id.ok()) Die("submit", id.status());
        latencies_ms[t].push_back(SecondsSince(begin) * 1e3);
      }
    });
  }
  for (std::thread& t : threads) t.join();
  double elapsed = SecondsSince(start);
  std::vector<double> all;
  for (const auto& l : latencies_ms) all.insert(all.end(), l.begin(), l.end());
  std::sort(all.begin(), all.end());
  auto pct = [&](double p) { return all[std::min(all.size() - 1, size_t(p * all.size()))]; };
  std::printf(
      "submit (%s): %d clients, %zu acknowledged in %.2f s = %.0f submits/s; latency ms p50 "
      "%.2f p99 %.2f max %.2f\n",
      durability == JobStore::Durability::kFsyncEachCommit ? "synchronous=FULL" : "synchronous=NORMAL",
      config.clients, all.size(), elapsed, all.size() / elapsed, pct(0.50), pct(0.99), all.back());
}

// Fills jobs with n rows in one transaction through a raw connection: the bench needs a big
// table fast, not a million acknowledged submits.
void FillJobs(const std::string& path, int64_t n) {
  sqlite3* db = nullptr;
  if (sqlite3_open(path.c_str(), &db) != SQLITE_OK) Die("fill", Internal(sqlite3_errmsg(db)));
  sqlite3_exec(db, "BEGIN", nullptr, nullptr, nullptr);
  sqlite3_stmt* insert = nullptr;
  sqlite3_prepare_v2(db,
                     "INSERT INTO jobs (kind, state, priority, spec, devices, max_attempts, "
                     "submitted_at_ms, updated_at_ms) VALUES (?, ?, 0, ?, 1, 1, ?, ?)",
                     -1, &insert, nullptr);
  const char* states[] = {"SUCCEEDED", "SUCCEEDED", "SUCCEEDED", "FAILED", "QUEUED"};
  std::string spec = InferJob().spec;
  for (int64_t i = 0; i < n; ++i) {
    sqlite3_bind_text(insert, 1, i % 7 == 0 ? "finetune" : "infer", -1, SQLITE_STATIC);
    sqlite3_bind_text(insert, 2, states[i % 5], -1, SQLITE_STATIC);
    sqlite3_bind_text(insert, 3, spec.c_str(), -1, SQLITE_STATIC);
    sqlite3_bind_int64(insert, 4, i);
    sqlite3_bind_int64(insert, 5, i);
    if (sqlite3_step(insert) != SQLITE_DONE) Die("fill", Internal(sqlite3_errmsg(db)));
    sqlite3_reset(insert);
  }
  sqlite3_finalize(insert);
  if (sqlite3_exec(db, "COMMIT", nullptr, nullptr, nullptr) != SQLITE_OK) {
    Die("fill", Internal(sqlite3_errmsg(db)));
  }
  sqlite3_close(db);
}

void BenchList(const BenchConfig& config, const Clock* clock) {
  std::string path = config.dir + "/list.db";
  OpenFresh(path, clock).reset();
  SteadyClock::time_point start = SteadyClock::now();
  FillJobs(path, config.jobs);
  std::printf("list: filled %lld jobs in %.2f s\n", static_cast<long long>(config.jobs),
              SecondsSince(start));
  start = SteadyClock::now();
  auto store = JobStore::Open(path, clock);
  if (!store.ok()) Die("reopen", store.status());
  std::printf("list: reopen (quick_check + migrations) %.0f ms\n", SecondsSince(start) * 1e3);
  struct Case {
    const char* name;
    ListFilter filter;
  };
  Case cases[] = {{"no filter", {}},
                  {"state=FAILED", {"FAILED", "", 100, 0, std::nullopt}},
                  {"kind=finetune", {"", "finetune", 100, 0, std::nullopt}},
                  {"state=QUEUED kind=finetune", {"QUEUED", "finetune", 100, 0, std::nullopt}},
                  {"no filter, limit 1000", {"", "", 1000, 0, std::nullopt}}};
  for (const Case& c : cases) {
    std::vector<double> ms;
    for (int i = 0; i < 20; ++i) {
      SteadyClock::time_point begin = SteadyClock::now();
      Result<JobPage> page = (*store)->List(c.filter);
      if (!page.ok()) Die("list", page.status());
      ms.push_back(SecondsSince(begin) * 1e3);
    }
    double first = ms.front();
    std::sort(ms.begin(), ms.end());
    std::printf("list: first page, %-28s first call %.2f ms, median %.3f ms, max %.2f ms\n", c.name,
                first, ms[ms.size() / 2], ms.back());
  }
}

void BenchSamples(const BenchConfig& config, const Clock* clock) {
  std::unique_ptr<JobStore> store = OpenFresh(config.dir + "/samples.db", clock);
  Result<int64_t> job = store->Submit(InferJob());
  if (!job.ok()) Die("submit", job.status());
  constexpr int kBatch = 1000;
  std::vector<MemorySample> batch(kBatch);
  for (int i = 0; i < kBatch; ++i) {
    MemorySample& s = batch[i];
    s.job_id = *job;
    s.worker_id = "bench-worker";
    s.device_index = i % 8;
    s.device_name = "NVIDIA H100 80GB HBM3";
    s.used_mib = 4096;
    s.total_mib = 81559;
    s.utilization_pct = 85;
    s.process_mib = 4000;
  }
  SteadyClock::time_point start = SteadyClock::now();
  int64_t rows = 0;
  for (int64_t t = 0; rows < config.samples; ++t) {
    for (int i = 0; i < kBatch; ++i) batch[i].at_ms = t * kBatch + i;
    Status status = store->InsertSamples(batch);
    if (!status.ok()) Die("insert samples", status);
    rows += kBatch;
  }
  double elapsed = SecondsSince(start);
  std::printf("samples: %lld rows in batches of %d in %.2f s = %.0f rows/s\n",
              static_cast<long long>(rows), kBatch, elapsed, rows / elapsed);
}

BenchConfig ParseFlags(int argc, char** argv) {
  BenchConfig config;
  for (int i = 1; i < argc; ++i) {
    std::string flag = argv[i];
    if (i + 1 >= argc) {
      std::fprintf(stderr,
                   "usage: fuji-store-bench [--dir D] [--seconds S] [--clients N] "
                   "[--jobs N] [--samples N] [--rounds R]\n");
      std::exit(2);
    }
    std::string value = argv[++i];
    if (flag == "--dir") {
      config.dir = value;
    } else if (flag == "--seconds") {
      config.seconds = std::stod(value);
    } else if (flag == "--clients") {
      config.clients = std::stoi(value);
    } else if (flag == "--jobs") {
      config.jobs = std::stoll(value);
    } else if (flag == "--samples") {
      config.samples = std::stoll(value);
    } else if (flag == "--rounds") {
      config.rounds = std::stoi(value);
    } else {
      std::fprintf(stderr, "fuji-store-bench: unknown flag %s\n", flag.c_str());
      std::exit(2);
    }
  }
  return config;
}

}  // namespace
}  // namespace fuji::store

int main(int argc, char** argv) {
  using namespace fuji::store;
  BenchConfig config = ParseFlags(argc, argv);
  ::mkdir(config.dir.c_str(), 0755);
  SystemClock clock;
  if (config.rounds > 0) {
    for (int r = 0; r < config.rounds; ++r) {
      BenchSubmits(config, &clock, JobStore::Durability::kFsyncEachCommit);
      BenchSubmits(config, &clock, JobStore::Durability::kFsyncAtCheckpoint);
    }
    return 0;
  }
  BenchSubmits(config, &clock);
  BenchList(config, &clock);
  BenchSamples(config, &clock);
  return 0;
}
