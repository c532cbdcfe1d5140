// The check the checkpoint harnesses make of every tensor a reader returns: its bytes lie inside
// the memory it was read from, and are read once (so AddressSanitizer sees any that do not).
#pragma once

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "lib/format/tensor_view.h"

namespace fuji::fuzz {

// Aborts unless each view's [data, data + nbytes) lies in [begin, end) and spans at least its
// elements (numel * dtype size for a contiguous view); reads every byte of it.
inline void CheckViews(const std::vector<format::TensorView>& views, const uint8_t* begin,
                       const uint8_t* end) {
  for (const format::TensorView& v : views) {
    const bool inside = v.nbytes == 0 || (v.data >= begin && v.data <= end &&
                                          v.nbytes <= static_cast<size_t>(end - v.data));
    const bool spans = !v.contiguous() ||
                       static_cast<uint64_t>(v.numel()) * format::DTypeSize(v.dtype) <= v.nbytes;
    if (!inside || !spans || v.shape.size() != v.strides.size()) {
      std::fprintf(stderr, "tensor '%s' is not a view of its %zu bytes\n", v.name.c_str(),
                   static_cast<size_t>(end - begin));
      std::abort();
    }
    volatile uint8_t sum = 0;
    for (size_t i = 0; i < v.nbytes; ++i) sum = sum + v.data[i];
  }
}

}  // namespace fuji::fuzz
