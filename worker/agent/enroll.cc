// LoadOrEnroll; see enroll.h.
#include "worker/agent/enroll.h"

#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>

#include <nlohmann/json.hpp>

#include "fuji/v1/worker.grpc.pb.h"
#include "lib/common/file_util.h"

namespace fuji::agent {
namespace {

// A private file of the state directory: ours, a regular file, no access for group or others.
Result<std::string> ReadPrivate(const std::string& path) {
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0) return NotFound(path + " not found");
  if (!S_ISREG(st.st_mode) || st.st_uid != ::geteuid() || (st.st_mode & 077) != 0) {
    return FailedPrecondition(path + " must be a regular file of this user with mode 0600");
  }
  return ReadFile(path, 1 << 20);
}

Status MakePrivateDir(const std::string& dir) {
  FUJI_RETURN_IF_ERROR(MakeDirectories(dir));
  struct stat st {};
  if (::lstat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode) || st.st_uid != ::geteuid()) {
    return FailedPrecondition("state directory " + dir + " must be a directory of this user");
  }
  if (::chmod(dir.c_str(), 0700) != 0) return FailedPrecondition(dir + ": " + ErrnoMessage());
  return Status::Ok();
}

}  // namespace

std::string DefaultStateDir() {
  if (::geteuid() == 0) return "/var/lib/fuji-agent";
  if (const char* xdg = std::getenv("XDG_STATE_HOME"); xdg != nullptr && *xdg == '/') {
    return std::string(xdg) + "/fuji-agent";
  }
  const char* home = std::getenv("HOME");
  return std::string(home != nullptr && *home != '\0' ? home : ".") + "/.local/state/fuji-agent";
}

Result<Identity> LoadOrEnroll(const EnrollOptions& options) {
  FUJI_RETURN_IF_ERROR(MakePrivateDir(options.state_dir));
  const std::string credential_path = options.state_dir + "/credential.json";
  const std::string ca_copy = options.state_dir + "/ca.pem";
  Identity id;
  id.endpoint.address = options.server;
  id.endpoint.insecure = options.insecure;
  id.endpoint.ca_file = options.ca_file.empty() ? ca_copy : options.ca_file;

  Result<std::string> saved = ReadPrivate(credential_path);
  if (saved.ok()) {
    nlohmann::json j = nlohmann::json::parse(*saved, nullptr, false);
    if (!j.is_object() || !j.contains("worker_id") || !j.contains("credential") || !j["worker_id"].is_string() ||
        !j["credential"].is_string()) {
      return DataLoss(credential_path + " is not an agent credential; remove it and enroll again");
    }
    if (j["worker_id"].get<std::string>() != options.worker_id) {
      return FailedPrecondition(credential_path + " belongs to worker " + j["worker_id"].get<std::string>() +
                                ", not " + options.worker_id + ": give each worker id its own --state-dir");
    }
    id.credential = j["credential"].get<std::string>();
    return id;
  }
  if (saved.status().code() != StatusCode::kNotFound) return saved.status();

  // First start: enroll.
  if (options.join_token.empty()) {
    return FailedPrecondition("this agent is not enrolled (no credential in " + options.state_dir +
                              "): start it once with --join-token from `fuji admin agent-token` and --ca");
  }
  if (!options.insecure && options.ca_file.empty()) {
    return FailedPrecondition("enrolling needs --ca: the cluster CA from fujid's state directory");
  }
  grpc::ChannelArguments args;
  FUJI_ASSIGN_OR_RETURN(std::shared_ptr<grpc::Channel> channel, rpc::MakeChannel(id.endpoint, args));
  auto stub = v1::WorkerService::NewStub(channel);
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(options.timeout_ms));
  context.set_wait_for_ready(true);
  rpc::Authorize(&context, options.join_token);
  v1::EnrollRequest request;
  request.set_worker_id(options.worker_id);
  request.set_host(options.host);
  v1::EnrollResponse response;
  const grpc::Status s = stub->Enroll(&context, request, &response);
  if (!s.ok()) {
    const std::string tls = rpc::DescribeHandshakeFailure(s, id.endpoint);
    return Unavailable("enrolling with fujid at " + options.server + " failed: " +
                       (tls.empty() ? s.error_message() : tls));
  }
  id.credential = response.credential();
  if (!options.insecure) {
    FUJI_ASSIGN_OR_RETURN(std::string ca, ReadFile(options.ca_file, 1 << 20));
    FUJI_RETURN_IF_ERROR(WriteFileAtomically(ca_copy, ca, 0600));
  }
  const nlohmann::json saved_json = {{"worker_id", options.worker_id}, {"credential", id.credential}};
  FUJI_RETURN_IF_ERROR(WriteFileAtomically(credential_path, saved_json.dump() + "\n", 0600));
  return id;
}

}  // namespace fuji::agent
