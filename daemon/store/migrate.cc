// Schema checks at open (path, header, integrity, version) and the migration runner.
#include "daemon/store/migrate.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "lib/common/file_util.h"

namespace fuji::store {
namespace {

// Every SQLite 3 database file starts with these 16 bytes (the terminating NUL included).
constexpr char kSqliteHeader[] = "SQLite format 3";
constexpr size_t kSqliteHeaderSize = sizeof(kSqliteHeader);

std::string ParentDir(const std::string& path) {
  size_t slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

Status CheckHeader(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return FailedPrecondition("cannot read database " + path + ": " + ErrnoMessage());
  char header[kSqliteHeaderSize] = {};
  ssize_t n = ::pread(fd, header, sizeof(header), 0);
  ::close(fd);
  if (n != static_cast<ssize_t>(sizeof(header)) ||
      std::memcmp(header, kSqliteHeader, sizeof(header)) != 0) {
    return DataLoss(path + " is not a SQLite database (bad header); refusing to touch it");
  }
  return Status::Ok();
}

}  // namespace

Result<bool> CheckDatabasePath(const std::string& path) {
  if (path.empty() || path == ":memory:" || path.rfind("file:", 0) == 0) {
    return InvalidArgument("database path must name a file, got '" + path + "'");
  }
  std::string dir = ParentDir(path);
  struct stat st {};
  if (::stat(dir.c_str(), &st) != 0) {
    return FailedPrecondition("database directory " + dir + ": " + ErrnoMessage());
  }
  if (!S_ISDIR(st.st_mode)) {
    return FailedPrecondition("database directory " + dir + " is not a directory");
  }
  if (::access(dir.c_str(), W_OK | X_OK) != 0) {
    return FailedPrecondition("database directory " + dir + " is not writable: " + ErrnoMessage());
  }
  if (::stat(path.c_str(), &st) != 0) {
    if (errno == ENOENT) return false;  // created at open
    return FailedPrecondition("database " + path + ": " + ErrnoMessage());
  }
  if (!S_ISREG(st.st_mode))
    return FailedPrecondition("database " + path + " is not a regular file");
  if (::access(path.c_str(), R_OK | W_OK) != 0) {
    return FailedPrecondition("database " + path + " is not writable: " + ErrnoMessage());
  }
  if (st.st_size == 0) return false;  // SQLite treats an empty file as an empty database
  FUJI_RETURN_IF_ERROR(CheckHeader(path));
  return true;
}

Result<int> SchemaVersion(Connection& db) {
  FUJI_ASSIGN_OR_RETURN(
      Statement tables,
      db.Prepare("SELECT COUNT(*), COUNT(*) FILTER (WHERE name = 'schema_version') "
                 "FROM sqlite_schema WHERE type = 'table'"));
  FUJI_RETURN_IF_ERROR(tables.Step().status());
  int64_t table_count = tables.Int(0);
  bool has_version_table = tables.Int(1) > 0;
  if (!has_version_table) {
    if (table_count > 0) {
      return FailedPrecondition("database has tables but no schema_version: not a fuji database");
    }
    return 0;
  }
  FUJI_ASSIGN_OR_RETURN(Statement version,
                        db.Prepare("SELECT COALESCE(MAX(version), 0) FROM schema_version"));
  FUJI_RETURN_IF_ERROR(version.Step().status());
  return static_cast<int>(version.Int(0));
}

Status CheckDatabase(Connection& db, const std::string& path) {
  // quick_check reads every page (O(size)) but skips the index-vs-table cross-checks of
  // integrity_check; a corrupt database must be refused before the daemon acts on it.
  auto explain = [&path](const Status& status) {
    if (status.code() == StatusCode::kDataLoss)
      return DataLoss(path + " is corrupt: " + status.message());
    return status.WithContext(path);
  };
  Result<Statement> check = db.Prepare("PRAGMA quick_check");
  if (!check.ok()) return explain(check.status());
  std::string problems;
  while (true) {
    Result<bool> row = check->Step();
    if (!row.ok()) return explain(row.status());
    if (!*row) break;
    std::string line = check->Text(0);
    if (line != "ok") problems += (problems.empty() ? "" : "; ") + line;
  }
  if (!problems.empty()) return DataLoss(path + " is corrupt: " + problems);

  Result<int> version = SchemaVersion(db);
  if (!version.ok()) return explain(version.status());
  if (*version > kNumMigrations) {
    return FailedPrecondition(path + " has schema version " + std::to_string(*version) +
                              ", newer than this fujid knows (" + std::to_string(kNumMigrations) +
                              "); run a newer fujid");
  }
  return Status::Ok();
}

Status Migrate(Connection& db, const Clock& clock) {
  for (int i = 0; i < kNumMigrations; ++i) {
    const Migration& migration = kMigrations[i];
    // IMMEDIATE takes the write lock first, so a second process opening the same database waits
    // here and then sees the version this one wrote.
    FUJI_RETURN_IF_ERROR(db.Exec("BEGIN IMMEDIATE"));
    Status status = [&]() -> Status {
      FUJI_ASSIGN_OR_RETURN(int current, SchemaVersion(db));
      if (current >= migration.version) return Status::Ok();
      FUJI_RETURN_IF_ERROR(db.Exec(
          "CREATE TABLE IF NOT EXISTS schema_version ("
          "version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at_ms INTEGER NOT NULL)"));
      FUJI_RETURN_IF_ERROR(db.Exec(migration.sql));
      FUJI_ASSIGN_OR_RETURN(
          Statement record,
          db.Prepare("INSERT INTO schema_version (version, name, applied_at_ms) VALUES (?, ?, ?)"));
      return record.BindInt(1, migration.version)
          .BindText(2, migration.name)
          .BindInt(3, clock.NowMs())
          .Run();
    }();
    if (status.ok()) status = db.Exec("COMMIT");
    if (!status.ok()) {
      if (db.InTransaction()) (void)db.Exec("ROLLBACK");
      return status.WithContext(std::string("migration ") + migration.name);
    }
  }
  return Status::Ok();
}

}  // namespace fuji::store
