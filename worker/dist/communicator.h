// Collective communication for the data-parallel trainer: one small interface over c10d process
// groups, Gloo for CPU tensors (and CUDA tensors staged through host memory) and NCCL for CUDA
// tensors when the libtorch build has it.
//
// Every rank of a group calls the same collectives in the same order. Tensors are contiguous,
// fp32, bf16 or fp16, and all tensors of one call share dtype and device. Synchronous calls throw
// CollectiveError (a std::runtime_error) when the collective fails (a peer died, the timeout
// passed) and std::invalid_argument for tensors that break the rules above.
#pragma once

#include <ATen/core/Tensor.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>

#include "lib/common/status.h"

namespace fuji::dist {

struct CommOptions {
  int rank = 0;
  int world_size = 1;
  // "file:/abs/path": a c10d FileStore (one machine; the file must not exist from an earlier group).
  // "tcp:HOST:PORT": a c10d TCPStore, rank 0 serves it.
  std::string rendezvous;
  std::string backend = "gloo";  // gloo | nccl
  // Bounds the rendezvous and every collective: a dead peer makes Wait() throw within about this.
  std::chrono::milliseconds timeout{120000};
  // CUDA device of this rank for nccl (-1: rank % device count); unused by gloo.
  int device_index = -1;
  // The address (or host name) this rank's Gloo connections bind to: a gang across machines binds
  // to its agent's advertised address. "": the interface $GLOO_SOCKET_IFNAME names when set, else
  // loopback for a file: rendezvous and the host name's address for a tcp: one.
  std::string bind_addr;
};

// What a collective that failed or timed out throws; the message names the collective.
class CollectiveError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// An outstanding collective. Wait() blocks until it is done (results are in the output tensors
// only after Wait) and throws CollectiveError naming the collective when it failed or timed
// out. Waiting twice is a no-op. Destroying an unwaited Work waits for it and drops any error.
class Work {
 public:
  virtual ~Work();
  virtual void Wait() = 0;
};

class Communicator {
 public:
  // Joins the group: every rank must call Create with the same rendezvous, world_size and backend.
  // INVALID_ARGUMENT for bad options, UNAVAILABLE when the peers do not all show up within
  // options.timeout (the message names the missing ranks) or the backend cannot be built.
  static Result<std::unique_ptr<Communicator>> Create(const CommOptions& options);

  virtual ~Communicator();
  Communicator(const Communicator&) = delete;
  Communicator& operator=(const Communicator&) = delete;

  int rank() const;
  int world_size() const;
  const std::string& backend() const;

  // t = sum (or max) of t over ranks, in place: Float, BFloat16, Half (summed in fp32) or Double.
  void AllReduceSum(at::Tensor& t);
  void AllReduceMax(at::Tensor& t);
  std::unique_ptr<Work> AllReduceSumAsync(at::Tensor t);

  // input: [world_size * shard] (the caller pads); output: [shard] = sum over ranks of
  // input[rank * shard, (rank + 1) * shard).
  std::unique_ptr<Work> ReduceScatterSumAsync(const at::Tensor& input, at::Tensor output);
  void ReduceScatterSum(const at::Tensor& input, at::Tensor& output);

  // shard: [shard] -> full: [world_size * shard], rank-major.
  std::unique_ptr<Work> AllGatherAsync(const at::Tensor& shard, at::Tensor full);
  void AllGather(const at::Tensor& shard, at::Tensor& full);

  // t on every rank = t on root.
  void Broadcast(at::Tensor& t, int root);
  void Barrier();

  // The rendezvous store, for small values every rank of the group exchanges (keys are prefixed
  // "fuji/user/"). StoreGet waits up to the timeout for the key; UNAVAILABLE when it is not set
  // by then or the store is gone.
  Status StoreSet(const std::string& key, const std::string& value);
  Result<std::string> StoreGet(const std::string& key);

  // Logical payload bytes this rank has sent so far, B being a call's tensor bytes and N the world
  // size: all-reduce 2*B*(N-1)/N, reduce-scatter of an input of B bytes B*(N-1)/N, all-gather of a
  // shard of S bytes S*(N-1), broadcast B*(N-1) on the root and 0 elsewhere, barrier 0. Integer
  // division; counted when a collective is issued.
  int64_t bytes_sent() const;

  struct Impl;

 private:
  explicit Communicator(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace fuji::dist
