// AdminService: users and their tokens, join tokens, enrolled agents. Every call needs an admin's
// token (Authenticator::Admin).
#pragma once

#include "daemon/server/auth.h"
#include "fuji/v1/admin.grpc.pb.h"

namespace fuji::daemon {

// Thread-safe. auth is not owned and must outlive the gRPC server that serves this.
class AdminService final : public v1::AdminService::CallbackService {
 public:
  explicit AdminService(Authenticator* auth);

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

 private:
  Authenticator* auth_;
};

}  // namespace fuji::daemon
