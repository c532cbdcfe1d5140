// ModelCatalog: the model directories fujid offers by name (fujid --models DIR): every directory
// holding a config.json directly under one of the given directories. A model's id is its
// directory's base name; the first directory that has it wins. Read from the disk at each call,
// so models added or removed show at once.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "lib/common/path_policy.h"
#include "lib/common/status.h"

namespace fuji::http {

struct CatalogModel {
  std::string id;         // the directory's base name
  std::string path;       // the directory: the real path of its --models directory, then /id
  int64_t created_s = 0;  // its config.json's modification time
};

// Thread-safe (immutable).
class ModelCatalog {
 public:
  // At most this many entries of each directory are looked at.
  static constexpr size_t kMaxEntriesPerDir = 4096;

  // Each of `dirs` must be a directory fujid may read under `policy`: INVALID_ARGUMENT naming it
  // otherwise.
  static Result<ModelCatalog> Create(const std::vector<std::string>& dirs,
                                     const PathPolicy& policy);
  ModelCatalog() = default;

  // Sorted by id, one entry per id.
  std::vector<CatalogModel> List() const;
  // The directory of model `id`, if some directory has it; an id that is not a plain name (a
  // slash, "." or "..") has none.
  std::optional<std::string> Find(const std::string& id) const;

 private:
  std::vector<std::string> dirs_;
};

}  // namespace fuji::http
