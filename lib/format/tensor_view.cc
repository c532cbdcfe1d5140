// DType names and sizes, TensorView helpers.
#include "lib/format/tensor_view.h"

#include <array>

namespace fuji::format {

// Views are zero-copy, so the host must share the files' little-endian byte order.
static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "fuji::format needs a little-endian host");

namespace {

struct DTypeInfo {
  DType dtype;
  const char* name;
  size_t size;
};

// Indexed by DType.
constexpr std::array<DTypeInfo, 10> kDTypes = {{
    {DType::kF64, "F64", 8},
    {DType::kF32, "F32", 4},
    {DType::kF16, "F16", 2},
    {DType::kBF16, "BF16", 2},
    {DType::kI64, "I64", 8},
    {DType::kI32, "I32", 4},
    {DType::kI16, "I16", 2},
    {DType::kI8, "I8", 1},
    {DType::kU8, "U8", 1},
    {DType::kBool, "BOOL", 1},
}};

constexpr bool IndexedByDType() {
  for (size_t i = 0; i < kDTypes.size(); ++i) {
    if (kDTypes[i].dtype != static_cast<DType>(i)) return false;
  }
  return true;
}
static_assert(IndexedByDType(), "kDTypes must list the DTypes in declaration order");

const DTypeInfo& Info(DType d) {
  return kDTypes[static_cast<size_t>(d)];
}

}  // namespace

size_t DTypeSize(DType d) {
  return Info(d).size;
}

const char* DTypeName(DType d) {
  return Info(d).name;
}

Result<DType> ParseDType(std::string_view name) {
  for (const DTypeInfo& info : kDTypes) {
    if (name == info.name) return info.dtype;
  }
  return InvalidArgument("unknown dtype '" + std::string(name) + "'");
}

int64_t TensorView::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

bool TensorView::contiguous() const {
  if (strides.size() != shape.size()) return false;
  if (numel() == 0) return true;  // no element is ever addressed, as in torch
  int64_t expected = 1;
  for (size_t i = shape.size(); i-- > 0;) {
    if (shape[i] != 1 && strides[i] != expected) return false;
    expected *= shape[i];
  }
  return true;
}

}  // namespace fuji::format
