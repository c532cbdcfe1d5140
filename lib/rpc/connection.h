// How fuji's programs reach fujid: a gRPC channel that verifies fujid's certificate against the
// cluster CA, and the bearer credential every call carries (a user's token from the CLI, an
// agent's credential or join token from fuji-agent).
#pragma once

#include <memory>
#include <string>

#include <grpcpp/grpcpp.h>

#include "lib/common/status.h"

namespace fuji::rpc {

// The metadata key that carries a credential, as "Bearer CREDENTIAL".
inline constexpr char kAuthorizationKey[] = "authorization";
inline constexpr char kBearerPrefix[] = "Bearer ";

struct Endpoint {
  std::string address;  // host:port
  std::string ca_file;  // PEM of the CA that signed fujid's certificate (TLS)
  // Plaintext, for a fujid started with --insecure (which listens on the loopback only).
  bool insecure = false;
};

// The host part of "host:port", "[v6]:port" or "unix:..." ("" when there is none).
std::string HostOf(const std::string& address);
// Whether `address` names a loopback host: localhost, 127.0.0.0/8, ::1, or a unix socket.
bool IsLoopbackAddress(const std::string& address);

// A channel to endpoint.address with `args`. TLS unless insecure: the CA file is read here
// (INVALID_ARGUMENT naming it when it cannot be read or holds no certificate), and the handshake
// accepts only a certificate it signed for that host. Insecure endpoints must be loopback ones.
Result<std::shared_ptr<grpc::Channel>> MakeChannel(const Endpoint& endpoint,
                                                    const grpc::ChannelArguments& args);

// Adds the credential to one call.
void Authorize(grpc::ClientContext* context, const std::string& credential);

// A failed call's status when the TLS handshake, not fujid, refused it: gRPC reports those as
// UNAVAILABLE with the handshake's words; this says so in one line a person can act on, or returns
// "" when the failure was something else.
std::string DescribeHandshakeFailure(const grpc::Status& status, const Endpoint& endpoint);

}  // namespace fuji::rpc
