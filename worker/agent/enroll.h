// The agent's identity with fujid: its credential, kept in its state directory. The first start
// enrolls with a join token (fuji admin agent-token) and the cluster CA; every later start reads
// the credential and the CA back from the state directory.
#pragma once

#include <string>

#include "lib/common/status.h"
#include "lib/rpc/connection.h"

namespace fuji::agent {

struct Identity {
  rpc::Endpoint endpoint;  // fujid, with the CA to verify it
  std::string credential;  // bound to the agent's worker id
};

struct EnrollOptions {
  std::string server;
  std::string worker_id, host;
  std::string state_dir;   // created 0700 when missing
  std::string ca_file;     // "" after the first start: the copy in state_dir
  std::string join_token;  // needed only when state_dir holds no credential
  bool insecure = false;   // plaintext to a loopback fujid (fujid --insecure)
  int64_t timeout_ms = 10000;
};

// The default state directory: /var/lib/fuji-agent for root, else $XDG_STATE_HOME/fuji-agent
// (~/.local/state/fuji-agent).
std::string DefaultStateDir();

// The credential of state_dir (which must be 0600 and ours), or a new one from Enroll with the
// join token, saved there (0600, O_EXCL|O_NOFOLLOW) with a copy of the CA. A credential of another
// worker id is refused (one state directory per worker id); so is a missing join token, with a line
// saying how to get one.
Result<Identity> LoadOrEnroll(const EnrollOptions& options);

}  // namespace fuji::agent
