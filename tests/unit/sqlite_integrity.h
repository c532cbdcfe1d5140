// PRAGMA integrity_check of a database file, for tests of what fujid writes and copies.
#pragma once

#include <sqlite3.h>

#include <string>

namespace fuji::testing {

// "ok" for a sound database, else SQLite's first complaint (or why it could not be read).
inline std::string IntegrityCheck(const std::string& path) {
  sqlite3* db = nullptr;
  std::string result = "cannot open " + path;
  if (sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READONLY, nullptr) == SQLITE_OK) {
    sqlite3_stmt* check = nullptr;
    if (sqlite3_prepare_v2(db, "PRAGMA integrity_check", -1, &check, nullptr) == SQLITE_OK &&
        sqlite3_step(check) == SQLITE_ROW) {
      result = reinterpret_cast<const char*>(sqlite3_column_text(check, 0));
    } else {
      result = sqlite3_errmsg(db);
    }
    sqlite3_finalize(check);
  }
  sqlite3_close(db);
  return result;
}

}  // namespace fuji::testing
