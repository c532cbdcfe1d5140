// The CLI's profile and the resolution of its connection to fujid; see profile.h.
#include "client/profile.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include <nlohmann/json.hpp>

#include "lib/common/file_util.h"
#include "lib/common/json_bounds.h"

namespace fuji::client {
namespace {

constexpr size_t kMaxProfileBytes = 64 << 10;

std::string Env(const char* name) {
  const char* value = std::getenv(name);
  return value == nullptr ? std::string() : std::string(value);
}

std::string Octal(unsigned mode) {
  char text[8];
  std::snprintf(text, sizeof text, "%04o", mode & 07777);
  return text;
}

// The contents of a private file of ours: opened without following a link, owned by this user,
// with no group or other bits, at most kMaxProfileBytes.
Result<std::string> ReadPrivateFile(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) {
    const int err = errno;
    if (err == ENOENT) return NotFound("no profile at " + path);
    if (err == ELOOP) return FailedPrecondition(path + " is a symbolic link: run fuji login again to replace it");
    return FailedPrecondition("cannot open " + path + ": " + std::strerror(err));
  }
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    return FailedPrecondition(path + " is not a regular file");
  }
  if (st.st_uid != ::geteuid()) {
    ::close(fd);
    return FailedPrecondition(path + " belongs to another user: run fuji login to write your own");
  }
  if ((st.st_mode & 077) != 0) {
    ::close(fd);
    return FailedPrecondition(path + " may be read by others (mode " + Octal(st.st_mode) +
                              "): it holds a token; run chmod 600 " + path + " and get a new token");
  }
  if (static_cast<size_t>(st.st_size) > kMaxProfileBytes) {
    ::close(fd);
    return InvalidArgument(path + " is larger than 64 KiB: not a fuji profile");
  }
  std::string contents(static_cast<size_t>(st.st_size), '\0');
  size_t got = 0;
  while (got < contents.size()) {
    const ssize_t n = ::read(fd, contents.data() + got, contents.size() - got);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    got += static_cast<size_t>(n);
  }
  ::close(fd);
  contents.resize(got);
  return contents;
}

// DIR must be a directory of ours that no one else may read or write.
Status CheckPrivateDirectory(const std::string& dir) {
  struct stat st {};
  if (::lstat(dir.c_str(), &st) != 0) return FailedPrecondition("cannot stat " + dir + ": " + std::strerror(errno));
  if (!S_ISDIR(st.st_mode)) return FailedPrecondition(dir + " is not a directory");
  if (st.st_uid != ::geteuid()) return FailedPrecondition(dir + " belongs to another user");
  if ((st.st_mode & 077) != 0) {
    return FailedPrecondition(dir + " may be read or written by others (mode " + Octal(st.st_mode) +
                              "): run chmod 700 " + dir);
  }
  return Status::Ok();
}

}  // namespace

std::string ProfileDir() {
  const std::string xdg = Env("XDG_CONFIG_HOME");
  if (!xdg.empty() && xdg[0] == '/') return xdg + "/fuji";
  const std::string home = Env("HOME");
  if (!home.empty()) return home + "/.config/fuji";
  return "";
}

Result<Profile> LoadProfile(const std::string& dir) {
  const std::string path = dir + "/profile.json";
  FUJI_ASSIGN_OR_RETURN(std::string text, ReadPrivateFile(path));
  const nlohmann::json j = ParseJsonBounded(text);
  if (j.is_discarded() || !j.is_object() || !j.contains("server") || !j["server"].is_string() ||
      !j.contains("token") || !j["token"].is_string()) {
    return InvalidArgument(path + " is not a fuji profile (an object with the strings server and token): run fuji login");
  }
  Profile profile;
  profile.server = j["server"].get<std::string>();
  profile.token = j["token"].get<std::string>();
  if (profile.server.empty() || profile.token.empty()) {
    return InvalidArgument(path + " has an empty server or token: run fuji login");
  }
  const std::string ca = dir + "/ca.pem";
  if (IsRegularFile(ca)) profile.ca_file = ca;
  return profile;
}

Status SaveProfile(const std::string& dir, const std::string& server, const std::string& ca_pem,
                   const std::string& token) {
  if (dir.empty()) return FailedPrecondition("neither HOME nor XDG_CONFIG_HOME is set: nowhere to keep the profile");
  FUJI_RETURN_IF_ERROR(MakeDirectories(dir, 0700));
  FUJI_RETURN_IF_ERROR(CheckPrivateDirectory(dir));
  if (!ca_pem.empty()) FUJI_RETURN_IF_ERROR(WriteFileAtomically(dir + "/ca.pem", ca_pem, 0600));
  const nlohmann::json j = {{"server", server}, {"token", token}};
  return WriteFileAtomically(dir + "/profile.json", j.dump(2) + "\n", 0600);
}

Result<Connection> ResolveConnection(const ServerFlags& flags) {
  Connection c;
  c.endpoint.address = !flags.server.empty() ? flags.server : Env("FUJI_SERVER");
  c.endpoint.ca_file = !flags.ca.empty() ? flags.ca : Env("FUJI_CA");
  c.endpoint.insecure = flags.insecure;
  c.token = Env("FUJI_TOKEN");
  if (!c.token.empty()) c.token_source = "FUJI_TOKEN";
  const bool need_ca = !c.endpoint.insecure && c.endpoint.ca_file.empty();
  if (c.endpoint.address.empty() || need_ca || c.token.empty()) {
    const std::string dir = ProfileDir();
    Result<Profile> profile = dir.empty() ? Result<Profile>(NotFound("no profile")) : LoadProfile(dir);
    if (profile.ok()) {
      if (c.endpoint.address.empty()) c.endpoint.address = profile->server;
      if (need_ca) c.endpoint.ca_file = profile->ca_file;
      if (c.token.empty()) {
        c.token = profile->token;
        c.token_source = dir + "/profile.json";
      }
    } else if (profile.status().code() != StatusCode::kNotFound) {
      return profile.status();
    }
  }
  if (c.endpoint.address.empty()) c.endpoint.address = kDefaultServer;
  if (c.token.empty()) {
    return Unauthenticated("no token for fujid at " + c.endpoint.address +
                           ": set FUJI_TOKEN or run fuji login --server ADDR --ca FILE --token TOKEN");
  }
  if (!c.endpoint.insecure && c.endpoint.ca_file.empty()) {
    return InvalidArgument("no CA to verify fujid at " + c.endpoint.address +
                           " with: pass --ca FILE, set FUJI_CA, or run fuji login");
  }
  return c;
}

}  // namespace fuji::client
