// Authenticator: who is calling fujid, and what they may do. Every RPC of fujid's services asks it
// first. A call carries one bearer credential ("authorization: Bearer fuji_<kind>_<id>_<secret>",
// lib/security/token.h): a user's token, an agent's credential, or a join token (Enroll only).
// Only salted hashes are stored (the credentials table); the Authenticator keeps them in memory,
// and since every change goes through it, a revocation holds from the next call on.
#pragma once

#include <cstdint>
#include <map>
#include <shared_mutex>
#include <string>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "daemon/store/clock.h"
#include "daemon/store/job_store.h"
#include "lib/common/status.h"

namespace fuji::daemon {

// The authenticated caller of one RPC.
struct Caller {
  enum class Kind { kUser, kAgent, kJoin };
  Kind kind = Kind::kUser;
  std::string name;  // user name or worker id
  bool admin = false;
  int64_t credential_id = 0;
};

// A credential made just now: its record and the token, which is never stored.
struct NewCredential {
  store::CredentialRecord record;
  std::string token;
};

// Thread-safe.
class Authenticator {
 public:
  // Join tokens live at most this long.
  static constexpr int64_t kMaxJoinTtlMs = int64_t{30} * 24 * 3600 * 1000;
  static constexpr int64_t kDefaultJoinTtlMs = int64_t{3600} * 1000;

  // store and clock are not owned and must outlive it. Call Load before serving.
  Authenticator(store::JobStore* store, const store::Clock* clock);
  Status Load();

  // The caller of `context`, which must be a user (an admin, for Admin): UNAUTHENTICATED without a
  // valid, unrevoked token; PERMISSION_DENIED for an agent's credential or a join token (or a
  // user who is not an admin, for Admin).
  Result<Caller> User(const grpc::ServerContextBase& context) const;
  Result<Caller> Admin(const grpc::ServerContextBase& context) const;
  // The caller must be the agent enrolled as worker_id.
  Result<Caller> Agent(const grpc::ServerContextBase& context, const std::string& worker_id) const;
  // The caller must hold an unexpired join token.
  Result<Caller> Join(const grpc::ServerContextBase& context) const;

  // Users: names are 1-64 of [A-Za-z0-9._-], starting with a letter or digit; never given twice.
  Result<NewCredential> CreateUser(const std::string& name, bool admin);
  Result<store::CredentialRecord> RevokeUser(const std::string& name);
  std::vector<store::CredentialRecord> Users() const;
  // Join tokens: ttl_ms 0 is kDefaultJoinTtlMs; more than kMaxJoinTtlMs is INVALID_ARGUMENT.
  Result<NewCredential> CreateJoinToken(int64_t ttl_ms);
  // Agents: a worker id holds one live credential (ALREADY_EXISTS for a second); a revoked one
  // may enroll again.
  Result<NewCredential> EnrollAgent(const std::string& worker_id);
  Result<store::CredentialRecord> RevokeAgent(const std::string& worker_id);
  std::vector<store::CredentialRecord> Agents() const;

  // fujid's first start: when no admin user exists, creates "admin" and writes its token to
  // token_path (mode 0600, O_EXCL|O_NOFOLLOW then renamed into place). Returns whether it did.
  Result<bool> EnsureAdmin(const std::string& token_path);

 private:
  Result<Caller> Authenticate(const grpc::ServerContextBase& context) const;
  Result<NewCredential> Create(store::CredentialRecord record, char kind);
  // Revokes the live credential of kind and name (else the latest one); NOT_FOUND `missing`.
  Result<store::CredentialRecord> Revoke(const std::string& kind, const std::string& name,
                                         const std::string& missing);

  store::JobStore* store_;
  const store::Clock* clock_;
  mutable std::shared_mutex mu_;
  std::map<int64_t, store::CredentialRecord> credentials_;  // by id
};

// The message of every refused credential: it never says which part was wrong.
inline constexpr char kInvalidToken[] = "invalid or revoked token";

}  // namespace fuji::daemon
