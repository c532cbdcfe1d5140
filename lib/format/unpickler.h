// The restricted unpickler's machinery, shared by its two halves: unpickler.cc runs the pickle
// opcodes, torch_rebuild.cc gives the allowed globals their meaning. Internal to fuji_format.
#pragma once

#include <cstdint>
#include <cstring>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "lib/common/status.h"
#include "lib/format/tensor_view.h"
#include "lib/format/torch_pickle.h"

namespace fuji::format::pickle {

enum class Callable : int64_t {
  kOrderedDict,
  kRebuildTensorV2,
  kRebuildParameter,
  kRebuildParameterWithState,
};

// A pickle value. Small and copyable: containers, strings, storages and tensors live in the
// Unpickler's tables, so copies (BINGET) share them as Python references do.
struct Value {
  enum class Kind : uint8_t {
    kNone,
    kBool,
    kInt,
    kFloat,
    kString,
    kTuple,
    kList,
    kDict,
    kCallable,
    kStorageType,
    kStorage,
    kTensor,
  };
  Kind kind = Kind::kNone;
  // kBool, kInt: the value. kCallable: a Callable. kStorageType: a DType. kFloat: unused, a state
  // dict's floats are never read. Other kinds: an index into the table for the kind.
  int64_t i = 0;
};
using Kind = Value::Kind;

// A storage record, as a persistent id names it; its tensors are views into it.
struct Storage {
  DType dtype;
  const uint8_t* data;
  int64_t numel;
};

// The allowlist: the value of one of the globals a state dict needs, nullopt for any other.
std::optional<Value> ResolveGlobal(std::string_view module, std::string_view name);

// Runs one pickle. Values live in flat tables referred to by index, so memory is linear in the
// pickle's size, cycles and deep nesting are harmless, and nothing recurses.
class Unpickler {
 public:
  Unpickler(std::string_view pickle, const StorageLookup& lookup) : in_(pickle), lookup_(lookup) {}

  Result<std::vector<TensorView>> Run() {
    while (!stopped_) FUJI_RETURN_IF_ERROR(Step());
    return StateDict();
  }

 private:
  Status Step();
  Result<std::vector<TensorView>> StateDict();

  // Errors, prefixed with the offset of the opcode being run.
  Status Corrupt(const std::string& what) const {
    return DataLoss("data.pkl offset " + std::to_string(op_offset_) + ": " + what);
  }
  Status Unsupported(const std::string& what) const {
    return InvalidArgument("data.pkl offset " + std::to_string(op_offset_) + ": " + what);
  }

  // Reading the opcode's arguments.
  Result<std::string_view> Take(uint64_t n);
  template <typename T>
  Result<T> TakeLe() {
    FUJI_ASSIGN_OR_RETURN(std::string_view bytes, Take(sizeof(T)));
    T v;
    std::memcpy(&v, bytes.data(), sizeof v);
    return v;
  }
  Result<std::string_view> TakeLine();
  template <typename Length>
  Status PushString() {
    FUJI_ASSIGN_OR_RETURN(Length n, TakeLe<Length>());
    FUJI_ASSIGN_OR_RETURN(std::string_view s, Take(n));
    strings_.push_back(s);
    return Push({Kind::kString, static_cast<int64_t>(strings_.size() - 1)});
  }
  Status PushLong1();

  // The stack. Values below the innermost mark are out of reach until it is popped.
  Status Push(Value v) {
    stack_.push_back(v);
    return Status::Ok();
  }
  size_t Floor() const { return marks_.empty() ? 0 : marks_.back(); }
  Result<Value> Pop();
  Result<std::vector<Value>> PopN(size_t n);
  Result<std::vector<Value>> PopToMark();
  Result<std::string_view> PopString();
  Status Memoize(uint64_t index);
  Status PushMemo(uint64_t index);

  Value NewSequence(Kind kind, std::vector<Value> items) {
    sequences_.push_back(std::move(items));
    return {kind, static_cast<int64_t>(sequences_.size() - 1)};
  }
  Value NewDict() {
    dicts_.emplace_back();
    return {Kind::kDict, static_cast<int64_t>(dicts_.size() - 1)};
  }
  Status AddItems(const std::vector<Value>& flat);  // key, value, key, value... into the top dict
  Status AppendItems(std::vector<Value> items);     // into the top list
  bool ToInts(const Value& tuple, std::vector<int64_t>* out) const;

  // In torch_rebuild.cc: what the allowed globals do.
  Status PushGlobal(std::string_view module, std::string_view name);
  Status Reduce();
  Result<Value> LoadStorage(const Value& pid);
  Result<Value> RebuildTensor(const std::vector<Value>& args);

  std::string_view in_;
  size_t pos_ = 0;
  size_t op_offset_ = 0;
  bool stopped_ = false;
  const StorageLookup& lookup_;

  std::vector<Value> stack_;
  std::vector<size_t> marks_;  // stack sizes at each MARK
  std::unordered_map<uint64_t, Value> memo_;
  std::vector<std::string_view> strings_;      // views into the pickle
  std::vector<std::vector<Value>> sequences_;  // tuples and lists
  std::vector<std::vector<Value>> dicts_;      // key, value, key, value... in insertion order
  std::vector<Storage> storages_;
  std::vector<TensorView> tensors_;  // unnamed until StateDict()
};

}  // namespace fuji::format::pickle
