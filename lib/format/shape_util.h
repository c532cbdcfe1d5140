// Overflow-checked shape arithmetic shared by the readers and the writer.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <vector>

namespace fuji::format {

// Bytes of a row-major tensor of `shape`: numel * elem_size. nullopt when a dimension is
// negative or when the product of the non-zero dimensions times elem_size overflows int64, so
// that a shape this accepts keeps TensorView::numel() and every row-major stride in range even
// when another dimension is 0.
inline std::optional<uint64_t> ContiguousBytes(const std::vector<int64_t>& shape,
                                               size_t elem_size) {
  int64_t span = static_cast<int64_t>(elem_size);
  bool empty = false;
  for (int64_t d : shape) {
    if (d < 0) return std::nullopt;
    if (d == 0) empty = true;
    if (d > 1 && __builtin_mul_overflow(span, d, &span)) return std::nullopt;
  }
  return empty ? 0 : static_cast<uint64_t>(span);
}

}  // namespace fuji::format
