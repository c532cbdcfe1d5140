// Host arena: an anonymous mapping advised for huge pages, carved into 64-byte-aligned tensors.
#include "worker/engine/host_arena.h"

#include <sys/mman.h>

#include <ATen/ATen.h>

#include "lib/common/file_util.h"

namespace fuji::engine {
namespace {
constexpr size_t kAlign = 64;
constexpr size_t kHugePage = size_t{2} << 20;
}  // namespace

Result<std::shared_ptr<HostArena>> HostArena::Create(const std::vector<size_t>& tensor_bytes) {
  std::shared_ptr<HostArena> arena(new HostArena());
  size_t offset = 0;
  for (size_t bytes : tensor_bytes) {
    arena->offsets_.push_back(offset);
    offset += (bytes + kAlign - 1) / kAlign * kAlign;
  }
  arena->size_ = std::max<size_t>(kHugePage, (offset + kHugePage - 1) / kHugePage * kHugePage);
  void* p = ::mmap(nullptr, arena->size_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) {
    return ResourceExhausted("cannot reserve " + std::to_string(arena->size_ >> 20) +
                             " MiB of host memory for the parameters: " + ErrnoMessage());
  }
  arena->base_ = p;
  ::madvise(p, arena->size_, MADV_HUGEPAGE);  // advice only: 4 KiB pages work too
  return arena;
}

HostArena::~HostArena() {
  if (base_ != nullptr) ::munmap(base_, size_);
}

at::Tensor HostArena::Tensor(const std::shared_ptr<HostArena>& arena, size_t i, at::IntArrayRef shape,
                             at::ScalarType dtype) {
  void* data = static_cast<char*>(arena->base_) + arena->offsets_.at(i);
  return at::from_blob(data, shape, [arena](void*) {}, at::TensorOptions().dtype(dtype));
}

}  // namespace fuji::engine
