// Inside worker/dist: what a process-group backend offers the Communicator, and the pieces the Gloo
// (communicator.cc) and NCCL (nccl_backend.cc) translation units share. Not for use outside.
#pragma once

#include <torch/csrc/distributed/c10d/Store.hpp>
#include <torch/csrc/distributed/c10d/Work.hpp>

#include <chrono>
#include <functional>
#include <memory>
#include <string>

#include "lib/common/status.h"
#include "worker/dist/communicator.h"

namespace fuji::dist::internal {

// Tensor shapes and dtypes are checked by the Communicator before these are called.
class Backend {
 public:
  virtual ~Backend() = default;
  virtual std::unique_ptr<Work> AllReduce(at::Tensor t, bool max) = 0;
  virtual std::unique_ptr<Work> ReduceScatterSum(at::Tensor input, at::Tensor output) = 0;
  virtual std::unique_ptr<Work> AllGather(at::Tensor shard, at::Tensor full) = 0;
  virtual std::unique_ptr<Work> Broadcast(at::Tensor t, int root) = 0;
  virtual void Barrier() = 0;
};

// Who is waiting, for error messages: "rank 1 of 3 (gloo)".
struct Where {
  int rank = 0;
  int world_size = 1;
  std::string backend;
  std::chrono::milliseconds timeout{0};
};

// A c10d work plus what has to happen once it is done (copies back to the device, local sums).
// Wait() turns any failure into std::runtime_error naming the collective.
std::unique_ptr<Work> WrapWork(c10::intrusive_ptr<c10d::Work> work, std::string collective,
                               const Where& where, std::function<void()> then = {});

#if defined(FUJI_DIST_NCCL)
Result<std::unique_ptr<Backend>> MakeNcclBackend(const c10::intrusive_ptr<c10d::Store>& store,
                                                 const Where& where, int device_index);
#endif

}  // namespace fuji::dist::internal
