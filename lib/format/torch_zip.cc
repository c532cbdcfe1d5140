// TorchZipFile: finds data.pkl and the storage records in the zip, then runs the unpickler.
#include "lib/format/torch_zip.h"

#include "lib/format/torch_pickle.h"
#include "lib/format/zip_archive.h"

namespace fuji::format {
namespace {

// torch.save puts every record under one top-level folder named after the file ("archive/" when
// saved to a buffer): the prefix of the single "<prefix>/data.pkl".
Result<std::string> FindPrefix(const std::string& path, const ZipArchive& zip) {
  constexpr std::string_view kPickle = "/data.pkl";
  std::string prefix;
  for (const ZipArchive::Entry& entry : zip.entries()) {
    const std::string& name = entry.name;
    if (name.size() <= kPickle.size() ||
        name.compare(name.size() - kPickle.size(), kPickle.size(), kPickle) != 0) {
      continue;
    }
    std::string folder = name.substr(0, name.size() - kPickle.size());
    if (folder.find('/') != std::string::npos) continue;
    if (!prefix.empty()) {
      return DataLoss(path + ": both '" + prefix + "/data.pkl' and '" + name + "' are present");
    }
    prefix = std::move(folder);
  }
  if (prefix.empty()) {
    return DataLoss(path + ": no '<prefix>/data.pkl' record; not a torch.save zip checkpoint");
  }
  return prefix;
}

}  // namespace

Result<TorchZipFile> TorchZipFile::Open(const std::string& path) {
  TorchZipFile tz;
  FUJI_ASSIGN_OR_RETURN(tz.file_, MappedFile::Open(path));
  // torch before 1.6 wrote a bare pickle stream (it starts with PROTO) instead of a zip.
  if (tz.file_.size() >= 2 && tz.file_.data()[0] == 0x80 && tz.file_.data()[1] <= 5) {
    return InvalidArgument(path +
                           ": legacy (pre-1.6, not zip) torch.save format is not "
                           "supported; re-save it with a newer torch or convert it to safetensors");
  }
  FUJI_ASSIGN_OR_RETURN(ZipArchive zip, ZipArchive::Parse(path, tz.file_.data(), tz.file_.size()));
  FUJI_ASSIGN_OR_RETURN(std::string prefix, FindPrefix(path, zip));

  // Newer torch records the byte order; views are only valid for little-endian data.
  if (const ZipArchive::Entry* order = zip.Find(prefix + "/byteorder")) {
    FUJI_ASSIGN_OR_RETURN(std::string_view value, zip.Read(*order));
    if (value != "little") {
      return InvalidArgument(path + ": byteorder is '" + std::string(value) + "', not 'little'");
    }
  }

  FUJI_ASSIGN_OR_RETURN(std::string_view pickle, zip.Read(*zip.Find(prefix + "/data.pkl")));
  const StorageLookup lookup = [&](const std::string& key) -> Result<std::string_view> {
    const std::string record = prefix + "/data/" + key;
    const ZipArchive::Entry* entry = zip.Find(record);
    if (entry == nullptr) return DataLoss("storage record '" + record + "' is missing");
    return zip.Read(*entry);
  };
  Result<std::vector<TensorView>> tensors = UnpickleStateDict(pickle, lookup);
  if (!tensors.ok()) return tensors.status().WithContext(path);
  tz.tensors_ = std::move(tensors).value();
  if (std::optional<std::string_view> twice = tz.index_.Build(tz.tensors_)) {
    return DataLoss(path + ": state dict has '" + std::string(*twice) + "' twice");
  }
  return tz;
}

}  // namespace fuji::format
