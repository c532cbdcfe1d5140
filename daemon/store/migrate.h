// Schema migrations: the embedded schema/NNNN_*.sql files and the checks and upgrade run at open.
#pragma once

#include <string>

#include "daemon/store/clock.h"
#include "daemon/store/sqlite.h"
#include "lib/common/status.h"

namespace fuji::store {

// One schema/NNNN_name.sql file; version is NNNN. Defined in the generated migrations_embedded.cc,
// versions 1..kNumMigrations in order.
struct Migration {
  int version;
  const char* name;
  const char* sql;
};
extern const Migration kMigrations[];
extern const int kNumMigrations;

// Checks, without opening it through SQLite, that path can hold a database: an existing file must
// be a regular, writable file starting with the SQLite header (DATA_LOSS otherwise), and its
// directory must be writable, since WAL mode keeps path-wal and path-shm beside it. Returns
// whether path holds a database to verify (false: missing or empty, SQLite starts it afresh).
Result<bool> CheckDatabasePath(const std::string& path);

// The highest migration applied to db: 0 for an empty database. FAILED_PRECONDITION when db holds
// tables but no schema_version (some other program's database).
Result<int> SchemaVersion(Connection& db);

// Refuses a database that is corrupt (PRAGMA quick_check; DATA_LOSS) or newer than this binary
// (FAILED_PRECONDITION). Run it on a read-only connection: that one cannot even checkpoint a
// leftover WAL when it closes, so a refused database is left exactly as it was.
Status CheckDatabase(Connection& db, const std::string& path);

// Applies each pending migration in its own transaction, recording it in schema_version.
Status Migrate(Connection& db, const Clock& clock);

}  // namespace fuji::store
