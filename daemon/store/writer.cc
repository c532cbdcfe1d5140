// Writer: the group-commit loop (batch, savepoint per operation, one COMMIT, then completions).
#include "daemon/store/writer.h"

#include <algorithm>
#include <chrono>
#include <future>
#include <utility>
#include <vector>

#include "daemon/server/metrics.h"

namespace fuji::store {
namespace {

// Transaction control through the statement cache: these run several times per batch.
Status RunCached(Connection& db, const char* sql) {
  FUJI_ASSIGN_OR_RETURN(Statement stmt, db.Prepare(sql));
  return stmt.Run();
}

}  // namespace

Writer::Writer(std::unique_ptr<Connection> db) : db_(std::move(db)), thread_([this] { Loop(); }) {}

Writer::~Writer() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  wake_.notify_one();
  thread_.join();
}

void Writer::Enqueue(Op op, Done done) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!stopping_) {
      queue_.push_back(Pending{std::move(op), std::move(done)});
      wake_.notify_one();
      return;
    }
  }
  done(Unavailable("the job store is shutting down"));
}

Status Writer::Run(Op op) {
  if (std::this_thread::get_id() == thread_.get_id()) {
    return Internal("a blocking store write from the writer thread would deadlock");
  }
  std::promise<Status> promise;
  std::future<Status> result = promise.get_future();
  Enqueue(std::move(op), [&promise](const Status& status) { promise.set_value(status); });
  return result.get();
}

Writer::Stats Writer::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return stats_;
}

void Writer::Loop() {
  std::deque<Pending> batch;
  while (true) {
    {
      std::unique_lock<std::mutex> lock(mu_);
      wake_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
      if (queue_.empty()) return;  // stopping, and everything queued has been written
      size_t n = std::min(queue_.size(), kMaxBatch);
      for (size_t i = 0; i < n; ++i) {
        batch.push_back(std::move(queue_.front()));
        queue_.pop_front();
      }
      stats_.batches += 1;
      stats_.ops += static_cast<int64_t>(n);
    }
    RunBatch(batch);
    batch.clear();
  }
}

namespace {

// What an SQLite result code says of the database's storage; "" when it is not about storage.
std::string StorageFault(int rc) {
  switch (rc & 0xff) {
    case SQLITE_FULL: return "the database's disk is full";
    case SQLITE_READONLY: return "the database is read-only";
    case SQLITE_IOERR: return "I/O error writing the database";
    default: return "";
  }
}

}  // namespace

std::string Writer::Fault() const {
  std::lock_guard<std::mutex> lock(mu_);
  return fault_;
}

void Writer::RunBatch(std::deque<Pending>& batch) {
  Connection& db = *db_;
  std::vector<Status> results(batch.size());
  std::string fault;  // the storage fault an operation or the commit met, if any
  const auto started = std::chrono::steady_clock::now();
  Status batch_status = RunCached(db, "BEGIN IMMEDIATE");
  for (size_t i = 0; i < batch.size() && batch_status.ok(); ++i) {
    batch_status = RunCached(db, "SAVEPOINT op");
    if (!batch_status.ok()) break;
    results[i] = batch[i].op(db);
    if (!results[i].ok() && fault.empty()) fault = StorageFault(sqlite3_extended_errcode(db.raw()));
    if (!db.InTransaction()) {
      // SQLite rolled the whole transaction back by itself (disk full, I/O error): every
      // operation of the batch is lost, not just this one.
      batch_status =
          results[i].ok() ? Internal("transaction ended inside a store operation") : results[i];
      break;
    }
    if (!results[i].ok()) batch_status = RunCached(db, "ROLLBACK TO op");
    if (batch_status.ok()) batch_status = RunCached(db, "RELEASE op");
  }
  if (batch_status.ok()) batch_status = RunCached(db, "COMMIT");
  if (batch_status.ok()) {
    const std::chrono::duration<double> took = std::chrono::steady_clock::now() - started;
    metrics::Registry::Default().Observe("fuji_store_commit_seconds", {}, took.count());
  }
  if (!batch_status.ok() && fault.empty()) fault = StorageFault(sqlite3_extended_errcode(db.raw()));
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (batch_status.ok() && fault.empty()) {
      fault_.clear();
    } else if (!fault.empty()) {
      fault_ = fault;
    }
  }
  if (!batch_status.ok()) {
    if (db.InTransaction()) (void)db.Exec("ROLLBACK");
    batch_status = batch_status.WithContext("store transaction rolled back");
  }
  for (size_t i = 0; i < batch.size(); ++i) {
    // An operation that failed on its own keeps its own error; the others share the batch's. A
    // storage fault is said as such, whatever statement met it.
    Status result = batch_status.ok() || !results[i].ok() ? results[i] : batch_status;
    if (!fault.empty() && result.code() == StatusCode::kUnavailable) {
      result = Unavailable("fujid cannot write its database: " + fault + "; try again once it is cleared");
    }
    batch[i].done(result);
  }
}

}  // namespace fuji::store
