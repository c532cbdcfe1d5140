// The meaning of the globals a state dict may name: OrderedDict, storages and torch's rebuilders.
#include "lib/format/unpickler.h"

#include "lib/format/shape_util.h"

namespace fuji::format::pickle {

std::optional<Value> ResolveGlobal(std::string_view module, std::string_view name) {
  auto callable = [](Callable c) { return Value{Kind::kCallable, static_cast<int64_t>(c)}; };
  if (module == "collections" && name == "OrderedDict") return callable(Callable::kOrderedDict);
  if (module == "torch._utils") {
    if (name == "_rebuild_tensor_v2") return callable(Callable::kRebuildTensorV2);
    if (name == "_rebuild_parameter") return callable(Callable::kRebuildParameter);
    if (name == "_rebuild_parameter_with_state") {
      return callable(Callable::kRebuildParameterWithState);
    }
  }
  if (module == "torch") {
    static constexpr std::pair<std::string_view, DType> kStorages[] = {
        {"DoubleStorage", DType::kF64}, {"FloatStorage", DType::kF32},
        {"HalfStorage", DType::kF16},   {"BFloat16Storage", DType::kBF16},
        {"LongStorage", DType::kI64},   {"IntStorage", DType::kI32},
        {"ShortStorage", DType::kI16},  {"CharStorage", DType::kI8},
        {"ByteStorage", DType::kU8},    {"BoolStorage", DType::kBool},
    };
    for (const auto& [storage, dtype] : kStorages) {
      if (name == storage) return Value{Kind::kStorageType, static_cast<int64_t>(dtype)};
    }
  }
  return std::nullopt;
}

Status Unpickler::PushGlobal(std::string_view module, std::string_view name) {
  std::optional<Value> global = ResolveGlobal(module, name);
  if (!global) {
    return Unsupported("the restricted unpickler refuses global '" + std::string(module) + "." +
                       std::string(name) + "'");
  }
  return Push(*global);
}

Status Unpickler::Reduce() {
  FUJI_ASSIGN_OR_RETURN(Value args_value, Pop());
  FUJI_ASSIGN_OR_RETURN(Value callable, Pop());
  if (args_value.kind != Kind::kTuple) return Corrupt("REDUCE arguments are not a tuple");
  if (callable.kind != Kind::kCallable) {
    return Unsupported("REDUCE of a value that is not callable");
  }
  const std::vector<Value>& args = sequences_[args_value.i];
  switch (static_cast<Callable>(callable.i)) {
    case Callable::kOrderedDict:
      if (!args.empty()) return Unsupported("OrderedDict with constructor arguments");
      return Push(NewDict());
    case Callable::kRebuildTensorV2: {
      FUJI_ASSIGN_OR_RETURN(Value tensor, RebuildTensor(args));
      return Push(tensor);
    }
    case Callable::kRebuildParameter:
    case Callable::kRebuildParameterWithState: {
      // (tensor, requires_grad, backward_hooks[, state]): the parameter is just its tensor.
      const size_t arity = callable.i == static_cast<int64_t>(Callable::kRebuildParameter) ? 3 : 4;
      if (args.size() != arity || args[0].kind != Kind::kTensor) {
        return Corrupt("_rebuild_parameter needs a tensor and " + std::to_string(arity - 1) +
                       " more arguments");
      }
      return Push(args[0]);
    }
  }
  return Corrupt("unknown callable");
}

// pid = ('storage', storage type, key, location, numel).
Result<Value> Unpickler::LoadStorage(const Value& pid) {
  if (pid.kind != Kind::kTuple) return Corrupt("persistent id is not a tuple");
  const std::vector<Value>& id = sequences_[pid.i];
  if (id.size() != 5 || id[0].kind != Kind::kString || strings_[id[0].i] != "storage" ||
      id[1].kind != Kind::kStorageType || id[2].kind != Kind::kString || id[4].kind != Kind::kInt ||
      id[4].i < 0) {
    return Corrupt("persistent id is not ('storage', type, key, location, numel)");
  }
  const auto dtype = static_cast<DType>(id[1].i);
  const std::string key(strings_[id[2].i]);
  FUJI_ASSIGN_OR_RETURN(std::string_view bytes, lookup_(key));
  uint64_t needed = 0;
  if (__builtin_mul_overflow(static_cast<uint64_t>(id[4].i), DTypeSize(dtype), &needed) ||
      needed > bytes.size()) {
    return Corrupt("storage '" + key + "' of " + std::to_string(id[4].i) + " " + DTypeName(dtype) +
                   " elements needs more than its record's " + std::to_string(bytes.size()) +
                   " bytes");
  }
  storages_.push_back({dtype, reinterpret_cast<const uint8_t*>(bytes.data()), id[4].i});
  return Value{Kind::kStorage, static_cast<int64_t>(storages_.size() - 1)};
}

// _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad, backward_hooks
// [, metadata]): a strided view into the storage, checked to address only its elements.
Result<Value> Unpickler::RebuildTensor(const std::vector<Value>& args) {
  TensorView t;
  if ((args.size() != 6 && args.size() != 7) || args[0].kind != Kind::kStorage ||
      args[1].kind != Kind::kInt || args[1].i < 0 || !ToInts(args[2], &t.shape) ||
      !ToInts(args[3], &t.strides) || t.shape.size() != t.strides.size()) {
    return Corrupt("_rebuild_tensor_v2 needs (storage, offset, size, stride, ...)");
  }
  const Storage& storage = storages_[args[0].i];
  const int64_t offset = args[1].i;
  const size_t element = DTypeSize(storage.dtype);
  if (!ContiguousBytes(t.shape, element)) return Corrupt("tensor size is negative or overflows");
  // The last element addressed: offset + sum((size - 1) * stride), over non-empty tensors.
  int64_t last = offset;
  bool empty = false;
  for (size_t d = 0; d < t.shape.size(); ++d) {
    if (t.strides[d] < 0) return Unsupported("negative tensor strides are not supported");
    if (t.shape[d] == 0) empty = true;
    int64_t step = 0;
    if (t.shape[d] > 0 && (__builtin_mul_overflow(t.shape[d] - 1, t.strides[d], &step) ||
                           __builtin_add_overflow(last, step, &last))) {
      return Corrupt("tensor extent overflows");
    }
  }
  const int64_t end = empty ? offset : last + 1;  // one past the last element addressed, >= offset
  if (end > storage.numel) {
    return Corrupt("tensor view [" + std::to_string(offset) + ", " + std::to_string(end) +
                   ") runs past its storage of " + std::to_string(storage.numel) + " elements");
  }
  t.dtype = storage.dtype;
  t.data = storage.data + static_cast<size_t>(offset) * element;
  t.nbytes = static_cast<size_t>(end - offset) * element;
  tensors_.push_back(std::move(t));
  return Value{Kind::kTensor, static_cast<int64_t>(tensors_.size() - 1)};
}

}  // namespace fuji::format::pickle
