// ModelCatalog; see model_catalog.h.
#include "daemon/http/model_catalog.h"

#include <sys/stat.h>

#include <algorithm>
#include <filesystem>
#include <map>

namespace fuji::http {
namespace {

bool PlainName(const std::string& id) {
  return !id.empty() && id.size() <= 255 && id != "." && id != ".." &&
         id.find('/') == std::string::npos && id.find('\0') == std::string::npos;
}

// The modification time of dir/config.json when it is a regular file.
std::optional<int64_t> ConfigTime(const std::string& dir) {
  struct stat st {};
  if (::stat((dir + "/config.json").c_str(), &st) != 0 || !S_ISREG(st.st_mode)) return std::nullopt;
  return static_cast<int64_t>(st.st_mtime);
}

}  // namespace

Result<ModelCatalog> ModelCatalog::Create(const std::vector<std::string>& dirs,
                                          const PathPolicy& policy) {
  ModelCatalog catalog;
  for (const std::string& dir : dirs) {
    FUJI_ASSIGN_OR_RETURN(std::string real, policy.CheckRead(dir, "--models directory"));
    std::error_code ec;
    if (!std::filesystem::is_directory(real, ec))
      return InvalidArgument("--models " + dir + " is not a directory");
    catalog.dirs_.push_back(real);
  }
  return catalog;
}

std::vector<CatalogModel> ModelCatalog::List() const {
  std::map<std::string, CatalogModel> models;
  for (const std::string& dir : dirs_) {
    std::error_code ec;
    std::filesystem::directory_iterator it(
        dir, std::filesystem::directory_options::skip_permission_denied, ec);
    size_t seen = 0;
    for (; !ec && it != std::filesystem::directory_iterator() && seen < kMaxEntriesPerDir;
         it.increment(ec), ++seen) {
      const std::string id = it->path().filename().string();
      if (!PlainName(id) || models.count(id) > 0) continue;
      const std::string path = dir + "/" + id;
      if (std::optional<int64_t> created = ConfigTime(path))
        models[id] = CatalogModel{id, path, *created};
    }
  }
  std::vector<CatalogModel> list;
  for (auto& [id, model] : models) list.push_back(std::move(model));
  return list;
}

std::optional<std::string> ModelCatalog::Find(const std::string& id) const {
  if (!PlainName(id)) return std::nullopt;
  for (const std::string& dir : dirs_) {
    const std::string path = dir + "/" + id;
    if (ConfigTime(path)) return path;
  }
  return std::nullopt;
}

}  // namespace fuji::http
