// One block of host memory for a model's parameters, backed by transparent huge pages where the
// kernel allows (decode streams every weight per token: 2 MiB pages measured 10-15% faster than
// 4 KiB pages here). Tensors carved from it keep it alive.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include <ATen/core/Tensor.h>

#include "lib/common/status.h"

namespace fuji::engine {

class HostArena {
 public:
  // Reserves room for tensors of these byte sizes, each aligned to 64 bytes.
  static Result<std::shared_ptr<HostArena>> Create(const std::vector<size_t>& tensor_bytes);
  ~HostArena();
  HostArena(const HostArena&) = delete;
  HostArena& operator=(const HostArena&) = delete;

  // The i-th tensor of the arena (in Create's order) with this shape and dtype.
  static at::Tensor Tensor(const std::shared_ptr<HostArena>& arena, size_t i, at::IntArrayRef shape,
                           at::ScalarType dtype);

 private:
  HostArena() = default;
  void* base_ = nullptr;
  size_t size_ = 0;
  std::vector<size_t> offsets_;
};

}  // namespace fuji::engine
