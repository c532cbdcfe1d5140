// Authenticator; see auth.h.
#include "daemon/server/auth.h"

#include <mutex>

#include "lib/common/file_util.h"
#include "lib/common/limits.h"
#include "lib/rpc/connection.h"
#include "lib/security/token.h"

namespace fuji::daemon {
namespace {

const char* KindName(char kind) {
  switch (kind) {
    case 'u': return "user";
    case 'a': return "agent";
    default: return "join";
  }
}

bool ValidName(const std::string& name) {
  if (name.empty() || name.size() > limits::kMaxNameBytes) return false;
  if (!std::isalnum(static_cast<unsigned char>(name[0]))) return false;
  for (char c : name) {
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '.' && c != '_' && c != '-') return false;
  }
  return true;
}

}  // namespace

Authenticator::Authenticator(store::JobStore* store, const store::Clock* clock) : store_(store), clock_(clock) {}

Status Authenticator::Load() {
  FUJI_ASSIGN_OR_RETURN(std::vector<store::CredentialRecord> all, store_->Credentials());
  std::unique_lock lock(mu_);
  credentials_.clear();
  for (store::CredentialRecord& c : all) credentials_[c.id] = std::move(c);
  return Status::Ok();
}

Result<Caller> Authenticator::Authenticate(const grpc::ServerContextBase& context) const {
  const auto& metadata = context.client_metadata();
  auto it = metadata.find(rpc::kAuthorizationKey);
  if (it == metadata.end()) return Unauthenticated("no token: every call to fujid needs one");
  const std::string_view value(it->second.data(), it->second.size());
  const std::string_view prefix(rpc::kBearerPrefix);
  if (value.substr(0, prefix.size()) != prefix) return Unauthenticated(kInvalidToken);
  Result<security::Token> token = security::ParseToken(value.substr(prefix.size()));
  if (!token.ok()) return Unauthenticated(kInvalidToken);
  const char kind = static_cast<char>(token->kind);
  std::shared_lock lock(mu_);
  auto c = credentials_.find(token->id);
  if (c == credentials_.end() || c->second.kind != KindName(kind) ||
      !security::HashMatches(c->second.hash, c->second.salt, token->secret) ||
      c->second.revoked_at_ms.has_value()) {
    return Unauthenticated(kInvalidToken);
  }
  if (c->second.expires_at_ms.has_value() && *c->second.expires_at_ms <= clock_->NowMs()) {
    return Unauthenticated("join token expired");
  }
  Caller caller;
  caller.kind = kind == 'u' ? Caller::Kind::kUser : kind == 'a' ? Caller::Kind::kAgent : Caller::Kind::kJoin;
  caller.name = c->second.name;
  caller.admin = c->second.admin;
  caller.credential_id = c->second.id;
  return caller;
}

Result<Caller> Authenticator::User(const grpc::ServerContextBase& context) const {
  FUJI_ASSIGN_OR_RETURN(Caller caller, Authenticate(context));
  if (caller.kind != Caller::Kind::kUser) {
    return PermissionDenied("this is the users' API: an agent's credential or a join token cannot call it");
  }
  return caller;
}

Result<Caller> Authenticator::Admin(const grpc::ServerContextBase& context) const {
  FUJI_ASSIGN_OR_RETURN(Caller caller, User(context));
  if (!caller.admin) return PermissionDenied("user " + caller.name + " is not an admin");
  return caller;
}

Result<Caller> Authenticator::Agent(const grpc::ServerContextBase& context, const std::string& worker_id) const {
  FUJI_ASSIGN_OR_RETURN(Caller caller, Authenticate(context));
  if (caller.kind != Caller::Kind::kAgent) {
    return PermissionDenied("this is the agents' API: it needs an agent's credential (fuji-agent --join-token)");
  }
  if (caller.name != worker_id) {
    return PermissionDenied("this credential belongs to worker " + caller.name + ", not " + worker_id);
  }
  return caller;
}

Result<Caller> Authenticator::Join(const grpc::ServerContextBase& context) const {
  FUJI_ASSIGN_OR_RETURN(Caller caller, Authenticate(context));
  if (caller.kind != Caller::Kind::kJoin) {
    return PermissionDenied("enrolling needs a join token (fuji admin agent-token)");
  }
  return caller;
}

Result<NewCredential> Authenticator::Create(store::CredentialRecord record, char kind) {
  const std::string secret = security::NewSecret();
  record.salt = security::NewSalt();
  record.hash = security::HashSecret(record.salt, secret);
  FUJI_ASSIGN_OR_RETURN(record.id, store_->InsertCredential(record));
  record.created_at_ms = clock_->NowMs();
  NewCredential out;
  out.token = security::FormatToken({static_cast<security::TokenKind>(kind), record.id, secret});
  out.record = record;
  std::unique_lock lock(mu_);
  credentials_[record.id] = std::move(record);
  return out;
}

Result<NewCredential> Authenticator::CreateUser(const std::string& name, bool admin) {
  if (!ValidName(name)) {
    return InvalidArgument("a user name is 1-64 of letters, digits, '.', '_' and '-', starting with a letter or digit");
  }
  store::CredentialRecord record;
  record.kind = "user";
  record.name = name;
  record.admin = admin;
  return Create(std::move(record), 'u');
}

Result<NewCredential> Authenticator::CreateJoinToken(int64_t ttl_ms) {
  if (ttl_ms < 0 || ttl_ms > kMaxJoinTtlMs) return InvalidArgument("a join token lives 1 ms to 30 days");
  store::CredentialRecord record;
  record.kind = "join";
  record.expires_at_ms = clock_->NowMs() + (ttl_ms == 0 ? kDefaultJoinTtlMs : ttl_ms);
  return Create(std::move(record), 'j');
}

Result<NewCredential> Authenticator::EnrollAgent(const std::string& worker_id) {
  if (!ValidName(worker_id)) {
    return InvalidArgument("a worker id is 1-64 of letters, digits, '.', '_' and '-', starting with a letter or digit");
  }
  store::CredentialRecord record;
  record.kind = "agent";
  record.name = worker_id;
  return Create(std::move(record), 'a');
}

Result<store::CredentialRecord> Authenticator::Revoke(const std::string& kind, const std::string& name,
                                                     const std::string& missing) {
  int64_t id = 0;
  {
    std::shared_lock lock(mu_);
    for (const auto& [cid, c] : credentials_) {
      if (c.kind == kind && c.name == name && (id == 0 || !c.revoked_at_ms.has_value())) id = cid;
    }
  }
  if (id == 0) return NotFound(missing);
  FUJI_RETURN_IF_ERROR(store_->RevokeCredential(id));
  std::unique_lock lock(mu_);
  store::CredentialRecord& c = credentials_[id];
  if (!c.revoked_at_ms.has_value()) c.revoked_at_ms = clock_->NowMs();
  return c;
}

Result<store::CredentialRecord> Authenticator::RevokeUser(const std::string& name) {
  return Revoke("user", name, "user " + name + " not found");
}

Result<store::CredentialRecord> Authenticator::RevokeAgent(const std::string& worker_id) {
  return Revoke("agent", worker_id, "no enrolled worker " + worker_id);
}

std::vector<store::CredentialRecord> Authenticator::Users() const {
  std::vector<store::CredentialRecord> out;
  std::shared_lock lock(mu_);
  for (const auto& [id, c] : credentials_) {
    if (c.kind == "user") out.push_back(c);
  }
  return out;
}

std::vector<store::CredentialRecord> Authenticator::Agents() const {
  std::vector<store::CredentialRecord> out;
  std::shared_lock lock(mu_);
  for (const auto& [id, c] : credentials_) {
    if (c.kind == "agent") out.push_back(c);
  }
  return out;
}

Result<bool> Authenticator::EnsureAdmin(const std::string& token_path) {
  {
    std::shared_lock lock(mu_);
    for (const auto& [id, c] : credentials_) {
      if (c.kind == "user" && c.admin && !c.revoked_at_ms.has_value()) return false;
    }
  }
  // The first admin is "admin"; if that name was revoked, the next free "admin-N".
  std::string name = "admin";
  for (int n = 2;; ++n) {
    bool taken = false;
    {
      std::shared_lock lock(mu_);
      for (const auto& [id, c] : credentials_) taken = taken || (c.kind == "user" && c.name == name);
    }
    if (!taken) break;
    name = "admin-" + std::to_string(n);
  }
  FUJI_ASSIGN_OR_RETURN(NewCredential admin, CreateUser(name, /*admin=*/true));
  FUJI_RETURN_IF_ERROR(WriteFileAtomically(token_path, admin.token + "\n", 0600));
  return true;
}

}  // namespace fuji::daemon
