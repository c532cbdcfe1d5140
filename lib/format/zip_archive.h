// ZipArchive: the table of contents of an in-memory zip, enough to read stored entries in place.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "lib/common/status.h"

namespace fuji::format {

// Parses the central directory (Zip64 included) and every entry's local header, bounds-checked
// against the buffer, so entry bytes can then be used without further checks. Single-disk
// archives only. The archive does not own the buffer.
class ZipArchive {
 public:
  struct Entry {
    std::string name;
    uint16_t method = 0;  // 0: stored
    bool encrypted = false;
    uint64_t data_offset = 0;  // of the entry's bytes in the file, from its local header
    uint64_t size = 0;         // bytes in the file (compressed size)
  };

  // `path` only prefixes messages. DATA_LOSS for corruption, INVALID_ARGUMENT for multi-disk.
  static Result<ZipArchive> Parse(const std::string& path, const uint8_t* data, size_t size);

  ZipArchive(ZipArchive&&) = default;
  ZipArchive& operator=(ZipArchive&&) = default;
  ZipArchive(const ZipArchive&) = delete;  // index_ views entries_ of this object
  ZipArchive& operator=(const ZipArchive&) = delete;

  const std::vector<Entry>& entries() const { return entries_; }
  const Entry* Find(std::string_view name) const;
  // The bytes of a stored entry; INVALID_ARGUMENT for a compressed or encrypted one.
  Result<std::string_view> Read(const Entry& entry) const;

 private:
  ZipArchive() = default;
  struct CentralDirectory;
  Result<CentralDirectory> FindCentralDirectory() const;
  Status ParseEntries(const CentralDirectory& cd);

  std::string path_;
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
  std::vector<Entry> entries_;
  std::unordered_map<std::string_view, size_t> index_;  // views of entries_[i].name
};

}  // namespace fuji::format
