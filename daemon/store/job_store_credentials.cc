// JobStore: credentials of users, agents and join tokens (migration 6).
#include "daemon/store/job_rows.h"
#include "daemon/store/job_store.h"
#include "daemon/store/sqlite.h"
#include "daemon/store/writer.h"

namespace fuji::store {
namespace {

constexpr char kCredentialColumns[] =
    "id, kind, name, admin, salt, hash, created_at_ms, expires_at_ms, revoked_at_ms";

CredentialRecord ReadCredential(const Statement& row) {
  CredentialRecord c;
  c.id = row.Int(0);
  c.kind = row.Text(1);
  c.name = row.Text(2);
  c.admin = row.Int(3) != 0;
  c.salt = row.Text(4);
  c.hash = row.Text(5);
  c.created_at_ms = row.Int(6);
  if (!row.IsNull(7)) c.expires_at_ms = row.Int(7);
  if (!row.IsNull(8)) c.revoked_at_ms = row.Int(8);
  return c;
}

}  // namespace

Result<int64_t> JobStore::InsertCredential(const CredentialRecord& credential) {
  const CredentialRecord& c = credential;
  if (c.kind != "user" && c.kind != "agent" && c.kind != "join") {
    return InvalidArgument("unknown credential kind '" + c.kind + "'");
  }
  int64_t id = 0;
  FUJI_RETURN_IF_ERROR(writer_->Run([&](Connection& db) -> Status {
    // The unique indexes would refuse these too; asking first gives a message a person can act on.
    if (c.kind != "join") {
      FUJI_ASSIGN_OR_RETURN(
          Statement taken,
          db.Prepare("SELECT EXISTS (SELECT 1 FROM credentials WHERE kind = ?1 AND name = ?2 AND "
                     "(kind = 'user' OR revoked_at_ms IS NULL))"));
      FUJI_RETURN_IF_ERROR(taken.BindText(1, c.kind).BindText(2, c.name).Step().status());
      if (taken.Int(0) != 0) {
        return AlreadyExists(c.kind == "user" ? "user " + c.name + " exists (names are never given twice)"
                                              : "worker " + c.name + " is enrolled already");
      }
    }
    FUJI_ASSIGN_OR_RETURN(
        Statement insert,
        db.Prepare("INSERT INTO credentials (kind, name, admin, salt, hash, created_at_ms, "
                   "expires_at_ms) VALUES (?, ?, ?, ?, ?, ?, ?)"));
    insert.BindText(1, c.kind).BindText(2, c.name).BindInt(3, c.admin ? 1 : 0);
    insert.BindText(4, c.salt).BindText(5, c.hash).BindInt(6, clock_->NowMs());
    if (c.expires_at_ms.has_value()) {
      insert.BindInt(7, *c.expires_at_ms);
    } else {
      insert.BindNull(7);
    }
    FUJI_RETURN_IF_ERROR(insert.Run());
    id = db.LastInsertRowId();
    return Status::Ok();
  }));
  return id;
}

Status JobStore::RevokeCredential(int64_t id) {
  return writer_->Run([&](Connection& db) -> Status {
    FUJI_ASSIGN_OR_RETURN(
        Statement update,
        db.Prepare("UPDATE credentials SET revoked_at_ms = COALESCE(revoked_at_ms, ?) WHERE id = ?"));
    FUJI_RETURN_IF_ERROR(update.BindInt(1, clock_->NowMs()).BindInt(2, id).Run());
    if (db.Changes() == 0) return NotFound("credential " + std::to_string(id) + " not found");
    return Status::Ok();
  });
}

Result<std::vector<CredentialRecord>> JobStore::Credentials() {
  FUJI_ASSIGN_OR_RETURN(ReaderPool::Lease db, readers_->Acquire());
  FUJI_ASSIGN_OR_RETURN(Statement select, db->Prepare(std::string("SELECT ") + kCredentialColumns +
                                                      " FROM credentials ORDER BY id"));
  std::vector<CredentialRecord> out;
  for (;;) {
    FUJI_ASSIGN_OR_RETURN(bool row, select.Step());
    if (!row) break;
    out.push_back(ReadCredential(select));
  }
  return out;
}

}  // namespace fuji::store
