// ZipArchive: locates the (Zip64) end of central directory, then walks central and local headers.
#include "lib/format/zip_archive.h"

#include <algorithm>
#include <cstring>

namespace fuji::format {
namespace {

constexpr uint32_t kLocalHeaderSignature = 0x04034b50;
constexpr uint32_t kCentralHeaderSignature = 0x02014b50;
constexpr uint32_t kEndSignature = 0x06054b50;
constexpr uint32_t kEnd64Signature = 0x06064b50;
constexpr uint32_t kEnd64LocatorSignature = 0x07064b50;
constexpr size_t kLocalHeaderSize = 30;
constexpr size_t kCentralHeaderSize = 46;
constexpr size_t kEndSize = 22;
constexpr size_t kEnd64Size = 56;
constexpr size_t kEnd64LocatorSize = 20;
constexpr size_t kMaxCommentSize = 0xffff;
constexpr uint16_t kZip64ExtraId = 0x0001;
constexpr uint16_t kEncryptedFlag = 0x0001;

template <typename T>
T Le(const uint8_t* p) {
  T v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

// True when [offset, offset + length) lies within a buffer of `size` bytes, without overflow.
bool InBounds(uint64_t offset, uint64_t length, uint64_t size) {
  return offset <= size && length <= size - offset;
}

// The sizes and offset that the central directory header stores in 32 bits, widened from its
// Zip64 extra field where they are saturated (0xffffffff).
struct WideFields {
  uint64_t uncompressed;
  uint64_t compressed;
  uint64_t local_offset;
};

bool ReadZip64Extra(const uint8_t* extra, size_t extra_size, WideFields* f) {
  constexpr uint32_t kSaturated = 0xffffffff;
  for (size_t pos = 0; pos + 4 <= extra_size;) {
    const uint16_t id = Le<uint16_t>(extra + pos);
    const uint16_t len = Le<uint16_t>(extra + pos + 2);
    pos += 4;
    if (len > extra_size - pos) return false;
    if (id == kZip64ExtraId) {
      // Only the saturated fields are present, in this order.
      size_t at = pos;
      for (uint64_t* field : {&f->uncompressed, &f->compressed, &f->local_offset}) {
        if (*field != kSaturated) continue;
        if (at + 8 > pos + len) return false;
        *field = Le<uint64_t>(extra + at);
        at += 8;
      }
      return true;
    }
    pos += len;
  }
  return f->uncompressed != kSaturated && f->compressed != kSaturated &&
         f->local_offset != kSaturated;
}

}  // namespace

struct ZipArchive::CentralDirectory {
  uint64_t offset;
  uint64_t size;
  uint64_t entries;
};

Result<ZipArchive> ZipArchive::Parse(const std::string& path, const uint8_t* data, size_t size) {
  ZipArchive zip;
  zip.path_ = path;
  zip.data_ = data;
  zip.size_ = size;
  FUJI_ASSIGN_OR_RETURN(CentralDirectory cd, zip.FindCentralDirectory());
  FUJI_RETURN_IF_ERROR(zip.ParseEntries(cd));
  // Indexed only now: the views must not see entries_ reallocate.
  for (size_t i = 0; i < zip.entries_.size(); ++i) {
    if (!zip.index_.emplace(zip.entries_[i].name, i).second) {
      return DataLoss(path + ": zip entry '" + zip.entries_[i].name + "' appears twice");
    }
  }
  return zip;
}

Result<ZipArchive::CentralDirectory> ZipArchive::FindCentralDirectory() const {
  if (size_ < kEndSize) {
    return DataLoss(path_ + ": " + std::to_string(size_) + " bytes is too short for a zip file");
  }
  // The end record is followed only by its comment of up to 64 KiB; search backwards.
  const size_t lowest = size_ - kEndSize - std::min(size_ - kEndSize, kMaxCommentSize);
  size_t end = size_ - kEndSize;
  while (Le<uint32_t>(data_ + end) != kEndSignature) {
    if (end == lowest) return DataLoss(path_ + ": no zip end of central directory record");
    --end;
  }
  const uint8_t* e = data_ + end;
  if (Le<uint16_t>(e + 4) != 0 || Le<uint16_t>(e + 6) != 0) {
    return InvalidArgument(path_ + ": multi-disk zip archives are not supported");
  }
  CentralDirectory cd{Le<uint32_t>(e + 16), Le<uint32_t>(e + 12), Le<uint16_t>(e + 10)};

  // Zip64: a locator just before the end record points at the 64-bit end record.
  if (end >= kEnd64LocatorSize &&
      Le<uint32_t>(data_ + end - kEnd64LocatorSize) == kEnd64LocatorSignature) {
    const uint64_t record = Le<uint64_t>(data_ + end - kEnd64LocatorSize + 8);
    if (!InBounds(record, kEnd64Size, size_) || Le<uint32_t>(data_ + record) != kEnd64Signature) {
      return DataLoss(path_ + ": zip64 end of central directory locator points at no record");
    }
    const uint8_t* r = data_ + record;
    cd = {Le<uint64_t>(r + 48), Le<uint64_t>(r + 40), Le<uint64_t>(r + 32)};
  } else if (cd.offset == 0xffffffff || cd.size == 0xffffffff || cd.entries == 0xffff) {
    return DataLoss(path_ + ": zip end record needs a zip64 record, but there is none");
  }
  if (!InBounds(cd.offset, cd.size, size_)) {
    return DataLoss(path_ + ": zip central directory (" + std::to_string(cd.size) + " bytes at " +
                    std::to_string(cd.offset) + ") runs past the end of the " +
                    std::to_string(size_) + "-byte file");
  }
  if (cd.entries > cd.size / kCentralHeaderSize) {
    return DataLoss(path_ + ": zip claims " + std::to_string(cd.entries) +
                    " entries, more than its central directory can hold");
  }
  return cd;
}

Status ZipArchive::ParseEntries(const CentralDirectory& cd) {
  entries_.reserve(cd.entries);
  const uint8_t* const dir = data_ + cd.offset;
  uint64_t pos = 0;
  for (uint64_t i = 0; i < cd.entries; ++i) {
    const std::string where = path_ + ": zip entry " + std::to_string(i) + ": ";
    if (!InBounds(pos, kCentralHeaderSize, cd.size) ||
        Le<uint32_t>(dir + pos) != kCentralHeaderSignature) {
      return DataLoss(where + "bad central directory header");
    }
    const uint8_t* h = dir + pos;
    const uint16_t name_size = Le<uint16_t>(h + 28);
    const uint16_t extra_size = Le<uint16_t>(h + 30);
    const uint16_t comment_size = Le<uint16_t>(h + 32);
    if (!InBounds(pos + kCentralHeaderSize, uint64_t{name_size} + extra_size + comment_size,
                  cd.size)) {
      return DataLoss(where + "central directory header runs past the directory");
    }
    Entry entry;
    entry.name.assign(reinterpret_cast<const char*>(h + kCentralHeaderSize), name_size);
    entry.method = Le<uint16_t>(h + 10);
    entry.encrypted = (Le<uint16_t>(h + 8) & kEncryptedFlag) != 0;
    WideFields f{Le<uint32_t>(h + 24), Le<uint32_t>(h + 20), Le<uint32_t>(h + 42)};
    if (!ReadZip64Extra(h + kCentralHeaderSize + name_size, extra_size, &f)) {
      return DataLoss(where + "'" + entry.name + "' has a bad zip64 extra field");
    }
    pos += kCentralHeaderSize + name_size + extra_size + comment_size;

    // The data follows the local header, whose extra field (alignment padding in torch's
    // writer) differs from the central one.
    const std::string named = where + "'" + entry.name + "': ";
    if (!InBounds(f.local_offset, kLocalHeaderSize, size_) ||
        Le<uint32_t>(data_ + f.local_offset) != kLocalHeaderSignature) {
      return DataLoss(named + "no local header at offset " + std::to_string(f.local_offset));
    }
    const uint8_t* local = data_ + f.local_offset;
    const uint64_t local_name_size = Le<uint16_t>(local + 26);
    const uint64_t local_extra_size = Le<uint16_t>(local + 28);
    entry.data_offset = f.local_offset + kLocalHeaderSize + local_name_size + local_extra_size;
    entry.size = f.compressed;
    if (entry.data_offset > size_) return DataLoss(named + "local header runs past the file");
    if (local_name_size != name_size ||
        std::memcmp(local + kLocalHeaderSize, entry.name.data(), name_size) != 0) {
      return DataLoss(named + "local header names another entry");
    }
    if (!InBounds(entry.data_offset, entry.size, size_)) {
      return DataLoss(named + std::to_string(entry.size) + " bytes at offset " +
                      std::to_string(entry.data_offset) + " run past the end of the " +
                      std::to_string(size_) + "-byte file");
    }
    if (entry.method == 0 && f.compressed != f.uncompressed) {
      return DataLoss(named + "stored entry has compressed size " + std::to_string(f.compressed) +
                      " but uncompressed size " + std::to_string(f.uncompressed));
    }
    entries_.push_back(std::move(entry));
  }
  return Status::Ok();
}

const ZipArchive::Entry* ZipArchive::Find(std::string_view name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &entries_[it->second];
}

Result<std::string_view> ZipArchive::Read(const Entry& entry) const {
  if (entry.encrypted) {
    return InvalidArgument(path_ + ": zip entry '" + entry.name + "' is encrypted");
  }
  if (entry.method != 0) {
    return InvalidArgument(path_ + ": zip entry '" + entry.name + "' is compressed (method " +
                           std::to_string(entry.method) + "); only stored entries are supported");
  }
  return std::string_view(reinterpret_cast<const char*>(data_ + entry.data_offset), entry.size);
}

}  // namespace fuji::format
