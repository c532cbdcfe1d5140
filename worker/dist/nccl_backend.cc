// The NCCL backend: CUDA tensors, the real reduce-scatter and all-gather of ProcessGroupNCCL.
// Compiled only when the libtorch build has NCCL (CMake adds this file and FUJI_DIST_NCCL then).
//
// Waits block the host (TORCH_NCCL_BLOCKING_WAIT, unless the environment already says otherwise),
// so that a dead peer makes Wait() throw after the collective timeout instead of the watchdog
// ending the process.
#include "worker/dist/backend.h"

#if defined(FUJI_DIST_NCCL) && defined(USE_C10D_NCCL) && \
    __has_include(<torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>)

#include <ATen/ATen.h>
#include <c10/cuda/CUDAFunctions.h>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>

#include <cstdlib>
#include <stdexcept>
#include <utility>
#include <vector>

namespace fuji::dist::internal {
namespace {

class NcclBackend final : public Backend {
 public:
  NcclBackend(c10::intrusive_ptr<c10d::ProcessGroupNCCL> pg, Where where, int device)
      : pg_(std::move(pg)), where_(std::move(where)), device_(device) {}

  std::unique_ptr<Work> AllReduce(at::Tensor t, bool max) override {
    CheckCuda(t);
    std::vector<at::Tensor> tensors{t};
    c10d::AllreduceOptions opts;
    opts.reduceOp = max ? c10d::ReduceOp::MAX : c10d::ReduceOp::SUM;
    opts.timeout = where_.timeout;
    return WrapWork(pg_->allreduce(tensors, opts), max ? "all-reduce max" : "all-reduce sum", where_,
                    Keep({t}));
  }

  std::unique_ptr<Work> ReduceScatterSum(at::Tensor input, at::Tensor output) override {
    CheckCuda(input);
    c10d::ReduceScatterOptions opts;
    opts.reduceOp = c10d::ReduceOp::SUM;
    opts.timeout = where_.timeout;
    return WrapWork(pg_->_reduce_scatter_base(output, input, opts), "reduce-scatter", where_,
                    Keep({input, output}));
  }

  std::unique_ptr<Work> AllGather(at::Tensor shard, at::Tensor full) override {
    CheckCuda(shard);
    c10d::AllgatherOptions opts;
    opts.timeout = where_.timeout;
    return WrapWork(pg_->_allgather_base(full, shard, opts), "all-gather", where_,
                    Keep({shard, full}));
  }

  std::unique_ptr<Work> Broadcast(at::Tensor t, int root) override {
    CheckCuda(t);
    std::vector<at::Tensor> tensors{t};
    c10d::BroadcastOptions opts;
    opts.rootRank = root;
    opts.timeout = where_.timeout;
    return WrapWork(pg_->broadcast(tensors, opts), "broadcast", where_, Keep({t}));
  }

  // An all-reduce of one element on this rank's device: ProcessGroupNCCL's own barrier guesses
  // the device from the rank, which is wrong when ranks share a GPU.
  void Barrier() override {
    at::Tensor one = at::ones({1}, at::TensorOptions().dtype(at::kFloat).device(at::kCUDA, device_));
    std::vector<at::Tensor> tensors{one};
    c10d::AllreduceOptions opts;
    opts.timeout = where_.timeout;
    WrapWork(pg_->allreduce(tensors, opts), "barrier", where_)->Wait();
    c10::cuda::device_synchronize();
  }

 private:
  void CheckCuda(const at::Tensor& t) const {
    if (!t.is_cuda()) {
      throw std::invalid_argument("backend nccl needs CUDA tensors, got one on " + t.device().str());
    }
  }
  // Holds the tensors until the caller waited (the comm stream may still use them).
  static std::function<void()> Keep(std::vector<at::Tensor> tensors) {
    return [tensors = std::move(tensors)] { (void)tensors; };
  }

  c10::intrusive_ptr<c10d::ProcessGroupNCCL> pg_;
  Where where_;
  int device_;
};

}  // namespace

Result<std::unique_ptr<Backend>> MakeNcclBackend(const c10::intrusive_ptr<c10d::Store>& store,
                                                 const Where& where, int device_index) {
  try {
    const int count = static_cast<int>(c10::cuda::device_count());
    if (count < 1) return Unavailable("backend nccl: no CUDA device");
    const int device = device_index >= 0 ? device_index : where.rank % count;
    if (device >= count) {
      return InvalidArgument("backend nccl: device " + std::to_string(device) + " but only " +
                             std::to_string(count) + " CUDA devices");
    }
    c10::cuda::set_device(static_cast<c10::DeviceIndex>(device));
    // Read by the constructor; blocking waits make Wait() honour the timeout.
    setenv("TORCH_NCCL_BLOCKING_WAIT", "1", /*overwrite=*/0);
    setenv("NCCL_BLOCKING_WAIT", "1", /*overwrite=*/0);  // the name before PyTorch 2.2
    auto opts = c10d::ProcessGroupNCCL::Options::create();
    opts->timeout = where.timeout;
    auto prefixed = c10::make_intrusive<c10d::PrefixStore>("fuji/nccl", store);
    auto pg = c10::make_intrusive<c10d::ProcessGroupNCCL>(prefixed, where.rank, where.world_size, opts);
    return std::unique_ptr<Backend>(std::make_unique<NcclBackend>(std::move(pg), where, device));
  } catch (const std::exception& e) {
    std::string what = e.what();
    return Unavailable("nccl process group on rank " + std::to_string(where.rank) + " of " +
                       std::to_string(where.world_size) + ": " + what.substr(0, what.find('\n')));
  }
}

}  // namespace fuji::dist::internal

#endif
