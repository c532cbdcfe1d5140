// Channels to fujid and their credentials; see connection.h.
#include "lib/rpc/connection.h"

#include <arpa/inet.h>

#include "lib/common/file_util.h"

namespace fuji::rpc {

std::string HostOf(const std::string& address) {
  if (address.rfind("unix:", 0) == 0) return "";
  std::string rest = address;
  if (const size_t scheme = rest.find("://"); scheme != std::string::npos) rest = rest.substr(scheme + 3);
  if (!rest.empty() && rest[0] == '[') {
    const size_t close = rest.find(']');
    return close == std::string::npos ? rest.substr(1) : rest.substr(1, close - 1);
  }
  const size_t colon = rest.rfind(':');
  return colon == std::string::npos ? rest : rest.substr(0, colon);
}

bool IsLoopbackAddress(const std::string& address) {
  if (address.rfind("unix:", 0) == 0) return true;
  const std::string host = HostOf(address);
  if (host == "localhost" || host == "ip6-localhost") return true;
  in_addr v4{};
  if (::inet_pton(AF_INET, host.c_str(), &v4) == 1) return (ntohl(v4.s_addr) >> 24) == 127;
  in6_addr v6{};
  if (::inet_pton(AF_INET6, host.c_str(), &v6) == 1) return IN6_IS_ADDR_LOOPBACK(&v6);
  return false;
}

Result<std::shared_ptr<grpc::Channel>> MakeChannel(const Endpoint& endpoint,
                                                    const grpc::ChannelArguments& args) {
  if (endpoint.insecure) {
    if (!IsLoopbackAddress(endpoint.address)) {
      return InvalidArgument("plaintext (--insecure) is allowed to loopback addresses only, not " +
                             endpoint.address);
    }
    return grpc::CreateCustomChannel(endpoint.address, grpc::InsecureChannelCredentials(), args);
  }
  if (endpoint.ca_file.empty()) {
    return InvalidArgument("no CA to verify fujid at " + endpoint.address +
                           " with: pass --ca FILE, set FUJI_CA, or run fuji login");
  }
  Result<std::string> ca = ReadFile(endpoint.ca_file, 1 << 20);
  if (!ca.ok()) return InvalidArgument("cannot read the CA " + endpoint.ca_file + ": " + ca.status().message());
  if (ca->find("-----BEGIN CERTIFICATE-----") == std::string::npos) {
    return InvalidArgument("the CA " + endpoint.ca_file + " holds no PEM certificate");
  }
  grpc::SslCredentialsOptions options;
  options.pem_root_certs = *ca;
  return grpc::CreateCustomChannel(endpoint.address, grpc::SslCredentials(options), args);
}

void Authorize(grpc::ClientContext* context, const std::string& credential) {
  context->AddMetadata(kAuthorizationKey, std::string(kBearerPrefix) + credential);
}

std::string DescribeHandshakeFailure(const grpc::Status& status, const Endpoint& endpoint) {
  if (endpoint.insecure || status.error_code() != grpc::StatusCode::UNAVAILABLE) return "";
  const std::string& m = status.error_message();
  for (const char* word : {"Handshake", "handshake", "SSL", "certificate", "TLS", "ssl"}) {
    if (m.find(word) != std::string::npos) {
      return "TLS handshake with fujid at " + endpoint.address + " failed: its certificate is not signed by " +
             endpoint.ca_file + " for that address (is it the cluster CA from fujid's state directory?)";
    }
  }
  return "";
}

}  // namespace fuji::rpc
