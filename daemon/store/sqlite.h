// Thin RAII layer over the SQLite C API: connections, cached prepared statements, errors as Status.
#pragma once

#include <sqlite3.h>

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "lib/common/status.h"

namespace fuji::store {

struct SqliteCloser {
  void operator()(sqlite3* db) const { sqlite3_close_v2(db); }
};
struct StmtFinalizer {
  void operator()(sqlite3_stmt* stmt) const { sqlite3_finalize(stmt); }
};
using DbPtr = std::unique_ptr<sqlite3, SqliteCloser>;
using StmtPtr = std::unique_ptr<sqlite3_stmt, StmtFinalizer>;

// A Status for SQLite result code rc on db, e.g. "insert job: UNIQUE constraint failed: ...".
// Corruption maps to DATA_LOSS, busy/locked to UNAVAILABLE, constraints to FAILED_PRECONDITION,
// full disk and too-big values to RESOURCE_EXHAUSTED.
Status SqliteError(sqlite3* db, int rc, std::string_view context);

// One use of a cached prepared statement: bind, step, read columns. Resets the statement and its
// bindings when destroyed so the cache can hand it out again. Move-only; not thread-safe.
// Columns and parameters are numbered as in SQLite: parameters from 1, columns from 0.
class Statement {
 public:
  Statement(sqlite3* db, sqlite3_stmt* stmt) : db_(db), stmt_(stmt) {}
  Statement(Statement&& other) noexcept;
  Statement& operator=(Statement&&) = delete;
  Statement(const Statement&) = delete;
  Statement& operator=(const Statement&) = delete;
  ~Statement();

  // The index of a named parameter (":name"); 0, which every Bind rejects, when there is none.
  int Param(const char* name) const { return sqlite3_bind_parameter_index(stmt_, name); }
  // Binding never fails here: the first error is kept and returned by Step().
  Statement& BindInt(int index, int64_t value);
  Statement& BindReal(int index, double value);
  Statement& BindText(int index, std::string_view value);
  Statement& BindNull(int index);

  // true: a row is ready to read; false: the statement is done.
  Result<bool> Step();
  // Steps a statement that returns no rows (INSERT, UPDATE, ...).
  Status Run();
  // Readies the statement for another execution with new bindings (for loops over rows).
  void Reset();

  int64_t Int(int column) const { return sqlite3_column_int64(stmt_, column); }
  double Real(int column) const { return sqlite3_column_double(stmt_, column); }
  std::string Text(int column) const;
  bool IsNull(int column) const { return sqlite3_column_type(stmt_, column) == SQLITE_NULL; }

 private:
  Statement& CheckBind(int rc, int index);

  sqlite3* db_;
  sqlite3_stmt* stmt_;  // owned by the Connection's cache
  Status bind_status_;
};

// A connection with a cache of prepared statements keyed by their SQL text. Not thread-safe: use
// from one thread at a time (the writer thread, or a reader leased from a ReaderPool).
class Connection {
 public:
  // Opens path with SQLITE_OPEN_READONLY or READWRITE|CREATE, extended result codes, and the busy
  // timeout. Nothing is written by opening.
  static Result<std::unique_ptr<Connection>> Open(const std::string& path, bool read_only);

  // Runs SQL without parameters: pragmas, BEGIN/COMMIT, migration scripts. Never build values in.
  Status Exec(const char* sql);
  // Returns the cached statement for sql, preparing it on first use. A statement serves one
  // Statement at a time: nesting two uses of the same SQL text is a bug (INTERNAL when the outer
  // use is between rows).
  Result<Statement> Prepare(const std::string& sql);

  int64_t LastInsertRowId() const { return sqlite3_last_insert_rowid(db_.get()); }
  int Changes() const { return sqlite3_changes(db_.get()); }
  bool InTransaction() const { return sqlite3_get_autocommit(db_.get()) == 0; }
  sqlite3* raw() const { return db_.get(); }

 private:
  explicit Connection(DbPtr db) : db_(std::move(db)) {}

  DbPtr db_;
  // Declared after db_ so the statements are finalized before the connection closes.
  std::unordered_map<std::string, StmtPtr> statements_;
};

// Read-only connections for concurrent readers (WAL lets them read while the writer commits).
// Thread-safe. Connections are opened on demand and up to max_idle are kept for reuse.
class ReaderPool {
 public:
  ReaderPool(std::string path, size_t max_idle) : path_(std::move(path)), max_idle_(max_idle) {}

  // Returns its connection to the pool when destroyed. Must not outlive the pool.
  class Lease {
   public:
    Lease(ReaderPool* pool, std::unique_ptr<Connection> conn)
        : pool_(pool), conn_(std::move(conn)) {}
    Lease(Lease&&) = default;
    Lease& operator=(Lease&&) = delete;
    ~Lease();
    Connection* operator->() const { return conn_.get(); }
    Connection& operator*() const { return *conn_; }

   private:
    ReaderPool* pool_;
    std::unique_ptr<Connection> conn_;
  };

  Result<Lease> Acquire();

 private:
  const std::string path_;
  const size_t max_idle_;
  std::mutex mu_;
  std::vector<std::unique_ptr<Connection>> idle_;  // guarded by mu_
};

}  // namespace fuji::store
