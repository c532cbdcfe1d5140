// Checking a job spec's paths against the agent's roots and making them real.
#include "worker/agent/job_paths.h"

#include <dirent.h>
#include <sys/stat.h>

#include <memory>
#include <string>

#include "lib/common/file_util.h"
#include "lib/spec/job_spec.h"

namespace fuji::agent {
namespace {

// The model directory, real, once every entry of it the ranks could open by name is either a plain
// file or directory or itself passes CheckRead (a link that stays inside the roots).
Result<std::string> CheckModel(const PathPolicy& paths, const std::string& model) {
  FUJI_ASSIGN_OR_RETURN(std::string real, paths.CheckRead(model, "model path"));
  if (!IsDirectory(real)) return real;  // the rank says what is wrong with it
  std::unique_ptr<DIR, int (*)(DIR*)> dir(::opendir(real.c_str()), &::closedir);
  if (!dir) return InvalidArgument("model path " + model + ": " + ErrnoMessage());
  while (const dirent* entry = ::readdir(dir.get())) {
    const std::string name = entry->d_name;
    if (name == "." || name == "..") continue;
    struct stat st {};
    if (::lstat((real + "/" + name).c_str(), &st) == 0 && (S_ISREG(st.st_mode) || S_ISDIR(st.st_mode))) continue;
    FUJI_RETURN_IF_ERROR(paths.CheckRead(model + "/" + name, "model file").status());
  }
  return real;
}

}  // namespace

Status ConfineInferPaths(const PathPolicy& paths, nlohmann::json* request) {
  Result<InferSpec> spec = InferSpec::FromJson(*request);
  if (!spec.ok()) return InvalidArgument(spec.status().message());
  FUJI_ASSIGN_OR_RETURN((*request)["model"], CheckModel(paths, spec->model));
  return Status::Ok();
}

Status ConfineFinetunePaths(const PathPolicy& paths, FinetuneSpec* spec) {
  FUJI_ASSIGN_OR_RETURN(spec->model, CheckModel(paths, spec->model));
  FUJI_ASSIGN_OR_RETURN(spec->data, paths.CheckRead(spec->data, "data path"));
  if (!spec->save_to.empty()) {
    FUJI_ASSIGN_OR_RETURN(spec->save_to, paths.CheckWrite(spec->save_to, "save_to path"));
  }
  if (spec->cache_dir.empty()) {
    std::string root = spec->save_to.empty() ? std::string() : paths.WriteRootOf(spec->save_to);
    if (root.empty() && !paths.write_roots().empty()) root = paths.write_roots().front().path;
    if (root.empty()) {
      return InvalidArgument("a fine-tuning job needs a token cache directory (cache_dir) in a write root, and this "
                             "agent has none (start fuji-agent with --allow-write DIR)");
    }
    spec->cache_dir = (root == "/" ? "" : root) + "/" + kDefaultCacheDirName;
  }
  FUJI_ASSIGN_OR_RETURN(spec->cache_dir, paths.CheckWrite(spec->cache_dir, "cache_dir path"));
  spec->token_cache.clear();
  spec->rendezvous.clear();
  spec->node.clear();       // a gang across agents: the agent's worker id,
  spec->bind_addr.clear();  // and its advertised address
  return Status::Ok();
}

}  // namespace fuji::agent
