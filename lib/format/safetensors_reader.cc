// SafetensorsFile: maps a .safetensors file and validates its header before exposing any view.
#include "lib/format/safetensors.h"

#include <algorithm>
#include <cstring>
#include <optional>
#include <set>
#include <tuple>
#include <utility>

#include <nlohmann/json.hpp>

#include "lib/common/json_bounds.h"
#include "lib/format/shape_util.h"

namespace fuji::format {
namespace {

using nlohmann::json;

// The reference implementation's limit; a header this large is corruption, not a checkpoint.
constexpr uint64_t kMaxHeaderBytes = 100'000'000;

// A tensor entry after validation, before the views are made.
struct Entry {
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;
  uint64_t begin;
  uint64_t end;
};

// Parses the header JSON, refusing a key that appears twice in one object: nlohmann keeps only
// the last value, which would silently drop a tensor.
Result<json> ParseHeader(const std::string& path, std::string_view text) {
  std::vector<std::set<std::string>> keys_per_object;
  std::optional<std::string> duplicate;
  auto on_event = [&](int /*depth*/, json::parse_event_t event, json& parsed) {
    switch (event) {
      case json::parse_event_t::object_start: keys_per_object.emplace_back(); break;
      case json::parse_event_t::object_end: keys_per_object.pop_back(); break;
      case json::parse_event_t::key:
        if (!keys_per_object.back().insert(parsed.get<std::string>()).second && !duplicate) {
          duplicate = parsed.get<std::string>();
        }
        break;
      default: break;
    }
    return true;
  };
  if (Status depth = CheckJsonDepth(text, path + ": header"); !depth.ok()) return DataLoss(depth.message());
  json header;
  try {
    header = json::parse(text.begin(), text.end(), on_event);
  } catch (const json::exception& e) {
    return DataLoss(path + ": header is not valid JSON: " + e.what());
  }
  if (duplicate) return DataLoss(path + ": header has key '" + *duplicate + "' twice");
  if (!header.is_object()) return DataLoss(path + ": header is not a JSON object");
  return header;
}

Result<std::map<std::string, std::string>> ParseMetadata(const std::string& path,
                                                         const json& value) {
  if (!value.is_object()) return DataLoss(path + ": __metadata__ is not an object");
  std::map<std::string, std::string> metadata;
  for (const auto& [key, v] : value.items()) {
    if (!v.is_string()) return DataLoss(path + ": __metadata__ '" + key + "' is not a string");
    metadata.emplace(key, v.get<std::string>());
  }
  return metadata;
}

// A non-negative integer that fits int64 (nlohmann stores non-negative literals as unsigned).
bool AsNonNegative(const json& v, int64_t* out) {
  if (v.is_number_unsigned()) {
    uint64_t u = v.get<uint64_t>();
    if (u > static_cast<uint64_t>(INT64_MAX)) return false;
    *out = static_cast<int64_t>(u);
    return true;
  }
  if (v.is_number_integer() && v.get<int64_t>() >= 0) {
    *out = v.get<int64_t>();
    return true;
  }
  return false;
}

Result<Entry> ParseEntry(const std::string& path, const std::string& name, const json& value) {
  const std::string where = path + ": tensor '" + name + "': ";
  if (!value.is_object()) return DataLoss(where + "entry is not an object");
  for (const char* field : {"dtype", "shape", "data_offsets"}) {
    if (!value.contains(field)) return DataLoss(where + "missing '" + field + "'");
  }
  const json& dtype = value.at("dtype");
  const json& shape = value.at("shape");
  const json& offsets = value.at("data_offsets");
  if (!dtype.is_string()) return DataLoss(where + "'dtype' is not a string");
  if (!shape.is_array()) return DataLoss(where + "'shape' is not an array");
  if (!offsets.is_array() || offsets.size() != 2) {
    return DataLoss(where + "'data_offsets' is not a [begin, end] array");
  }

  Entry entry{name, DType::kF32, {}, 0, 0};
  Result<DType> parsed = ParseDType(dtype.get<std::string>());
  if (!parsed.ok()) return InvalidArgument(where + parsed.status().message());
  entry.dtype = *parsed;

  for (const json& dim : shape) {
    int64_t d = 0;
    if (!AsNonNegative(dim, &d)) {
      return DataLoss(where + "shape " + shape.dump() +
                      " has a dimension that is not an integer >= 0");
    }
    entry.shape.push_back(d);
  }
  std::optional<uint64_t> nbytes = ContiguousBytes(entry.shape, DTypeSize(entry.dtype));
  if (!nbytes) return DataLoss(where + "shape " + shape.dump() + " overflows");
  if (!offsets[0].is_number_unsigned() || !offsets[1].is_number_unsigned()) {
    return DataLoss(where + "'data_offsets' " + offsets.dump() + " are not integers >= 0");
  }
  entry.begin = offsets[0].get<uint64_t>();
  entry.end = offsets[1].get<uint64_t>();
  if (entry.begin > entry.end) {
    return DataLoss(where + "'data_offsets' " + offsets.dump() + " end before they begin");
  }
  if (entry.end - entry.begin != *nbytes) {
    return DataLoss(where + "'data_offsets' " + offsets.dump() + " span " +
                    std::to_string(entry.end - entry.begin) + " bytes but " +
                    DTypeName(entry.dtype) + " " + shape.dump() + " needs " +
                    std::to_string(*nbytes));
  }
  return entry;
}

// Orders the entries by offset and checks they fit the data section without overlapping.
Status CheckLayout(const std::string& path, std::vector<Entry>& entries, uint64_t data_size) {
  std::sort(entries.begin(), entries.end(), [](const Entry& a, const Entry& b) {
    return std::tie(a.begin, a.end, a.name) < std::tie(b.begin, b.end, b.name);
  });
  const Entry* previous = nullptr;  // the last non-empty entry
  for (const Entry& e : entries) {
    if (e.end > data_size) {
      return DataLoss(path + ": tensor '" + e.name + "' ends at data offset " +
                      std::to_string(e.end) + ", past the " + std::to_string(data_size) +
                      "-byte data section");
    }
    if (e.begin == e.end) continue;  // empty tensors occupy no bytes
    if (previous != nullptr && e.begin < previous->end) {
      return DataLoss(path + ": tensors '" + previous->name + "' and '" + e.name + "' overlap");
    }
    previous = &e;
  }
  return Status::Ok();
}

}  // namespace

Result<SafetensorsFile> SafetensorsFile::Open(const std::string& path) {
  SafetensorsFile st;
  FUJI_ASSIGN_OR_RETURN(st.file_, MappedFile::Open(path));
  const uint64_t size = st.file_.size();
  if (size < 8) {
    return DataLoss(path + ": " + std::to_string(size) +
                    " bytes is too short for a safetensors file");
  }
  uint64_t header_size = 0;
  std::memcpy(&header_size, st.file_.data(), 8);
  if (header_size > kMaxHeaderBytes) {
    return DataLoss(path + ": header length " + std::to_string(header_size) +
                    " is over the limit of " + std::to_string(kMaxHeaderBytes));
  }
  if (header_size > size - 8) {
    return DataLoss(path + ": header length " + std::to_string(header_size) +
                    " runs past the end of the " + std::to_string(size) + "-byte file");
  }
  FUJI_ASSIGN_OR_RETURN(json header, ParseHeader(path, st.file_.view().substr(8, header_size)));

  std::vector<Entry> entries;
  for (const auto& [key, value] : header.items()) {
    if (key == "__metadata__") {
      FUJI_ASSIGN_OR_RETURN(st.metadata_, ParseMetadata(path, value));
      continue;
    }
    FUJI_ASSIGN_OR_RETURN(Entry entry, ParseEntry(path, key, value));
    entries.push_back(std::move(entry));
  }
  FUJI_RETURN_IF_ERROR(CheckLayout(path, entries, size - 8 - header_size));

  const uint8_t* data_section = st.file_.data() + 8 + header_size;
  st.tensors_.reserve(entries.size());
  for (Entry& e : entries) {
    TensorView view;
    view.name = std::move(e.name);
    view.dtype = e.dtype;
    view.shape = std::move(e.shape);
    // Row-major strides as torch computes them, treating empty dimensions as 1.
    view.strides.assign(view.shape.size(), 1);
    for (size_t i = view.shape.size(); i-- > 1;) {
      view.strides[i - 1] = view.strides[i] * std::max<int64_t>(view.shape[i], 1);
    }
    view.data = data_section + e.begin;
    view.nbytes = e.end - e.begin;
    st.tensors_.push_back(std::move(view));
  }
  // The JSON parser already refused duplicate keys, so the index cannot find one.
  (void)st.index_.Build(st.tensors_);
  return st;
}

}  // namespace fuji::format
