// Where the CLI finds fujid and who it is there. Each piece comes from the first of: a flag
// (--server, --ca, --insecure), the environment (FUJI_SERVER, FUJI_CA, FUJI_TOKEN), the profile
// that `fuji login` wrote (~/.config/fuji/profile.json and the CA beside it), and the default
// address 127.0.0.1:7070. A token is never a flag of a daemon command: command lines are visible
// to every user of the host.
#pragma once

#include <string>

#include "lib/common/status.h"
#include "lib/rpc/connection.h"

namespace fuji::client {

inline constexpr char kDefaultServer[] = "127.0.0.1:7070";

// The connection flags every daemon command has.
struct ServerFlags {
  std::string server;  // --server
  std::string ca;      // --ca
  bool insecure = false;  // --insecure: plaintext to a fujid started with --insecure (loopback only)
};

// What `fuji login` stored.
struct Profile {
  std::string server;
  std::string ca_file;  // DIR/ca.pem, a copy of the CA given to login ("" when there is none)
  std::string token;
};

// $XDG_CONFIG_HOME/fuji when that is an absolute path, else $HOME/.config/fuji; "" when neither
// is set.
std::string ProfileDir();

// DIR/profile.json at most 64 KiB: {"server": ADDR, "token": TOKEN}, with DIR/ca.pem when it is
// there. NOT_FOUND when there is no profile. A profile that is a link, is not ours, or that others
// may read (any group or other bit) is FAILED_PRECONDITION saying how to fix it; one that is not
// that JSON is INVALID_ARGUMENT. Messages never repeat the token.
Result<Profile> LoadProfile(const std::string& dir);

// Creates DIR (0700) when missing and writes DIR/ca.pem and DIR/profile.json, 0600 each, atomically
// and never through a planted link. DIR itself must be ours and closed to others.
Status SaveProfile(const std::string& dir, const std::string& server, const std::string& ca_pem,
                   const std::string& token);

// Everything a daemon command needs to call fujid.
struct Connection {
  rpc::Endpoint endpoint;
  std::string token;
  std::string token_source;  // "FUJI_TOKEN" or the profile's path, for messages
};

// Resolves the connection as described at the top. The profile is read only when flags and the
// environment leave something open, and then a broken profile is an error. No token at all is
// UNAUTHENTICATED "no token for fujid at ADDR: ..."; no CA for a TLS endpoint is INVALID_ARGUMENT
// (from rpc::MakeChannel's wording), both before anything is sent.
Result<Connection> ResolveConnection(const ServerFlags& flags);

}  // namespace fuji::client
