// Typed reads of optional JSON object fields for the job specifications, keeping the first error
// as INVALID_ARGUMENT naming the field.
#pragma once

#include <cmath>
#include <cstdint>
#include <initializer_list>
#include <string>

#include <nlohmann/json.hpp>

#include "lib/common/status.h"

namespace fuji::spec_internal {

// Reads optional typed fields of a JSON object, remembering the first error.
class FieldReader {
 public:
  explicit FieldReader(const nlohmann::json& j) : j_(j) {}

  void String(const char* key, std::string* out, size_t max_bytes = 4096) {
    const nlohmann::json* v = Find(key);
    if (v == nullptr) return;
    if (!v->is_string()) return Fail(key, "must be a string");
    const auto& s = v->get_ref<const std::string&>();
    if (s.size() > max_bytes) {
      return Fail(key, "is " + std::to_string(s.size()) + " bytes, over the limit of " + std::to_string(max_bytes));
    }
    *out = s;
  }
  void Int(const char* key, int64_t* out, int64_t min, int64_t max) {
    const nlohmann::json* v = Find(key);
    if (v == nullptr) return;
    if (!v->is_number_integer()) return Fail(key, "must be an integer");
    if (v->is_number_unsigned() && v->get<uint64_t>() > static_cast<uint64_t>(INT64_MAX)) {
      return Fail(key, "is out of range");
    }
    const int64_t x = v->get<int64_t>();
    if (x < min || x > max) {
      return Fail(key, std::to_string(x) + " is outside " + std::to_string(min) + ".." + std::to_string(max));
    }
    *out = x;
  }
  void Uint(const char* key, uint64_t* out) {
    const nlohmann::json* v = Find(key);
    if (v == nullptr) return;
    if (!v->is_number_integer() || (v->is_number_integer() && !v->is_number_unsigned() && v->get<int64_t>() < 0)) {
      return Fail(key, "must be a non-negative integer");
    }
    *out = v->get<uint64_t>();
  }
  void Double(const char* key, double* out, double min, double max) {
    const nlohmann::json* v = Find(key);
    if (v == nullptr) return;
    if (!v->is_number()) return Fail(key, "must be a number");
    const double x = v->get<double>();
    if (!std::isfinite(x) || x < min || x > max) {
      return Fail(key, "must be between " + std::to_string(min) + " and " + std::to_string(max));
    }
    *out = x;
  }
  void Bool(const char* key, bool* out) {
    const nlohmann::json* v = Find(key);
    if (v == nullptr) return;
    if (!v->is_boolean()) return Fail(key, "must be true or false");
    *out = v->get<bool>();
  }
  void OneOf(const char* key, std::string* out, std::initializer_list<const char*> allowed) {
    std::string s = *out;
    String(key, &s, 64);
    for (const char* a : allowed) {
      if (s == a) {
        *out = s;
        return;
      }
    }
    std::string names;
    for (const char* a : allowed) names += (names.empty() ? "" : ", ") + std::string(a);
    Fail(key, "'" + s + "' is not one of " + names);
  }
  void Fail(const std::string& key, const std::string& what) {
    if (status_.ok()) status_ = InvalidArgument("field '" + key + "' " + what);
  }
  const Status& status() const { return status_; }

 private:
  const nlohmann::json* Find(const char* key) {
    auto it = j_.find(key);
    return it == j_.end() || it->is_null() ? nullptr : &*it;
  }
  const nlohmann::json& j_;
  Status status_;
};

}  // namespace fuji::spec_internal
