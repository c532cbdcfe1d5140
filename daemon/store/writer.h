// Writer: group commit; one thread owns the write connection and commits queued ops in batches.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "daemon/store/sqlite.h"
#include "lib/common/status.h"

namespace fuji::store {

// Serializes every write of the store through one connection and one thread. The thread takes all
// queued operations (up to kMaxBatch), runs them inside ONE transaction, each under its own
// SAVEPOINT so a failing operation is rolled back alone, and COMMITs; only then does it report
// each operation's own result. One commit per batch is what makes thousands of acknowledged writes
// per second cheap: the cost of a commit is shared by everything that queued up behind it.
//
// Thread-safe: Enqueue and Run may be called from any thread. Operations and completions run on
// the writer thread, in enqueue order; they must be quick and must not wait for other writes
// (Run from a completion returns INTERNAL instead of deadlocking).
class Writer {
 public:
  // Runs against the write connection inside the batch's transaction. Returning an error rolls
  // back this operation's changes only.
  using Op = std::function<Status(Connection& db)>;
  // Receives the operation's result once it is durable (committed), or why it is not.
  using Done = std::function<void(const Status& status)>;

  static constexpr size_t kMaxBatch = 512;

  struct Stats {
    int64_t batches = 0;  // transactions committed or attempted
    int64_t ops = 0;      // operations run
  };

  explicit Writer(std::unique_ptr<Connection> db);
  // Finishes every operation already queued, then stops the thread.
  ~Writer();
  Writer(const Writer&) = delete;
  Writer& operator=(const Writer&) = delete;

  void Enqueue(Op op, Done done);
  // Enqueues op and waits until it is committed (or failed).
  Status Run(Op op);

  Stats stats() const;
  // Why the database cannot be written now ("the database's disk is full", "the database is
  // read-only", "I/O error writing the database"), as the latest batch found; "" once a batch
  // commits again.
  std::string Fault() const;

 private:
  struct Pending {
    Op op;
    Done done;
  };

  void Loop();
  void RunBatch(std::deque<Pending>& batch);

  std::unique_ptr<Connection> db_;  // used only by thread_
  mutable std::mutex mu_;
  std::condition_variable wake_;
  std::deque<Pending> queue_;  // guarded by mu_
  bool stopping_ = false;      // guarded by mu_
  Stats stats_;                // guarded by mu_
  std::string fault_;          // guarded by mu_
  std::thread thread_;         // last: starts after everything above is ready
};

}  // namespace fuji::store
