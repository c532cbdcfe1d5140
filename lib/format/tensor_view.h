// DType and TensorView: the torch-free description of a tensor stored inside a mapped checkpoint.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "lib/common/status.h"

namespace fuji::format {

enum class DType { kF64, kF32, kF16, kBF16, kI64, kI32, kI16, kI8, kU8, kBool };

// Bytes per element.
size_t DTypeSize(DType d);
// The safetensors spelling: "F32", "BF16", "BOOL", ...
const char* DTypeName(DType d);
// Inverse of DTypeName; INVALID_ARGUMENT "unknown dtype 'X'" for anything else.
Result<DType> ParseDType(std::string_view name);

// A tensor inside a mapped file, little-endian as both formats store it. `data` points into the
// map and stays valid while the file object that produced the view lives.
struct TensorView {
  std::string name;
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  std::vector<int64_t> strides;   // in elements; row-major contiguous for safetensors
  const uint8_t* data = nullptr;  // first element
  size_t nbytes = 0;              // bytes spanned; numel * DTypeSize for contiguous views

  int64_t numel() const;
  // True when the strides are row-major over the shape. As in torch, dimensions of size 1 may
  // have any stride and a tensor with no elements is contiguous.
  bool contiguous() const;
};

}  // namespace fuji::format
