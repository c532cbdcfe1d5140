// SQLite RAII wrappers: statement use and reset, connection open and statement cache, reader pool.
#include "daemon/store/sqlite.h"

#include <utility>

namespace fuji::store {
namespace {

// Long enough to ride out a checkpoint or a second process briefly holding the write lock.
constexpr int kBusyTimeoutMs = 5000;

}  // namespace

Status SqliteError(sqlite3* db, int rc, std::string_view context) {
  std::string message(context);
  message += ": ";
  message += db != nullptr ? sqlite3_errmsg(db) : sqlite3_errstr(rc);
  switch (rc & 0xff) {
    case SQLITE_CORRUPT:
    case SQLITE_NOTADB: return DataLoss(message);
    case SQLITE_BUSY:
    case SQLITE_LOCKED: return Unavailable(message);
    // The database cannot be written for now (disk full, read-only, I/O errors): the caller may
    // try again once an operator clears it, and fujid's Health says NOT_SERVING meanwhile.
    case SQLITE_READONLY:
    case SQLITE_FULL:
    case SQLITE_IOERR: return Unavailable(message);
    case SQLITE_CONSTRAINT:
    case SQLITE_CANTOPEN:
    case SQLITE_PERM:
    case SQLITE_AUTH: return FailedPrecondition(message);
    case SQLITE_TOOBIG:
    case SQLITE_NOMEM: return ResourceExhausted(message);
    default: return Internal(message);
  }
}

Statement::Statement(Statement&& other) noexcept
    : db_(other.db_),
      stmt_(std::exchange(other.stmt_, nullptr)),
      bind_status_(std::move(other.bind_status_)) {}

Statement::~Statement() {
  if (stmt_ != nullptr) Reset();
}

void Statement::Reset() {
  sqlite3_reset(stmt_);
  sqlite3_clear_bindings(stmt_);
  bind_status_ = Status::Ok();
}

Statement& Statement::CheckBind(int rc, int index) {
  if (rc != SQLITE_OK && bind_status_.ok()) {
    bind_status_ = SqliteError(db_, rc, "bind parameter " + std::to_string(index));
  }
  return *this;
}

Statement& Statement::BindInt(int index, int64_t value) {
  return CheckBind(sqlite3_bind_int64(stmt_, index, value), index);
}

Statement& Statement::BindReal(int index, double value) {
  return CheckBind(sqlite3_bind_double(stmt_, index, value), index);
}

Statement& Statement::BindText(int index, std::string_view value) {
  return CheckBind(
      sqlite3_bind_text64(stmt_, index, value.data(), value.size(), SQLITE_TRANSIENT, SQLITE_UTF8),
      index);
}

Statement& Statement::BindNull(int index) {
  return CheckBind(sqlite3_bind_null(stmt_, index), index);
}

Result<bool> Statement::Step() {
  FUJI_RETURN_IF_ERROR(bind_status_);
  int rc = sqlite3_step(stmt_);
  if (rc == SQLITE_ROW) return true;
  if (rc == SQLITE_DONE) return false;
  return SqliteError(db_, rc, "database step");
}

Status Statement::Run() {
  FUJI_ASSIGN_OR_RETURN(bool row, Step());
  if (row) return Internal("a database statement that writes returned a row");
  return Status::Ok();
}

std::string Statement::Text(int column) const {
  const unsigned char* text = sqlite3_column_text(stmt_, column);
  if (text == nullptr) return {};
  return std::string(reinterpret_cast<const char*>(text),
                     static_cast<size_t>(sqlite3_column_bytes(stmt_, column)));
}

Result<std::unique_ptr<Connection>> Connection::Open(const std::string& path, bool read_only) {
  sqlite3* raw = nullptr;
  int flags = read_only ? SQLITE_OPEN_READONLY : (SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE);
  // NOMUTEX: each connection is used by one thread at a time, so SQLite's own locking is waste.
  flags |= SQLITE_OPEN_NOMUTEX;
  int rc = sqlite3_open_v2(path.c_str(), &raw, flags, nullptr);
  DbPtr db(raw);  // sqlite3_open_v2 allocates a handle even on failure; it must be closed
  if (rc != SQLITE_OK) return SqliteError(db.get(), rc, "open " + path);
  sqlite3_extended_result_codes(db.get(), 1);
  sqlite3_busy_timeout(db.get(), kBusyTimeoutMs);
  return std::unique_ptr<Connection>(new Connection(std::move(db)));
}

Status Connection::Exec(const char* sql) {
  char* error = nullptr;
  int rc = sqlite3_exec(db_.get(), sql, nullptr, nullptr, &error);
  sqlite3_free(error);  // the same text as sqlite3_errmsg, which SqliteError reads
  if (rc != SQLITE_OK) return SqliteError(db_.get(), rc, "database exec");
  return Status::Ok();
}

Result<Statement> Connection::Prepare(const std::string& sql) {
  auto it = statements_.find(sql);
  if (it == statements_.end()) {
    sqlite3_stmt* raw = nullptr;
    int rc = sqlite3_prepare_v3(db_.get(), sql.c_str(), static_cast<int>(sql.size()),
                                SQLITE_PREPARE_PERSISTENT, &raw, nullptr);
    StmtPtr stmt(raw);
    if (rc != SQLITE_OK) return SqliteError(db_.get(), rc, "database prepare");
    it = statements_.emplace(sql, std::move(stmt)).first;
  }
  if (sqlite3_stmt_busy(it->second.get())) {
    return Internal("a database statement is already in use on this connection");
  }
  return Statement(db_.get(), it->second.get());
}

ReaderPool::Lease::~Lease() {
  if (conn_ == nullptr) return;
  std::lock_guard<std::mutex> lock(pool_->mu_);
  if (pool_->idle_.size() < pool_->max_idle_) pool_->idle_.push_back(std::move(conn_));
}

Result<ReaderPool::Lease> ReaderPool::Acquire() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!idle_.empty()) {
      std::unique_ptr<Connection> conn = std::move(idle_.back());
      idle_.pop_back();
      return Lease(this, std::move(conn));
    }
  }
  FUJI_ASSIGN_OR_RETURN(std::unique_ptr<Connection> conn, Connection::Open(path_, true));
  return Lease(this, std::move(conn));
}

}  // namespace fuji::store
