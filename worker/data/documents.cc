// Implements documents.h: listing a data set's files and splitting them into documents.
#include "worker/data/documents.h"

#include <algorithm>
#include <filesystem>
#include <system_error>

#include <nlohmann/json.hpp>

#include "lib/common/file_util.h"
#include "lib/common/json_bounds.h"
#include "lib/text/unicode.h"

namespace fuji::data {
namespace {

namespace fs = std::filesystem;

bool EndsWith(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

bool IsDataFileName(std::string_view name) {
  return EndsWith(name, ".txt") || EndsWith(name, ".text") || EndsWith(name, ".md") ||
         EndsWith(name, ".jsonl");
}

// True when `inner` (canonical) is `root` (canonical) or lies below it.
bool IsInside(const fs::path& root, const fs::path& inner) {
  auto r = root.begin();
  auto i = inner.begin();
  for (; r != root.end(); ++r, ++i) {
    if (i == inner.end() || *r != *i) return false;
  }
  return true;
}

Status CheckLimits(const std::vector<DataFile>& files, uint64_t total, const DataLimits& limits) {
  const DataFile& last = files.back();
  if (last.size > limits.max_file_bytes) {
    return ResourceExhausted(last.path + ": file of " + std::to_string(last.size) +
                             " bytes is above the limit of " +
                             std::to_string(limits.max_file_bytes) + " bytes");
  }
  if (total > limits.max_total_bytes) {
    return ResourceExhausted("data set of more than " + std::to_string(limits.max_total_bytes) +
                             " bytes (limit)");
  }
  if (files.size() > limits.max_files) {
    return ResourceExhausted("data set of more than " + std::to_string(limits.max_files) +
                             " files (limit)");
  }
  return Status::Ok();
}

}  // namespace

FileKind KindOfFile(std::string_view name) {
  return EndsWith(name, ".jsonl") || EndsWith(name, ".json-lines") ? FileKind::kJsonLines
                                                                   : FileKind::kText;
}

Result<std::vector<DataFile>> ListDataFiles(const std::string& path, const DataLimits& limits) {
  std::error_code error;
  const fs::file_status status = fs::status(path, error);
  if (error || !fs::exists(status)) return NotFound(path + ": no such file or directory");
  std::vector<DataFile> files;
  if (fs::is_regular_file(status)) {
    const std::string name = fs::path(path).filename().string();
    files.push_back(
        {path, name, static_cast<uint64_t>(fs::file_size(path, error)), KindOfFile(name)});
    if (error) return NotFound(path + ": " + error.message());
    FUJI_RETURN_IF_ERROR(CheckLimits(files, files.back().size, limits));
    return files;
  }
  if (!fs::is_directory(status)) return InvalidArgument(path + ": not a file or directory");
  const fs::path root = fs::canonical(path, error);
  if (error) return NotFound(path + ": " + error.message());
  uint64_t total = 0;
  fs::recursive_directory_iterator it(root, fs::directory_options::none, error);
  if (error) return NotFound(path + ": " + error.message());
  for (; it != fs::recursive_directory_iterator(); it.increment(error)) {
    if (error) return NotFound(path + ": " + error.message());
    const fs::path& entry = it->path();
    const std::string name = entry.filename().string();
    const bool is_symlink = it->is_symlink(error);
    if (!name.empty() && name[0] == '.') {
      if (it->is_directory(error) && !is_symlink) it.disable_recursion_pending();
      continue;
    }
    if (is_symlink) {
      // Directory symlinks are never descended (directory_options::none); a file symlink counts
      // only when its target stays inside the data directory.
      const fs::path target = fs::canonical(entry, error);
      if (error || !IsInside(root, target) || !fs::is_regular_file(target, error)) {
        error.clear();
        continue;
      }
    } else if (!it->is_regular_file(error)) {
      continue;
    }
    if (!IsDataFileName(name)) continue;
    const uint64_t size = fs::file_size(entry, error);
    if (error) return NotFound(entry.string() + ": " + error.message());
    files.push_back(
        {entry.string(), entry.lexically_relative(root).generic_string(), size, KindOfFile(name)});
    total += size;
    FUJI_RETURN_IF_ERROR(CheckLimits(files, total, limits));
  }
  if (files.empty()) {
    return InvalidArgument("empty dataset: directory " + path +
                           " has no .txt, .text, .md or .jsonl files");
  }
  std::sort(files.begin(), files.end(),
            [](const DataFile& a, const DataFile& b) { return a.relative_path < b.relative_path; });
  return files;
}

Result<std::vector<Document>> ParseDataFile(const DataFile& file, std::string_view contents) {
  const size_t invalid = text::FindInvalidUtf8(contents);
  if (invalid != contents.size()) {
    return InvalidArgument(file.path + ": invalid UTF-8 at byte " + std::to_string(invalid));
  }
  std::vector<Document> documents;
  if (file.kind == FileKind::kText) {
    if (!contents.empty()) documents.push_back({file.path, std::string(contents)});
    return documents;
  }
  size_t line_number = 0;
  size_t start = 0;
  while (start < contents.size()) {
    size_t end = contents.find('\n', start);
    if (end == std::string_view::npos) end = contents.size();
    std::string_view line = contents.substr(start, end - start);
    start = end + 1;
    ++line_number;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.find_first_not_of(" \t") == std::string_view::npos) continue;
    const std::string where = file.path + ":" + std::to_string(line_number);
    FUJI_RETURN_IF_ERROR(CheckJsonDepth(line, where));
    const nlohmann::json object = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (object.is_discarded()) return InvalidArgument(where + ": malformed JSON line");
    if (!object.is_object()) return InvalidArgument(where + ": not a JSON object");
    const auto text = object.find("text");
    if (text == object.end()) return InvalidArgument(where + ": no \"text\" field");
    if (!text->is_string()) return InvalidArgument(where + ": \"text\" is not a string");
    std::string value = text->get<std::string>();
    // JSON escapes such as "\ud800" decode to bytes that are not valid UTF-8.
    const size_t bad = text::FindInvalidUtf8(value);
    if (bad != value.size()) {
      return InvalidArgument(where + ": \"text\" is invalid UTF-8 at byte " + std::to_string(bad));
    }
    if (!value.empty()) documents.push_back({where, std::move(value)});
  }
  return documents;
}

Result<std::vector<Document>> ReadDocuments(const std::string& path, const DataLimits& limits) {
  FUJI_ASSIGN_OR_RETURN(std::vector<DataFile> files, ListDataFiles(path, limits));
  std::vector<Document> all;
  for (const DataFile& file : files) {
    FUJI_ASSIGN_OR_RETURN(std::string contents, ReadFile(file.path, limits.max_file_bytes));
    FUJI_ASSIGN_OR_RETURN(std::vector<Document> documents, ParseDataFile(file, contents));
    for (Document& d : documents) all.push_back(std::move(d));
  }
  return all;
}

}  // namespace fuji::data
