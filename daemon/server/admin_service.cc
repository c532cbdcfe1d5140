// AdminService; see admin_service.h. The work is the Authenticator's and the store's.
#include "daemon/server/admin_service.h"

#include <map>

#include "daemon/server/backup.h"
#include "daemon/server/grpc_status.h"
#include "lib/common/log.h"

namespace fuji::daemon {
namespace {

v1::User UserToProto(const store::CredentialRecord& c) {
  v1::User out;
  out.set_name(c.name);
  out.set_admin(c.admin);
  out.set_created_at_ms(c.created_at_ms);
  out.set_revoked_at_ms(c.revoked_at_ms.value_or(0));
  return out;
}

v1::Agent AgentToProto(const store::CredentialRecord& c) {
  v1::Agent out;
  out.set_worker_id(c.name);
  out.set_enrolled_at_ms(c.created_at_ms);
  out.set_revoked_at_ms(c.revoked_at_ms.value_or(0));
  return out;
}

}  // namespace

AdminService::AdminService(Authenticator* auth, store::JobStore* store) : auth_(auth), store_(store) {}

grpc::ServerUnaryReactor* AdminService::CreateUser(grpc::CallbackServerContext* context,
                                                   const v1::CreateUserRequest* request,
                                                   v1::CreateUserResponse* response) {
  Result<Caller> caller = auth_->Admin(*context);
  if (!caller.ok()) return Finish(context, caller.status());
  Result<NewCredential> user = auth_->CreateUser(request->name(), request->admin());
  if (user.ok()) {
    *response->mutable_user() = UserToProto(user->record);
    response->set_token(user->token);
    log::Info("user " + user->record.name + (user->record.admin ? " (admin)" : "") + " created by " + caller->name);
  }
  return Finish(context, user.status());
}

grpc::ServerUnaryReactor* AdminService::ListUsers(grpc::CallbackServerContext* context,
                                                  const v1::ListUsersRequest*, v1::ListUsersResponse* response) {
  Result<Caller> caller = auth_->Admin(*context);
  if (caller.ok()) {
    for (const store::CredentialRecord& c : auth_->Users()) *response->add_users() = UserToProto(c);
  }
  return Finish(context, caller.status());
}

grpc::ServerUnaryReactor* AdminService::RevokeUser(grpc::CallbackServerContext* context,
                                                   const v1::RevokeUserRequest* request, v1::User* response) {
  Result<Caller> caller = auth_->Admin(*context);
  if (!caller.ok()) return Finish(context, caller.status());
  Result<store::CredentialRecord> user = auth_->RevokeUser(request->name());
  if (user.ok()) {
    *response = UserToProto(*user);
    log::Info("user " + user->name + " revoked by " + caller->name);
  }
  return Finish(context, user.status());
}

grpc::ServerUnaryReactor* AdminService::CreateJoinToken(grpc::CallbackServerContext* context,
                                                        const v1::CreateJoinTokenRequest* request,
                                                        v1::CreateJoinTokenResponse* response) {
  Result<Caller> caller = auth_->Admin(*context);
  if (!caller.ok()) return Finish(context, caller.status());
  Result<NewCredential> join = auth_->CreateJoinToken(request->ttl_ms());
  if (join.ok()) {
    response->set_token(join->token);
    response->set_expires_at_ms(join->record.expires_at_ms.value_or(0));
    log::Info("join token " + std::to_string(join->record.id) + " created by " + caller->name);
  }
  return Finish(context, join.status());
}

grpc::ServerUnaryReactor* AdminService::ListAgents(grpc::CallbackServerContext* context,
                                                   const v1::ListAgentsRequest*, v1::ListAgentsResponse* response) {
  Result<Caller> caller = auth_->Admin(*context);
  if (!caller.ok()) return Finish(context, caller.status());
  Result<std::vector<store::WorkerRecord>> workers = store_->ListWorkers();
  if (!workers.ok()) return Finish(context, workers.status());
  Result<std::map<std::string, std::vector<int64_t>>> running = store_->LiveJobsByWorker();
  if (!running.ok()) return Finish(context, running.status());
  std::map<std::string, const store::WorkerRecord*> by_id;
  for (const store::WorkerRecord& w : *workers) by_id[w.id] = &w;
  for (const store::CredentialRecord& c : auth_->Agents()) {
    v1::Agent* agent = response->add_agents();
    *agent = AgentToProto(c);
    // A revoked credential's worker id may be enrolled again: the drain shows on the live one.
    const auto worker = by_id.find(c.name);
    if (c.revoked_at_ms || worker == by_id.end()) continue;
    const auto jobs = running->find(c.name);
    agent->set_running_jobs(jobs == running->end() ? 0 : static_cast<int32_t>(jobs->second.size()));
    if (worker->second->drained_at_ms) {
      agent->set_drained_at_ms(*worker->second->drained_at_ms);
      agent->set_drain_requeue(worker->second->drain_requeue);
    }
  }
  return Finish(context, Status::Ok());
}

grpc::ServerUnaryReactor* AdminService::RevokeAgent(grpc::CallbackServerContext* context,
                                                    const v1::RevokeAgentRequest* request, v1::Agent* response) {
  Result<Caller> caller = auth_->Admin(*context);
  if (!caller.ok()) return Finish(context, caller.status());
  Result<store::CredentialRecord> agent = auth_->RevokeAgent(request->worker_id());
  if (agent.ok()) {
    *response = AgentToProto(*agent);
    log::Info("agent " + agent->name + " revoked by " + caller->name);
  }
  return Finish(context, agent.status());
}

grpc::ServerUnaryReactor* AdminService::DrainAgent(grpc::CallbackServerContext* context,
                                                   const v1::DrainAgentRequest* request, v1::Agent* response) {
  Result<Caller> caller = auth_->Admin(*context);
  if (!caller.ok()) return Finish(context, caller.status());
  if (request->worker_id().empty() || request->worker_id().size() > limits::kMaxNameBytes) {
    return Finish(context, InvalidArgument("a worker id is 1 to " + std::to_string(limits::kMaxNameBytes) + " bytes"));
  }
  if (request->requeue() && !request->drain()) {
    return Finish(context, InvalidArgument("requeue goes with a drain, not an undrain"));
  }
  Result<std::optional<int64_t>> drained =
      store_->SetDrained(request->worker_id(), request->drain(), request->requeue());
  if (drained.ok()) {
    response->set_worker_id(request->worker_id());
    response->set_drained_at_ms(drained->value_or(0));
    response->set_drain_requeue(request->drain() && request->requeue());
    Result<std::map<std::string, std::vector<int64_t>>> running = store_->LiveJobsByWorker();
    if (running.ok() && running->count(request->worker_id()) > 0) {
      response->set_running_jobs(static_cast<int32_t>(running->at(request->worker_id()).size()));
    }
    log::Info("agent " + request->worker_id() +
              (!request->drain() ? " undrained" : request->requeue() ? " drained with requeue" : " drained") +
              " by " + caller->name);
  }
  return Finish(context, drained.status());
}

grpc::ServerWriteReactor<v1::BackupChunk>* AdminService::Backup(grpc::CallbackServerContext* context,
                                                                const v1::BackupRequest*) {
  Result<Caller> caller = auth_->Admin(*context);
  if (caller.ok()) log::Info("database backup for " + caller->name);
  return StartBackup(store_, caller.status());
}

}  // namespace fuji::daemon
