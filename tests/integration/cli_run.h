// Runs the built fuji binary with arguments, capturing exit code, stdout, stderr and stdout as JSON.
#pragma once

#include <sys/wait.h>

#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace fuji::testing {

struct CliResult {
  int exit_code = -1;
  std::string out, err;
  nlohmann::json json;  // discarded when stdout is not JSON
};

inline std::string Slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

inline std::string ShellQuote(const std::string& s) {
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

// `dir` holds the captured output files; `env` is prefixed to the command line (e.g.
// "FUJI_SERVER=x").
inline CliResult RunFuji(const std::vector<std::string>& args, const std::string& dir,
                         const std::string& env = "") {
  std::string cmd = env + (env.empty() ? "" : " ") + std::string(FUJI_BINARY_DIR) + "/bin/fuji";
  for (const auto& a : args) cmd += " " + ShellQuote(a);
  cmd += " >" + dir + "/out 2>" + dir + "/err </dev/null";
  CliResult r;
  const int status = std::system(cmd.c_str());
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  r.out = Slurp(dir + "/out");
  r.err = Slurp(dir + "/err");
  r.json = nlohmann::json::parse(r.out, nullptr, false);
  return r;
}

}  // namespace fuji::testing
