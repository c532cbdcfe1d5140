// Tests of opening the job store: creation, migrations, refusals that leave the file untouched,
// unwritable paths, and that every List query is served by an index.
#include <sqlite3.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <random>
#include <string>

#include <gtest/gtest.h>

#include "daemon/store/job_rows.h"
#include "daemon/store/job_store.h"
#include "daemon/store/migrate.h"
#include "lib/common/file_util.h"

namespace fuji::store {
namespace {

// A fresh scratch directory per test under the build tree.
std::string ScratchDir() {
  const testing::TestInfo* test = testing::UnitTest::GetInstance()->current_test_info();
  std::string dir = std::string(FUJI_BINARY_DIR) + "/store_open_test_" + std::to_string(getpid()) +
                    "_" + test->name();
  std::string rm = "rm -rf '" + dir + "'";
  EXPECT_EQ(std::system(rm.c_str()), 0);
  EXPECT_EQ(::mkdir(dir.c_str(), 0755), 0);
  return dir;
}

// Runs SQL on a separate raw connection and returns the first column of every row, '|'-joined.
std::string RawQuery(const std::string& path, const std::string& sql) {
  sqlite3* db = nullptr;
  EXPECT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
  std::string out;
  auto collect = [](void* arg, int n, char** values, char**) {
    auto* text = static_cast<std::string*>(arg);
    if (!text->empty()) *text += "|";
    *text += n > 0 && values[0] != nullptr ? values[0] : "NULL";
    return 0;
  };
  char* error = nullptr;
  EXPECT_EQ(sqlite3_exec(db, sql.c_str(), collect, &out, &error), SQLITE_OK)
      << (error ? error : "") << " in " << sql;
  sqlite3_free(error);
  sqlite3_close(db);
  return out;
}

JobRecord Job() {
  JobRecord job;
  job.spec = R"({"model":"111M","prompt":"Mt. Fuji"})";
  return job;
}

bool Exists(const std::string& path) {
  return ::access(path.c_str(), F_OK) == 0;
}

TEST(StoreOpenTest, CreatesAndMigrates) {
  FakeClock clock;
  std::string path = ScratchDir() + "/fuji.db";
  auto store = JobStore::Open(path, &clock);
  ASSERT_TRUE(store.ok()) << store.status().ToString();
  EXPECT_EQ(RawQuery(path, "SELECT MAX(version) FROM schema_version"),
            std::to_string(kNumMigrations));
  EXPECT_EQ(RawQuery(path, "PRAGMA journal_mode"), "wal");
  EXPECT_EQ(RawQuery(path, "SELECT name FROM schema_version WHERE version = 1"), "0001_jobs.sql");
}

TEST(StoreOpenTest, ReopenIsIdempotent) {
  FakeClock clock;
  std::string path = ScratchDir() + "/fuji.db";
  int64_t id = 0;
  {
    auto store = JobStore::Open(path, &clock);
    ASSERT_TRUE(store.ok()) << store.status().ToString();
    auto submitted = (*store)->Submit(Job());
    ASSERT_TRUE(submitted.ok()) << submitted.status().ToString();
    id = *submitted;
  }
  for (int i = 0; i < 2; ++i) {
    auto store = JobStore::Open(path, &clock);
    ASSERT_TRUE(store.ok()) << store.status().ToString();
    EXPECT_TRUE((*store)->Get(id).ok());
  }
  EXPECT_EQ(RawQuery(path, "SELECT COUNT(*) FROM schema_version"), std::to_string(kNumMigrations));
}

TEST(StoreOpenTest, RefusesNewerSchemaUntouched) {
  FakeClock clock;
  std::string path = ScratchDir() + "/fuji.db";
  ASSERT_TRUE(JobStore::Open(path, &clock).ok());
  RawQuery(path, "INSERT INTO schema_version VALUES (999, '0999_future.sql', 0)");
  auto before = ReadFile(path);
  ASSERT_TRUE(before.ok());
  auto store = JobStore::Open(path, &clock);
  ASSERT_FALSE(store.ok());
  EXPECT_EQ(store.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(store.status().message().find("schema version 999, newer than this fujid knows"),
            std::string::npos)
      << store.status().message();
  EXPECT_EQ(*ReadFile(path), *before);
}

TEST(StoreOpenTest, RefusesRandomBytesUntouched) {
  FakeClock clock;
  std::string path = ScratchDir() + "/fuji.db";
  std::mt19937 rng(7);
  std::string noise(64 << 10, '\0');
  for (char& c : noise) c = static_cast<char>(rng());
  ASSERT_TRUE(WriteFileAtomically(path, noise).ok());
  auto store = JobStore::Open(path, &clock);
  ASSERT_FALSE(store.ok());
  EXPECT_EQ(store.status().code(), StatusCode::kDataLoss);
  EXPECT_NE(store.status().message().find("is not a SQLite database"), std::string::npos)
      << store.status().message();
  EXPECT_EQ(*ReadFile(path), noise);
  EXPECT_FALSE(Exists(path + "-wal"));
  EXPECT_FALSE(Exists(path + "-shm"));
}

TEST(StoreOpenTest, RefusesCorruptDatabaseUntouched) {
  FakeClock clock;
  std::string path = ScratchDir() + "/fuji.db";
  {
    auto store = JobStore::Open(path, &clock);
    ASSERT_TRUE(store.ok());
    JobRecord job = Job();
    job.spec = R"({"padding":")" + std::string(2000, 'x') + "\"}";
    for (int i = 0; i < 100; ++i) ASSERT_TRUE((*store)->Submit(job).ok());
  }
  // Keep the header page, scribble over the b-tree pages behind it.
  std::string bytes = *ReadFile(path);
  ASSERT_GT(bytes.size(), 64u << 10);
  std::mt19937 rng(11);
  for (size_t i = 4096; i < bytes.size(); i += 7) bytes[i] = static_cast<char>(rng());
  ASSERT_TRUE(WriteFileAtomically(path, bytes).ok());
  auto store = JobStore::Open(path, &clock);
  ASSERT_FALSE(store.ok());
  EXPECT_EQ(store.status().code(), StatusCode::kDataLoss) << store.status().ToString();
  EXPECT_NE(store.status().message().find("corrupt"), std::string::npos)
      << store.status().message();
  // Errors reach logs and clients: they name what failed, never the SQL that failed.
  for (const char* sql : {"SELECT", "PRAGMA", "INSERT", "UPDATE", "CREATE"}) {
    EXPECT_EQ(store.status().message().find(sql), std::string::npos) << store.status().message();
  }
  EXPECT_EQ(*ReadFile(path), bytes);
}

TEST(StoreOpenTest, RefusesAnotherProgramsDatabase) {
  FakeClock clock;
  std::string path = ScratchDir() + "/other.db";
  RawQuery(path, "CREATE TABLE photos (id INTEGER PRIMARY KEY)");
  auto store = JobStore::Open(path, &clock);
  ASSERT_FALSE(store.ok());
  EXPECT_EQ(store.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(store.status().message().find("not a fuji database"), std::string::npos);
}

TEST(StoreOpenTest, UnwritableLocationsGiveClearErrors) {
  FakeClock clock;
  std::string dir = ScratchDir();
  ASSERT_TRUE(WriteFileAtomically(dir + "/plain-file", "x").ok());

  auto under_file = JobStore::Open(dir + "/plain-file/fuji.db", &clock);
  ASSERT_FALSE(under_file.ok());
  EXPECT_EQ(under_file.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(under_file.status().message().find("not a directory"), std::string::npos)
      << under_file.status().message();

  auto missing = JobStore::Open(dir + "/missing/fuji.db", &clock);
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.status().message().find("No such file or directory"), std::string::npos)
      << missing.status().message();

  EXPECT_EQ(JobStore::Open(":memory:", &clock).status().code(), StatusCode::kInvalidArgument);

  if (::geteuid() != 0) {  // root writes anywhere
    ASSERT_EQ(::mkdir((dir + "/locked").c_str(), 0500), 0);
    auto locked = JobStore::Open(dir + "/locked/fuji.db", &clock);
    ASSERT_FALSE(locked.ok());
    EXPECT_NE(locked.status().message().find("is not writable"), std::string::npos)
        << locked.status().message();
  }
}

TEST(StoreOpenTest, ListQueriesUseIndexesWithoutSorting) {
  FakeClock clock;
  std::string path = ScratchDir() + "/fuji.db";
  ASSERT_TRUE(JobStore::Open(path, &clock).ok());
  for (bool by_state : {false, true}) {
    for (bool by_kind : {false, true}) {
     for (bool by_owner : {false, true}) {
      std::string plan;
      sqlite3* db = nullptr;
      ASSERT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
      sqlite3_stmt* stmt = nullptr;
      std::string sql = "EXPLAIN QUERY PLAN " + ListJobsSql(by_state, by_kind, by_owner);
      ASSERT_EQ(sqlite3_prepare_v2(db, sql.c_str(), -1, &stmt, nullptr), SQLITE_OK);
      while (sqlite3_step(stmt) == SQLITE_ROW) {
        plan += reinterpret_cast<const char*>(sqlite3_column_text(stmt, 3));
        plan += "; ";
      }
      sqlite3_finalize(stmt);
      sqlite3_close(db);
      SCOPED_TRACE(sql + " -> " + plan);
      EXPECT_EQ(plan.find("TEMP B-TREE"), std::string::npos);
      EXPECT_NE(plan.find("SEARCH jobs USING"), std::string::npos);
      if (by_owner && !by_state && !by_kind) {
        EXPECT_NE(plan.find("INDEX jobs_owner"), std::string::npos);
      } else if (by_state || by_kind) {
        EXPECT_NE(plan.find("INDEX jobs_"), std::string::npos);
      }
     }
    }
  }
}

// A database at schema version 9 (before gangs) opens at the current version; its live
// assignment reads back with no gang, and a gang can then be assigned.
TEST(StoreOpenTest, Version9DatabaseGainsGangMembers) {
  ASSERT_GE(kNumMigrations, 10);
  FakeClock clock;
  const std::string path = ScratchDir() + "/fuji.db";
  {
    sqlite3* db = nullptr;
    ASSERT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
    auto exec = [db](const std::string& sql) {
      char* error = nullptr;
      EXPECT_EQ(sqlite3_exec(db, sql.c_str(), nullptr, nullptr, &error), SQLITE_OK)
          << (error ? error : "") << " in " << sql.substr(0, 200);
      sqlite3_free(error);
    };
    exec("CREATE TABLE schema_version (version INTEGER PRIMARY KEY, name TEXT NOT NULL, "
         "applied_at_ms INTEGER NOT NULL)");
    for (int i = 0; i < 9; ++i) {
      ASSERT_EQ(kMigrations[i].version, i + 1);
      exec(kMigrations[i].sql);
      exec("INSERT INTO schema_version VALUES (" + std::to_string(i + 1) + ", '" + kMigrations[i].name + "', 0)");
    }
    exec("INSERT INTO jobs (id, kind, state, spec, devices, max_attempts, submitted_at_ms, updated_at_ms, "
         "worker_id) VALUES (1, 'finetune', 'RUNNING', '{}', 1, 1, 0, 0, 'w1')");
    exec("INSERT INTO workers VALUES ('w1', 'node1', 0, 0, 'ONLINE', NULL, NULL, NULL, NULL, NULL)");
    exec("INSERT INTO devices (worker_id, device_index, name, total_mib, kind) VALUES "
         "('w1', 0, 'cpu', 1, 'cpu'), ('w1', 1, 'cpu', 1, 'cpu')");
    exec("INSERT INTO assignments VALUES (1, 0, 'w1', '[0]', 0, 100, NULL)");
    exec("INSERT INTO jobs (id, kind, state, spec, devices, max_attempts, submitted_at_ms, updated_at_ms) "
         "VALUES (2, 'finetune', 'QUEUED', '{}', 2, 1, 0, 0)");
    sqlite3_close(db);
  }
  auto store = JobStore::Open(path, &clock);
  ASSERT_TRUE(store.ok()) << store.status().ToString();
  EXPECT_EQ(RawQuery(path, "SELECT MAX(version) FROM schema_version"), std::to_string(kNumMigrations));
  EXPECT_EQ(RawQuery(path, "SELECT name FROM schema_version WHERE version = 10"), "0010_gangs.sql");
  auto running = (*store)->Get(1);
  ASSERT_TRUE(running.ok()) << running.status().ToString();
  EXPECT_EQ(running->worker_id, "w1");
  EXPECT_TRUE(running->gang.empty());
  WorkerRecord w2{"w2", "node2", 0, 0, "", {{0, "cpu", 1, "cpu"}}};
  ASSERT_TRUE((*store)->RegisterWorker(w2).ok());
  GangMemberRecord a, b;
  a.worker_id = "w1";
  b.worker_id = "w2";
  a.advertise_addr = b.advertise_addr = "127.0.0.1";
  b.first_rank = 1;
  a.device_indices = {1};
  b.device_indices = {0};
  Status assigned = (*store)->AssignGang(2, {a, b}, 1000);
  ASSERT_TRUE(assigned.ok()) << assigned.ToString();
  EXPECT_EQ((*store)->Get(2)->gang.size(), 2u);
  EXPECT_EQ((*store)->ActiveGangMembers()->size(), 2u);
}

}  // namespace
}  // namespace fuji::store
