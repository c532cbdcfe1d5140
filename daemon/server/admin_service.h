// AdminService: users and their tokens, join tokens, enrolled agents and their drains, backups of
// the database. Every call needs an admin's token (Authenticator::Admin).
#pragma once

#include "daemon/server/auth.h"
#include "daemon/store/job_store.h"
#include "fuji/v1/admin.grpc.pb.h"

namespace fuji::daemon {

// Thread-safe. auth and store are not owned and must outlive the gRPC server that serves this.
class AdminService final : public v1::AdminService::CallbackService {
 public:
  AdminService(Authenticator* auth, store::JobStore* store);

  grpc::ServerUnaryReactor* CreateUser(grpc::CallbackServerContext* context, const v1::CreateUserRequest* request,
                                       v1::CreateUserResponse* response) override;
  grpc::ServerUnaryReactor* ListUsers(grpc::CallbackServerContext* context, const v1::ListUsersRequest* request,
                                      v1::ListUsersResponse* response) override;
  grpc::ServerUnaryReactor* RevokeUser(grpc::CallbackServerContext* context, const v1::RevokeUserRequest* request,
                                       v1::User* response) override;
  grpc::ServerUnaryReactor* CreateJoinToken(grpc::CallbackServerContext* context,
                                            const v1::CreateJoinTokenRequest* request,
                                            v1::CreateJoinTokenResponse* response) override;
  grpc::ServerUnaryReactor* ListAgents(grpc::CallbackServerContext* context, const v1::ListAgentsRequest* request,
                                       v1::ListAgentsResponse* response) override;
  grpc::ServerUnaryReactor* RevokeAgent(grpc::CallbackServerContext* context, const v1::RevokeAgentRequest* request,
                                        v1::Agent* response) override;
  grpc::ServerUnaryReactor* DrainAgent(grpc::CallbackServerContext* context, const v1::DrainAgentRequest* request,
                                       v1::Agent* response) override;
  grpc::ServerWriteReactor<v1::BackupChunk>* Backup(grpc::CallbackServerContext* context,
                                                    const v1::BackupRequest* request) override;

 private:
  Authenticator* auth_;
  store::JobStore* store_;
};

}  // namespace fuji::daemon
