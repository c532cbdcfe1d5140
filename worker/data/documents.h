// Reading training text: plain UTF-8 files, JSON lines with a "text" field, or directories of them.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "lib/common/status.h"

namespace fuji::data {

enum class FileKind {
  kText,       // the whole file is one document
  kJsonLines,  // one JSON object per line with a string field "text"; each line one document
};

// One input file of a data set.
struct DataFile {
  std::string path;           // the file given, or (in a directory) below the canonical root
  std::string relative_path;  // relative to the data directory; the file name for a single file
  uint64_t size = 0;
  FileKind kind = FileKind::kText;
};

struct DataLimits {
  uint64_t max_file_bytes = uint64_t{1} << 30;    // per file (RESOURCE_EXHAUSTED above)
  uint64_t max_total_bytes = uint64_t{64} << 30;  // all files together
  size_t max_files = 1000000;
};

// One document: its text (valid UTF-8) and where it came from ("file" or "file:line").
struct Document {
  std::string source;
  std::string text;
};

// The kind of a file by its name: ".jsonl" / ".json-lines" → kJsonLines, anything else kText.
FileKind KindOfFile(std::string_view name);

// The files of a data set, in a deterministic order.
//  - a regular file (or a symlink to one): that file alone, whatever its extension;
//  - a directory: its regular files ending .txt, .text, .md or .jsonl, recursively, sorted by
//    relative path (bytewise). Names starting with '.' (files and directories, e.g. a cache
//    directory) are skipped, as are other extensions. Directory symlinks are not followed; a file
//    symlink is followed only when its target lies inside the data directory.
// Errors: NOT_FOUND for a missing path, INVALID_ARGUMENT "empty dataset: ..." for a directory with
// no data files, RESOURCE_EXHAUSTED over the limits.
Result<std::vector<DataFile>> ListDataFiles(const std::string& path,
                                            const DataLimits& limits = DataLimits());

// Splits one file's contents into documents. Empty documents (empty text, or an empty "text") are
// dropped. INVALID_ARGUMENT names the file and byte offset of invalid UTF-8, or the file and line
// (1-based) of a malformed JSON line or a missing / non-string "text". Blank JSONL lines are
// skipped.
Result<std::vector<Document>> ParseDataFile(const DataFile& file, std::string_view contents);

// ListDataFiles + ReadFile + ParseDataFile over every file, in order. Holds everything in memory:
// for tests and small sets; TokenCache streams file by file instead.
Result<std::vector<Document>> ReadDocuments(const std::string& path,
                                            const DataLimits& limits = DataLimits());

}  // namespace fuji::data
