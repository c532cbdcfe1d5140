// fuji-service-bench: the daemon's targets measured through a real fujid process over gRPC on
// 127.0.0.1, one fresh fujid and database per scenario:
//   submit   acknowledged JobService.Submit/s and latency from concurrent clients
//   assign   queued -> assigned latency (Submit ack to PollAssignments answer) over a backlog
//   list     wall time of the real `fuji jobs` process with 1,000,000 jobs in the database
//   samples  memory-sample rows/s through WorkerService.Report
// One JSON line per scenario on stdout; progress on stderr. fujid runs as it does for a team: TLS
// with the CA it makes, every call authenticated (a user "bench" made with the admin's token, the
// worker enrolled with a join token); --plaintext runs it --insecure instead (tokens still checked).
//
//   fuji-service-bench [--fujid PATH] [--fuji PATH] [--dir DIR] [--seconds S] [--clients N]
//                      [--backlog N] [--assign-rounds N] [--list-jobs N] [--list-runs N]
//                      [--report-threads N] [--only submit|assign|list|samples] [--plaintext 1]
// fujid and fuji default to the bench binary's own directory.
#include <fcntl.h>
#include <signal.h>
#include <sqlite3.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "daemon/store/job_store.h"
#include "fuji/v1/admin.grpc.pb.h"
#include "fuji/v1/jobs.grpc.pb.h"
#include "fuji/v1/worker.grpc.pb.h"
#include "lib/rpc/connection.h"

namespace fuji::bench {
namespace {

namespace fs = std::filesystem;
using SteadyClock = std::chrono::steady_clock;

struct BenchConfig {
  std::string fujid;
  std::string fuji;
  std::string dir = "/tmp/fuji-service-bench";
  double seconds = 3;
  int clients = 16;
  int64_t backlog = 100'000;
  int assign_rounds = 200;
  int64_t list_jobs = 1'000'000;
  int list_runs = 20;
  int report_threads = 4;
  std::string only;
  bool plaintext = false;  // fujid --insecure: no TLS (tokens are still checked)
};

double SecondsSince(SteadyClock::time_point start) {
  return std::chrono::duration<double>(SteadyClock::now() - start).count();
}

[[noreturn]] void Die(const std::string& what) {
  std::fprintf(stderr, "fuji-service-bench: %s\n", what.c_str());
  std::exit(1);
}

void Check(const grpc::Status& status, const std::string& what) {
  if (!status.ok()) Die(what + ": " + status.error_message());
}

// p in [0, 1] of sorted values.
double Pct(const std::vector<double>& sorted, double p) {
  if (sorted.empty()) return 0;
  return sorted[std::min(sorted.size() - 1, size_t(p * sorted.size()))];
}

// A fresh, empty directory for one scenario.
std::string FreshDir(const BenchConfig& config, const std::string& name) {
  fs::path dir = fs::path(config.dir) / name;
  std::error_code ec;
  fs::remove_all(dir, ec);
  fs::create_directories(dir, ec);
  if (ec) Die("cannot create " + dir.string() + ": " + ec.message());
  return dir.string();
}

// A model directory the daemon accepts for infer specs (it checks only that config.json exists).
std::string MakeModelDir(const std::string& dir) {
  std::string model = dir + "/model";
  fs::create_directories(model);
  std::ofstream(model + "/config.json") << "{}";
  return model;
}

std::string InferSpec(const std::string& model) {
  return R"({"model": ")" + model + R"(", "prompt": "x", "max_new_tokens": 4})";
}

// ---- fujid as a child process ----

class Fujid {
 public:
  // Starts fujid on db (its state directory is db's, its read root `dir`), listening on
  // 127.0.0.1:0; waits (up to 120 s: quick_check of a big database) for the port on its stderr,
  // which goes to dir/fujid.log; then makes the user "bench" with the admin's token.
  Fujid(const BenchConfig& config, const std::string& db, const std::string& dir)
      : plaintext_(config.plaintext), state_(fs::path(db).parent_path().string()) {
    const std::string& binary = config.fujid;
    std::vector<std::string> extra = {"--allow-read", dir};
    if (plaintext_) extra.push_back("--insecure");
    log_path_ = dir + "/fujid.log";
    SteadyClock::time_point start = SteadyClock::now();
    pid_ = ::fork();
    if (pid_ < 0) Die("fork failed");
    if (pid_ == 0) {
      int fd = ::open(log_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      if (fd >= 0) {
        ::dup2(fd, 2);
        ::close(fd);
      }
      int null_fd = ::open("/dev/null", O_WRONLY);
      if (null_fd >= 0) ::dup2(null_fd, 1);
      std::vector<std::string> args = {binary, "--db", db, "--listen", "127.0.0.1:0"};
      args.insert(args.end(), extra.begin(), extra.end());
      std::vector<char*> argv;
      for (std::string& a : args) argv.push_back(a.data());
      argv.push_back(nullptr);
      ::execv(binary.c_str(), argv.data());
      std::fprintf(stderr, "exec %s failed\n", binary.c_str());
      ::_exit(127);
    }
    while (SecondsSince(start) < 120) {
      std::ifstream in(log_path_);
      std::stringstream text;
      text << in.rdbuf();
      std::string log = text.str();
      size_t at = log.find("(port ");
      if (at != std::string::npos && log.find(')', at) != std::string::npos) {
        port_ = std::atoi(log.c_str() + at + 6);
        break;
      }
      int status = 0;
      if (::waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        Die("fujid exited before listening: " + log);
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    if (port_ <= 0) Die("fujid did not report its port within 120 s");
    startup_s_ = SecondsSince(start);
    std::ifstream token_file(state_ + "/admin.token");
    std::getline(token_file, admin_token_);
    if (admin_token_.empty()) Die("no admin token in " + state_);
    auto admin = v1::AdminService::NewStub(Connect());
    v1::CreateUserRequest request;
    request.set_name("bench");
    v1::CreateUserResponse response;
    grpc::ClientContext context;
    rpc::Authorize(&context, admin_token_);
    Check(admin->CreateUser(&context, request, &response), "create the user bench");
    user_token_ = response.token();
  }
  ~Fujid() { Stop(); }
  Fujid(const Fujid&) = delete;
  Fujid& operator=(const Fujid&) = delete;

  void Stop() {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGTERM);
    int status = 0;
    for (int i = 0; i < 1000; ++i) {  // 10 s, then SIGKILL
      if (::waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        return;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, &status, 0);
    pid_ = -1;
  }

  std::string address() const { return "127.0.0.1:" + std::to_string(port_); }
  double startup_s() const { return startup_s_; }
  const std::string& admin_token() const { return admin_token_; }
  std::string ca() const { return plaintext_ ? "" : state_ + "/ca.crt"; }

  // Its own channel (and TCP connection: no shared subchannel pool), as a separate client has.
  std::shared_ptr<grpc::Channel> Connect() const {
    grpc::ChannelArguments args;
    args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
    args.SetMaxReceiveMessageSize(64 << 20);
    auto channel = rpc::MakeChannel({address(), ca(), plaintext_}, args);
    if (!channel.ok()) Die(channel.status().message());
    if (!(*channel)->WaitForConnected(std::chrono::system_clock::now() + std::chrono::seconds(10))) {
      Die("cannot connect to fujid at " + address());
    }
    return *channel;
  }

  void AsUser(grpc::ClientContext* context) const { rpc::Authorize(context, user_token_); }
  void AsAdmin(grpc::ClientContext* context) const { rpc::Authorize(context, admin_token_); }
  // The credential of the agent enrolled as worker_id (enrolled with a join token on first use).
  void AsWorker(grpc::ClientContext* context, const std::string& worker_id) {
    std::lock_guard<std::mutex> lock(mu_);
    std::string& credential = agents_[worker_id];
    if (credential.empty()) {
      auto admin = v1::AdminService::NewStub(Connect());
      v1::CreateJoinTokenResponse join;
      {
        grpc::ClientContext c;
        AsAdmin(&c);
        Check(admin->CreateJoinToken(&c, v1::CreateJoinTokenRequest(), &join), "join token");
      }
      auto workers = v1::WorkerService::NewStub(Connect());
      v1::EnrollRequest request;
      request.set_worker_id(worker_id);
      v1::EnrollResponse enrolled;
      grpc::ClientContext c;
      rpc::Authorize(&c, join.token());
      Check(workers->Enroll(&c, request, &enrolled), "enroll");
      credential = enrolled.credential();
    }
    rpc::Authorize(context, credential);
  }

 private:
  const bool plaintext_;
  const std::string state_;
  std::string admin_token_, user_token_;
  std::mutex mu_;
  std::map<std::string, std::string> agents_;
  pid_t pid_ = -1;
  int port_ = 0;
  double startup_s_ = 0;
  std::string log_path_;
};


std::unique_ptr<store::JobStore> OpenStore(const std::string& path, const store::Clock* clock) {
  auto store = store::JobStore::Open(path, clock);
  if (!store.ok()) Die("open " + path + ": " + store.status().ToString());
  return std::move(store).value();
}

void RegisterWorker(Fujid& fujid, v1::WorkerService::Stub& worker, const std::string& id, int devices) {
  v1::RegisterRequest request;
  request.set_worker_id(id);
  request.set_host("bench-host");
  for (int i = 0; i < devices; ++i) {
    v1::Device* device = request.add_devices();
    device->set_index(i);
    device->set_name("cpu");
    device->set_total_mib(65536);
    device->set_kind("cpu");
  }
  v1::RegisterResponse response;
  grpc::ClientContext context;
  fujid.AsWorker(&context, id);
  Check(worker.Register(&context, request, &response), "register");
}

// Heartbeats every 500 ms from its own thread, so the worker never goes LOST mid-scenario.
class HeartbeatThread {
 public:
  HeartbeatThread(Fujid& fujid, const std::string& worker_id)
      : stub_(v1::WorkerService::NewStub(fujid.Connect())), thread_([this, &fujid, worker_id] {
          std::unique_lock<std::mutex> lock(mu_);
          while (!stop_) {
            lock.unlock();
            v1::HeartbeatRequest request;
            request.set_worker_id(worker_id);
            v1::HeartbeatResponse response;
            grpc::ClientContext context;
            fujid.AsWorker(&context, worker_id);
            (void)stub_->Heartbeat(&context, request, &response);
            lock.lock();
            cv_.wait_for(lock, std::chrono::milliseconds(500), [this] { return stop_; });
          }
        }) {}
  ~HeartbeatThread() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }

 private:
  std::unique_ptr<v1::WorkerService::Stub> stub_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  std::thread thread_;
};

// ---- 1. Durable submissions ----

void BenchSubmit(const BenchConfig& config) {
  std::string dir = FreshDir(config, "submit");
  std::string spec = InferSpec(MakeModelDir(dir));
  Fujid fujid(config, dir + "/fujid.db", dir);
  std::vector<std::unique_ptr<v1::JobService::Stub>> stubs;
  for (int t = 0; t < config.clients; ++t) {
    stubs.push_back(v1::JobService::NewStub(fujid.Connect()));
  }
  std::vector<std::vector<double>> latencies_ms(config.clients);
  std::atomic<int64_t> errors{0};
  SteadyClock::time_point start = SteadyClock::now();
  SteadyClock::time_point deadline = start + std::chrono::duration_cast<SteadyClock::duration>(
                                                 std::chrono::duration<double>(config.seconds));
  std::vector<std::thread> threads;
  for (int t = 0; t < config.clients; ++t) {
    threads.emplace_back([&, t] {
      v1::SubmitRequest request;
      request.set_kind("infer");
      request.set_spec_json(spec);
      while (SteadyClock::now() < deadline) {
        SteadyClock::time_point begin = SteadyClock::now();
        v1::SubmitResponse response;
        grpc::ClientContext context;
        fujid.AsUser(&context);
        grpc::Status status = stubs[t]->Submit(&context, request, &response);
        if (!status.ok() || response.job().id() <= 0) {
          if (errors++ == 0) {
            std::fprintf(stderr, "submit: %s\n", status.error_message().c_str());
          }
          continue;
        }
        latencies_ms[t].push_back(SecondsSince(begin) * 1e3);
      }
    });
  }
  for (std::thread& t : threads) t.join();
  double elapsed = SecondsSince(start);
  fujid.Stop();
  std::vector<double> all;
  for (const auto& l : latencies_ms) all.insert(all.end(), l.begin(), l.end());
  std::sort(all.begin(), all.end());
  double rate = all.size() / elapsed;
  double p99 = Pct(all, 0.99);
  std::printf(
      "{\"scenario\":\"submit\",\"clients\":%d,\"acknowledged\":%zu,\"errors\":%lld,"
      "\"seconds\":%.2f,\"jobs_per_s\":%.0f,\"p50_ms\":%.2f,\"p99_ms\":%.2f,\"max_ms\":%.2f,"
      "\"target\":\">=5000/s, p99<20ms\",\"met\":%s}\n",
      config.clients, all.size(), static_cast<long long>(errors.load()), elapsed, rate,
      Pct(all, 0.5), p99, all.empty() ? 0.0 : all.back(),
      rate >= 5000 && p99 < 20 ? "true" : "false");
  std::fflush(stdout);
}

// ---- 2. Queued -> assigned latency over a backlog ----

// Fills the store with n QUEUED jobs through its own bulk path (group-committed SubmitAsync).
// They need 2 devices, so the bench's 1-device worker never takes one: each stays in the queue
// that every scheduling pass reads, sorts and explains.
void FillBacklog(const std::string& db, const std::string& spec, int64_t n) {
  store::SystemClock clock;
  std::unique_ptr<store::JobStore> store = OpenStore(db, &clock);
  std::mutex mu;
  std::condition_variable cv;
  int64_t done = 0;
  bool failed = false;
  store::JobRecord job;
  job.spec = spec;
  job.devices = 2;
  for (int64_t i = 0; i < n; ++i) {
    store->SubmitAsync(job, [&](Result<int64_t> id) {
      std::lock_guard<std::mutex> lock(mu);
      if (!id.ok()) failed = true;
      if (++done == n) cv.notify_all();
    });
  }
  std::unique_lock<std::mutex> lock(mu);
  cv.wait(lock, [&] { return done == n; });
  if (failed) Die("backlog submit failed");
}

void BenchAssign(const BenchConfig& config, int64_t backlog, int rounds) {
  std::string dir = FreshDir(config, "assign-" + std::to_string(backlog));
  std::string spec = InferSpec(MakeModelDir(dir));
  std::string db = dir + "/fujid.db";
  SteadyClock::time_point fill_start = SteadyClock::now();
  FillBacklog(db, spec, backlog);
  double fill_s = SecondsSince(fill_start);
  Fujid fujid(config, db, dir);
  auto jobs = v1::JobService::NewStub(fujid.Connect());
  auto worker = v1::WorkerService::NewStub(fujid.Connect());
  const std::string worker_id = "bench-worker";
  RegisterWorker(fujid, *worker, worker_id, 1);
  HeartbeatThread heartbeats(fujid, worker_id);

  std::vector<double> latencies_ms, submit_ms;
  int64_t extra_polls = 0;
  for (int round = 0; round < rounds; ++round) {
    v1::SubmitRequest submit;
    submit.set_kind("infer");
    submit.set_spec_json(spec);
    submit.set_priority(10);
    v1::SubmitResponse submitted;
    SteadyClock::time_point submit_begin = SteadyClock::now();
    {
      grpc::ClientContext context;
      fujid.AsUser(&context);
      Check(jobs->Submit(&context, submit, &submitted), "submit");
    }
    SteadyClock::time_point acked = SteadyClock::now();
    submit_ms.push_back(std::chrono::duration<double>(acked - submit_begin).count() * 1e3);
    const int64_t job_id = submitted.job().id();
    int attempt = -1;
    int64_t epoch = 0;
    while (attempt < 0) {
      v1::PollAssignmentsRequest poll;
      poll.set_worker_id(worker_id);
      poll.set_wait_ms(5000);
      v1::PollAssignmentsResponse polled;
      grpc::ClientContext context;
      fujid.AsWorker(&context, worker_id);
      Check(worker->PollAssignments(&context, poll, &polled), "poll");
      for (const v1::Assignment& a : polled.assignments()) {
        if (a.job_id() == job_id) {
          attempt = a.attempt();
          epoch = a.lease_epoch();
        } else {
          Die("round " + std::to_string(round) + ": unexpected assignment of job " + std::to_string(a.job_id()) + ", waiting for " + std::to_string(job_id));
        }
      }
      if (attempt < 0) {
        ++extra_polls;
        if (SecondsSince(acked) > 30) Die("job not assigned within 30 s");
      }
    }
    latencies_ms.push_back(SecondsSince(acked) * 1e3);
    // As fuji-agent does: started (ASSIGNED -> RUNNING), then complete. (Completing an ASSIGNED
    // job is acknowledged but leaves it ASSIGNED: ASSIGNED -> SUCCEEDED is no lifecycle edge.)
    {
      v1::JobReport started;
      started.set_worker_id(worker_id);
      started.set_job_id(job_id);
      started.set_attempt(attempt);
      started.set_lease_epoch(epoch);
      started.set_started(true);
      v1::ReportResponse reported;
      grpc::ClientContext context;
      fujid.AsWorker(&context, worker_id);
      Check(worker->Report(&context, started, &reported), "report started");
    }
    v1::CompleteRequest complete;
    complete.set_worker_id(worker_id);
    complete.set_job_id(job_id);
    complete.set_attempt(attempt);
    complete.set_lease_epoch(epoch);
    complete.set_succeeded(true);
    complete.set_result_json("{}");
    v1::CompleteResponse completed;
    grpc::ClientContext context;
    fujid.AsWorker(&context, worker_id);
    Check(worker->Complete(&context, complete, &completed), "complete");
  }
  // The backlog is still all queued (a sanity check that the measurement meant what it says).
  v1::ListJobsRequest list;
  list.set_state("QUEUED");
  list.set_limit(1);
  list.set_all(true);  // the backlog was written straight into the database, owned by no one
  v1::ListJobsResponse listed;
  {
    grpc::ClientContext context;
    fujid.AsAdmin(&context);
    Check(jobs->ListJobs(&context, list, &listed), "list");
  }
  int64_t backlog_left_top = listed.jobs_size() > 0 ? listed.jobs(0).id() : 0;
  fujid.Stop();
  std::sort(latencies_ms.begin(), latencies_ms.end());
  std::sort(submit_ms.begin(), submit_ms.end());
  double p99 = Pct(latencies_ms, 0.99);
  std::printf(
      "{\"scenario\":\"assign\",\"backlog\":%lld,\"rounds\":%d,\"fill_s\":%.2f,"
      "\"fujid_start_s\":%.2f,\"p50_ms\":%.2f,\"p99_ms\":%.2f,\"max_ms\":%.2f,"
      "\"submit_p50_ms\":%.2f,\"submit_p99_ms\":%.2f,\"empty_polls\":%lld,"
      "\"backlog_still_queued\":%s,\"target\":\"p99<50ms\",\"met\":%s}\n",
      static_cast<long long>(backlog), rounds, fill_s, fujid.startup_s(),
      Pct(latencies_ms, 0.5), p99, latencies_ms.empty() ? 0.0 : latencies_ms.back(),
      Pct(submit_ms, 0.5), Pct(submit_ms, 0.99), static_cast<long long>(extra_polls),
      backlog == 0 || backlog_left_top == backlog ? "true" : "false", p99 < 50 ? "true" : "false");
  std::fflush(stdout);
}

// ---- 3. `fuji jobs` over a million jobs ----

// n rows in one transaction through a raw connection, as fuji-store-bench fills its table: the
// bench needs a big table fast, not a million acknowledged submits. queued_every: one job in
// that many is QUEUED (0: none; the rest are finished).
void FillJobs(const std::string& path, int64_t n, int queued_every) {
  sqlite3* db = nullptr;
  if (sqlite3_open(path.c_str(), &db) != SQLITE_OK) Die(std::string("fill: ") + sqlite3_errmsg(db));
  sqlite3_exec(db, "BEGIN", nullptr, nullptr, nullptr);
  sqlite3_stmt* insert = nullptr;
  sqlite3_prepare_v2(db,
                     "INSERT INTO jobs (kind, state, priority, spec, devices, max_attempts, "
                     "submitted_at_ms, updated_at_ms) VALUES (?, ?, 0, ?, 1, 1, ?, ?)",
                     -1, &insert, nullptr);
  const char* finished[] = {"SUCCEEDED", "SUCCEEDED", "SUCCEEDED", "FAILED"};
  std::string spec =
      R"({"model":"cerebras/Cerebras-GPT-111M","prompt":"There are famous mountain like )"
      R"(Mt.Fuji in Japan. Please tell me highest mountain in the world.","max_tokens":64})";
  for (int64_t i = 0; i < n; ++i) {
    const char* state = queued_every > 0 && i % queued_every == queued_every - 1
                            ? "QUEUED"
                            : finished[i % 4];
    sqlite3_bind_text(insert, 1, i % 7 == 0 ? "finetune" : "infer", -1, SQLITE_STATIC);
    sqlite3_bind_text(insert, 2, state, -1, SQLITE_STATIC);
    sqlite3_bind_text(insert, 3, spec.c_str(), -1, SQLITE_STATIC);
    sqlite3_bind_int64(insert, 4, i);
    sqlite3_bind_int64(insert, 5, i);
    if (sqlite3_step(insert) != SQLITE_DONE) Die(std::string("fill: ") + sqlite3_errmsg(db));
    sqlite3_reset(insert);
  }
  sqlite3_finalize(insert);
  if (sqlite3_exec(db, "COMMIT", nullptr, nullptr, nullptr) != SQLITE_OK) {
    Die(std::string("fill: ") + sqlite3_errmsg(db));
  }
  sqlite3_close(db);
}

// Wall time of one `fuji jobs --all --server ADDR` process as the admin (the filled jobs are owned by
// no one), start to exit; its output is discarded.
double RunFujiJobs(const std::string& fuji, const Fujid& fujid) {
  const std::string address = fujid.address();
  SteadyClock::time_point start = SteadyClock::now();
  pid_t pid = ::fork();
  if (pid < 0) Die("fork failed");
  if (pid == 0) {
    int null_fd = ::open("/dev/null", O_WRONLY);
    if (null_fd >= 0) ::dup2(null_fd, 1);
    ::setenv("FUJI_TOKEN", fujid.admin_token().c_str(), 1);
    ::setenv("FUJI_CA", fujid.ca().c_str(), 1);
    std::vector<std::string> args = {fuji, "jobs", "--all", "--server", address};
    if (fujid.ca().empty()) args.push_back("--insecure");
    std::vector<char*> argv;
    for (std::string& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    ::execv(fuji.c_str(), argv.data());
    ::_exit(127);
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  double ms = SecondsSince(start) * 1e3;
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) Die("`fuji jobs` failed");
  return ms;
}

void BenchList(const BenchConfig& config, int queued_every) {
  std::string dir = FreshDir(config, "list-" + std::to_string(queued_every));
  std::string db = dir + "/fujid.db";
  store::SystemClock clock;
  OpenStore(db, &clock).reset();  // creates the schema
  SteadyClock::time_point fill_start = SteadyClock::now();
  FillJobs(db, config.list_jobs, queued_every);
  double fill_s = SecondsSince(fill_start);
  Fujid fujid(config, db, dir);
  std::vector<double> ms;
  for (int i = 0; i < config.list_runs; ++i) ms.push_back(RunFujiJobs(config.fuji, fujid));
  fujid.Stop();
  double first = ms.front();
  std::sort(ms.begin(), ms.end());
  double median = ms[ms.size() / 2];
  std::printf(
      "{\"scenario\":\"list\",\"jobs\":%lld,\"queued\":%lld,\"fill_s\":%.2f,"
      "\"fujid_start_s\":%.2f,\"runs\":%d,\"first_ms\":%.1f,\"median_ms\":%.1f,\"max_ms\":%.1f,"
      "\"target\":\"<100ms\",\"met\":%s}\n",
      static_cast<long long>(config.list_jobs),
      static_cast<long long>(queued_every > 0 ? config.list_jobs / queued_every : 0), fill_s,
      fujid.startup_s(), config.list_runs, first, median, ms.back(),
      ms.back() < 100 ? "true" : "false");
  std::fflush(stdout);
}

// ---- 4. Memory samples through WorkerService.Report ----

void BenchSamples(const BenchConfig& config) {
  std::string dir = FreshDir(config, "samples");
  std::string spec = InferSpec(MakeModelDir(dir));
  Fujid fujid(config, dir + "/fujid.db", dir);
  auto jobs = v1::JobService::NewStub(fujid.Connect());
  auto worker = v1::WorkerService::NewStub(fujid.Connect());
  const std::string worker_id = "bench-worker";
  RegisterWorker(fujid, *worker, worker_id, 1);
  HeartbeatThread heartbeats(fujid, worker_id);
  v1::SubmitRequest submit;
  submit.set_kind("infer");
  submit.set_spec_json(spec);
  v1::SubmitResponse submitted;
  {
    grpc::ClientContext context;
    fujid.AsUser(&context);
    Check(jobs->Submit(&context, submit, &submitted), "submit");
  }
  int attempt = -1;
  int64_t epoch = 0;
  for (int tries = 0; attempt < 0 && tries < 10; ++tries) {
    v1::PollAssignmentsRequest poll;
    poll.set_worker_id(worker_id);
    poll.set_wait_ms(5000);
    v1::PollAssignmentsResponse polled;
    grpc::ClientContext context;
    fujid.AsWorker(&context, worker_id);
    Check(worker->PollAssignments(&context, poll, &polled), "poll");
    for (const v1::Assignment& a : polled.assignments()) {
      if (a.job_id() == submitted.job().id()) {
        attempt = a.attempt();
        epoch = a.lease_epoch();
      }
    }
  }
  if (attempt < 0) Die("samples: the job was never assigned");

  constexpr int kBatch = 1000;
  std::atomic<int64_t> rows{0};
  std::vector<std::vector<double>> latencies_ms(config.report_threads);
  SteadyClock::time_point start = SteadyClock::now();
  SteadyClock::time_point deadline = start + std::chrono::duration_cast<SteadyClock::duration>(
                                                 std::chrono::duration<double>(config.seconds));
  std::vector<std::thread> threads;
  for (int t = 0; t < config.report_threads; ++t) {
    threads.emplace_back([&, t] {
      auto stub = v1::WorkerService::NewStub(fujid.Connect());
      v1::JobReport report;
      report.set_worker_id(worker_id);
      report.set_job_id(submitted.job().id());
      report.set_attempt(attempt);
      report.set_lease_epoch(epoch);
      report.set_started(true);
      for (int i = 0; i < kBatch; ++i) {
        v1::MemorySample* s = report.add_samples();
        s->set_worker_id(worker_id);
        s->set_device_index(i % 8);
        s->set_device_name("NVIDIA H100 80GB HBM3");
        s->set_used_mib(4096);
        s->set_total_mib(81559);
        s->set_utilization_pct(85);
        s->set_process_mib(4000);
      }
      for (int64_t round = 0; SteadyClock::now() < deadline; ++round) {
        for (int i = 0; i < kBatch; ++i) {
          report.mutable_samples(i)->set_at_ms((round * config.report_threads + t) * kBatch + i);
        }
        SteadyClock::time_point begin = SteadyClock::now();
        v1::ReportResponse response;
        grpc::ClientContext context;
        fujid.AsWorker(&context, worker_id);
        Check(stub->Report(&context, report, &response), "report");
        if (response.cancel()) Die("report: the daemon answered cancel");
        latencies_ms[t].push_back(SecondsSince(begin) * 1e3);
        rows += kBatch;
      }
    });
  }
  for (std::thread& t : threads) t.join();
  double elapsed = SecondsSince(start);
  fujid.Stop();
  std::vector<double> all;
  for (const auto& l : latencies_ms) all.insert(all.end(), l.begin(), l.end());
  std::sort(all.begin(), all.end());
  double rate = rows.load() / elapsed;
  std::printf(
      "{\"scenario\":\"samples\",\"threads\":%d,\"batch\":%d,\"rows\":%lld,\"seconds\":%.2f,"
      "\"rows_per_s\":%.0f,\"report_p50_ms\":%.2f,\"report_p99_ms\":%.2f,"
      "\"target\":\">=200000 rows/s\",\"met\":%s}\n",
      config.report_threads, kBatch, static_cast<long long>(rows.load()), elapsed, rate,
      Pct(all, 0.5), Pct(all, 0.99), rate >= 200000 ? "true" : "false");
  std::fflush(stdout);
}

BenchConfig ParseFlags(int argc, char** argv) {
  BenchConfig config;
  std::error_code ec;
  fs::path self = fs::canonical("/proc/self/exe", ec);
  fs::path bin_dir = ec ? fs::path(argv[0]).parent_path() : self.parent_path();
  config.fujid = (bin_dir / "fujid").string();
  config.fuji = (bin_dir / "fuji").string();
  for (int i = 1; i < argc; ++i) {
    std::string flag = argv[i];
    if (i + 1 >= argc) {
      std::fprintf(stderr,
                   "usage: fuji-service-bench [--fujid PATH] [--fuji PATH] [--dir D] "
                   "[--seconds S] [--clients N] [--backlog N] [--assign-rounds N] "
                   "[--list-jobs N] [--list-runs N] [--report-threads N] "
                   "[--only submit|assign|list|samples] [--plaintext 1]\n");
      std::exit(2);
    }
    std::string value = argv[++i];
    if (flag == "--fujid") {
      config.fujid = value;
    } else if (flag == "--fuji") {
      config.fuji = value;
    } else if (flag == "--dir") {
      config.dir = value;
    } else if (flag == "--seconds") {
      config.seconds = std::stod(value);
    } else if (flag == "--clients") {
      config.clients = std::stoi(value);
    } else if (flag == "--backlog") {
      config.backlog = std::stoll(value);
    } else if (flag == "--assign-rounds") {
      config.assign_rounds = std::stoi(value);
    } else if (flag == "--list-jobs") {
      config.list_jobs = std::stoll(value);
    } else if (flag == "--list-runs") {
      config.list_runs = std::stoi(value);
    } else if (flag == "--report-threads") {
      config.report_threads = std::stoi(value);
    } else if (flag == "--only") {
      config.only = value;
    } else if (flag == "--plaintext") {
      config.plaintext = value == "1" || value == "true";
    } else {
      std::fprintf(stderr, "fuji-service-bench: unknown flag %s\n", flag.c_str());
      std::exit(2);
    }
  }
  for (const std::string& binary : {config.fujid, config.fuji}) {
    if (::access(binary.c_str(), X_OK) != 0) Die(binary + " is not an executable");
  }
  return config;
}

}  // namespace
}  // namespace fuji::bench

int main(int argc, char** argv) {
  using namespace fuji::bench;
  ::signal(SIGPIPE, SIG_IGN);
  BenchConfig config = ParseFlags(argc, argv);
  std::filesystem::create_directories(config.dir);
  auto want = [&](const char* name) { return config.only.empty() || config.only == name; };
  if (want("submit")) BenchSubmit(config);
  if (want("assign")) {
    // The pass cost's growth with the queue: the same measurement over a smaller backlog first.
    if (config.backlog > 10'000) BenchAssign(config, 10'000, std::min(config.assign_rounds, 50));
    BenchAssign(config, config.backlog, config.assign_rounds);
  }
  if (want("list")) {
    BenchList(config, 0);  // every job finished: the page alone
    BenchList(config, 5);  // one in five QUEUED (fuji-store-bench's mix): passes run meanwhile
  }
  if (want("samples")) BenchSamples(config);
  return 0;
}
