// The Communicator (checks, byte accounting, rendezvous) and its Gloo backend.
//
// Gloo: Debian's libtorch 1.13 refuses reduce_scatter and _allgather_base, so a reduce-scatter is
// an alltoall_base (rank j receives every rank's j-th chunk) plus a local sum, which moves the same
// bytes as a ring reduce-scatter, and an all-gather is an alltoall_base of the shard repeated once
// per rank (list allgather is an order of magnitude slower on large tensors). CUDA tensors are staged through host copies whatever Gloo supports.
#include "worker/dist/communicator.h"

#include <ATen/ATen.h>
#include <torch/csrc/distributed/c10d/FileStore.hpp>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#if defined(FUJI_DIST_GLOO)
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#endif

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <cstdlib>
#include <stdexcept>
#include <utility>
#include <vector>

#include "worker/dist/backend.h"

namespace fuji::dist {

Work::~Work() = default;

namespace internal {
namespace {

std::string Describe(const Where& where) {
  return "rank " + std::to_string(where.rank) + " of " + std::to_string(where.world_size) + " (" +
         where.backend + ")";
}

class C10dWork final : public Work {
 public:
  C10dWork(c10::intrusive_ptr<c10d::Work> work, std::string collective, Where where,
           std::function<void()> then)
      : work_(std::move(work)), collective_(std::move(collective)), where_(std::move(where)),
        then_(std::move(then)) {}

  ~C10dWork() override {
    if (done_) return;
    try {
      Wait();
    } catch (const std::exception&) {
      // Dropped on purpose: the owner did not wait, so nobody can act on the error here.
    }
  }

  void Wait() override {
    if (done_) return;
    done_ = true;
    try {
      work_->wait(where_.timeout);
    } catch (const std::exception& e) {
      throw CollectiveError(collective_ + " failed on " + Describe(where_) + " (timeout " +
                               std::to_string(where_.timeout.count()) +
                               " ms; a peer may have died): " + FirstLine(e.what()));
    }
    if (then_) then_();
  }

 private:
  static std::string FirstLine(const std::string& s) {
    auto nl = s.find('\n');
    return nl == std::string::npos ? s : s.substr(0, nl);
  }

  c10::intrusive_ptr<c10d::Work> work_;
  std::string collective_;
  Where where_;
  std::function<void()> then_;
  bool done_ = false;
};

#if defined(FUJI_DIST_GLOO)
// Host copy of a tensor for Gloo: the tensor itself on CPU, a copy of a CUDA tensor.
at::Tensor Host(const at::Tensor& t) { return t.is_cpu() ? t : t.to(at::kCPU); }

// bf16 through Gloo's type dispatch for pure data movement: same width as fp16, bits unchanged.
at::Tensor Movable(const at::Tensor& t) {
  return t.scalar_type() == at::kBFloat16 ? t.view(at::kHalf) : t;
}

class GlooBackend final : public Backend {
 public:
  GlooBackend(c10::intrusive_ptr<c10d::ProcessGroupGloo> pg, Where where)
      : pg_(std::move(pg)), where_(std::move(where)) {}

  // Gloo of Debian's libtorch 1.13 has no bf16 arithmetic, and its fp16 sums round at every hop:
  // 16-bit all-reduces run in fp32 (twice the wire bytes; bytes_sent stays the logical count).
  std::unique_ptr<Work> AllReduce(at::Tensor t, bool max) override {
    const bool wide = t.scalar_type() == at::kFloat || t.scalar_type() == at::kDouble;
    at::Tensor host = wide ? Host(t) : t.to(at::kCPU, at::kFloat);
    std::vector<at::Tensor> tensors{host};
    c10d::AllreduceOptions opts;
    opts.reduceOp = max ? c10d::ReduceOp::MAX : c10d::ReduceOp::SUM;
    opts.timeout = where_.timeout;
    auto work = pg_->allreduce(tensors, opts);
    return WrapWork(work, max ? "all-reduce max" : "all-reduce sum", where_, CopyBack(host, t));
  }

  std::unique_ptr<Work> ReduceScatterSum(at::Tensor input, at::Tensor output) override {
    const int64_t n = where_.world_size;
    at::Tensor send = Movable(Host(input));
    at::Tensor recv = at::empty_like(send);
    std::vector<int64_t> equal_splits;  // empty: n equal chunks
    c10d::AllToAllOptions opts;
    opts.timeout = where_.timeout;
    auto work = pg_->alltoall_base(recv, send, equal_splits, equal_splits, opts);
    auto dtype = input.scalar_type();
    return WrapWork(work, "reduce-scatter", where_, [recv, send, output, n, dtype]() mutable {
      (void)send;  // kept alive until the alltoall is done
      at::Tensor chunks = recv.view(dtype).view({n, output.numel()});
      output.copy_(chunks.sum(0, /*keepdim=*/false, at::kFloat));  // fp32 accumulation, one rounding
    });
  }

  // An alltoall_base whose send buffer holds the shard once per rank: rank j receives every
  // rank's shard in rank order, straight into the full tensor. The same bytes as a ring
  // all-gather, (N - 1) x shard per rank, but Gloo's list allgather of 1.13 ran 10-20x slower on
  // large tensors (a 222 MB shard per rank over loopback: 4-8 s against 0.24-0.41 s as an
  // alltoall, measured with Debian's python3-torch).
  std::unique_ptr<Work> AllGather(at::Tensor shard, at::Tensor full) override {
    const int64_t n = where_.world_size;
    at::Tensor host_full = full.is_cpu() ? full : at::empty(full.sizes(), full.options().device(at::kCPU));
    at::Tensor send = Movable(Host(shard)).reshape({-1}).repeat({n});
    at::Tensor recv = Movable(host_full).view({-1});
    std::vector<int64_t> equal_splits;  // empty: n equal chunks
    c10d::AllToAllOptions opts;
    opts.timeout = where_.timeout;
    auto work = pg_->alltoall_base(recv, send, equal_splits, equal_splits, opts);
    std::function<void()> copy_back = CopyBack(host_full, full);
    return WrapWork(work, "all-gather", where_, [send, copy_back]() mutable {
      (void)send;  // kept alive until the alltoall is done
      copy_back();
    });
  }

  std::unique_ptr<Work> Broadcast(at::Tensor t, int root) override {
    at::Tensor host = Host(t);
    std::vector<at::Tensor> tensors{Movable(host)};
    c10d::BroadcastOptions opts;
    opts.rootRank = root;
    opts.timeout = where_.timeout;
    auto work = pg_->broadcast(tensors, opts);
    return WrapWork(work, "broadcast", where_, CopyBack(host, t));
  }

  void Barrier() override {
    c10d::BarrierOptions opts;
    opts.timeout = where_.timeout;
    WrapWork(pg_->barrier(opts), "barrier", where_)->Wait();
  }

 private:
  // Copies the host result into the caller's tensor; nothing to do when they are the same.
  static std::function<void()> CopyBack(at::Tensor host, at::Tensor dst) {
    if (dst.is_cpu() && host.is_same(dst)) return [host] { (void)host; };
    return [host, dst]() mutable { dst.copy_(host); };
  }

  c10::intrusive_ptr<c10d::ProcessGroupGloo> pg_;
  Where where_;
};

#endif  // FUJI_DIST_GLOO

// "file:/abs/path" or "tcp:HOST:PORT" -> a store every rank of the group reaches.
Result<c10::intrusive_ptr<c10d::Store>> OpenStore(const CommOptions& o) {
  const std::string& r = o.rendezvous;
  try {
    if (r.rfind("file:", 0) == 0) {
      std::string path = r.substr(5);
      if (path.empty() || path[0] != '/') {
        return InvalidArgument("rendezvous " + r + ": file: needs an absolute path");
      }
      auto store = c10::make_intrusive<c10d::FileStore>(path, o.world_size);
      store->setTimeout(o.timeout);
      return c10::intrusive_ptr<c10d::Store>(store);
    }
    if (r.rfind("tcp:", 0) == 0) {
      std::string hostport = r.substr(4);
      auto colon = hostport.rfind(':');
      if (colon == std::string::npos || colon == 0) {
        return InvalidArgument("rendezvous " + r + ": expected tcp:HOST:PORT");
      }
      int port = 0;
      try {
        size_t used = 0;
        port = std::stoi(hostport.substr(colon + 1), &used);
        if (used != hostport.size() - colon - 1) port = -1;
      } catch (const std::exception&) {
        port = -1;
      }
      if (port <= 0 || port > 65535) {
        return InvalidArgument("rendezvous " + r + ": port must be 1..65535");
      }
      c10d::TCPStoreOptions opts;
      opts.port = static_cast<uint16_t>(port);
      opts.isServer = o.rank == 0;
      opts.numWorkers = o.world_size;
      opts.waitWorkers = false;  // the join below waits, with a message naming who is missing
      opts.timeout = o.timeout;
      auto store = c10::make_intrusive<c10d::TCPStore>(hostport.substr(0, colon), opts);
      return c10::intrusive_ptr<c10d::Store>(store);
    }
  } catch (const std::exception& e) {
    return Unavailable("rendezvous " + r + ": cannot open the store: " + std::string(e.what()).substr(0, 300));
  }
  return InvalidArgument("rendezvous '" + r + "': expected file:/abs/path or tcp:HOST:PORT");
}

// Every rank sets its key and waits for all of them; on timeout the message names the absent ranks.
Status Join(c10d::Store& store, const CommOptions& o) {
  auto key = [](int r) { return "fuji/dist/joined/" + std::to_string(r); };
  std::vector<std::string> keys;
  for (int r = 0; r < o.world_size; ++r) keys.push_back(key(r));
  try {
    store.set(key(o.rank), std::vector<uint8_t>{1});
    store.wait(keys, o.timeout);
    return Status::Ok();
  } catch (const std::exception& e) {
    std::string missing;
    int count = 0;
    try {
      for (int r = 0; r < o.world_size; ++r) {
        if (!store.check({key(r)})) {
          missing += (count++ ? ", " : "") + std::to_string(r);
        }
      }
    } catch (const std::exception&) {
      missing = "unknown";
    }
    return Unavailable("rendezvous " + o.rendezvous + " timed out after " +
                       std::to_string(o.timeout.count()) + " ms on rank " + std::to_string(o.rank) +
                       ": rank" + (count == 1 ? " " : "s ") + (missing.empty() ? "?" : missing) +
                       " of " + std::to_string(o.world_size) + " never joined");
  }
}

#if defined(FUJI_DIST_GLOO)
Result<std::unique_ptr<Backend>> MakeGlooBackend(const c10::intrusive_ptr<c10d::Store>& store,
                                                 const CommOptions& o, const Where& where) {
  const std::string name =
      "gloo process group on rank " + std::to_string(o.rank) + " of " + std::to_string(o.world_size);
  c10::intrusive_ptr<c10d::ProcessGroupGloo::Options> opts;
  try {
    // The timeout is the context's: every pair's connection and the alltoall-based collectives.
    opts = c10d::ProcessGroupGloo::Options::create(o.timeout);
    // The bind address the launcher gave (the agent's advertised one); else the interface
    // GLOO_SOCKET_IFNAME names; else one machine (a FileStore): loopback; across machines, the
    // address the host name resolves to.
    const char* ifname = std::getenv("GLOO_SOCKET_IFNAME");
    if (!o.bind_addr.empty()) {
      opts->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname(o.bind_addr));
    } else if (ifname != nullptr && ifname[0] != '\0') {
      opts->devices.push_back(c10d::ProcessGroupGloo::createDeviceForInterface(ifname));
    } else if (o.rendezvous.rfind("file:", 0) == 0) {
      opts->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1"));
    } else {
      opts->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
    }
    opts->threads = 2;  // two outstanding collectives progress at once
  } catch (const std::exception& e) {
    std::string what = e.what();
    return Unavailable(name + ": " + what.substr(0, what.find('\n')));
  }
  // Gloo connects to the peers one after another, each step (a peer's address from the store, then
  // the connection) bounded by the timeout on its own: a peer that vanished or cannot be reached
  // could hold the group for 2 (N - 1) timeouts. The group is built on a thread of its own and
  // given the timeout in all; past it the rank fails (and exits), leaving the thread to Gloo's
  // own timeouts.
  struct Pending {
    std::mutex mu;
    std::condition_variable cv;
    bool done = false;
    c10::intrusive_ptr<c10d::ProcessGroupGloo> pg;
    std::string error;
  };
  auto pending = std::make_shared<Pending>();
  auto prefixed = c10::make_intrusive<c10d::PrefixStore>("fuji/gloo", store);
  std::thread([pending, prefixed, opts, rank = o.rank, size = o.world_size] {
    c10::intrusive_ptr<c10d::ProcessGroupGloo> pg;
    std::string error;
    try {
      pg = c10::make_intrusive<c10d::ProcessGroupGloo>(prefixed, rank, size, opts);
    } catch (const std::exception& e) {
      error = e.what();
      if (error.empty()) error = "failed";
    }
    std::lock_guard<std::mutex> lock(pending->mu);
    pending->pg = std::move(pg);
    pending->error = std::move(error);
    pending->done = true;
    pending->cv.notify_all();
  }).detach();
  std::unique_lock<std::mutex> lock(pending->mu);
  if (!pending->cv.wait_for(lock, o.timeout, [&] { return pending->done; })) {
    return Unavailable(name + ": the peers did not all connect within " + std::to_string(o.timeout.count()) +
                       " ms (one vanished, or its address cannot be reached from here)");
  }
  if (!pending->pg) return Unavailable(name + ": " + pending->error.substr(0, pending->error.find('\n')));
  return std::unique_ptr<Backend>(std::make_unique<GlooBackend>(std::move(pending->pg), where));
}
#endif  // FUJI_DIST_GLOO

}  // namespace

std::unique_ptr<Work> WrapWork(c10::intrusive_ptr<c10d::Work> work, std::string collective,
                               const Where& where, std::function<void()> then) {
  return std::make_unique<C10dWork>(std::move(work), std::move(collective), where, std::move(then));
}

}  // namespace internal

struct Communicator::Impl {
  CommOptions options;
  internal::Where where;
  // Declared before the backend: the process group may use the store until it is destroyed.
  c10::intrusive_ptr<c10d::Store> store;
  std::unique_ptr<internal::Backend> backend;
  std::atomic<int64_t> bytes_sent{0};
};

namespace {

std::string DtypeName(const at::Tensor& t) { return std::string(c10::toString(t.scalar_type())); }

void CheckTensor(const char* collective, const char* name, const at::Tensor& t) {
  if (!t.defined()) throw std::invalid_argument(std::string(collective) + ": " + name + " is undefined");
  if (!t.is_contiguous()) {
    throw std::invalid_argument(std::string(collective) + ": " + name + " must be contiguous");
  }
  auto st = t.scalar_type();
  if (st != at::kFloat && st != at::kBFloat16 && st != at::kHalf) {
    throw std::invalid_argument(std::string(collective) + ": " + name + " has dtype " +
                                DtypeName(t) + "; expected Float, BFloat16 or Half");
  }
}

// All-reduces also take Double: the sums of squares and of losses that AdamW and the trainer
// keep in double precision.
void CheckReduced(const char* collective, const at::Tensor& t) {
  if (t.defined() && t.scalar_type() == at::kDouble) {
    if (!t.is_contiguous()) throw std::invalid_argument(std::string(collective) + ": tensor must be contiguous");
    return;
  }
  CheckTensor(collective, "tensor", t);
}

void CheckPair(const char* collective, const at::Tensor& a, const at::Tensor& b) {
  CheckTensor(collective, "input", a);
  CheckTensor(collective, "output", b);
  if (a.scalar_type() != b.scalar_type()) {
    throw std::invalid_argument(std::string(collective) + ": input is " + DtypeName(a) +
                                " but output is " + DtypeName(b));
  }
  if (a.device() != b.device()) {
    throw std::invalid_argument(std::string(collective) + ": input and output are on different devices");
  }
}

// whole must hold world_size parts of part's size, e.g. a padded reduce-scatter input.
void CheckWhole(const std::string& whole_name, const at::Tensor& whole, const char* part_name,
                const at::Tensor& part, int64_t n) {
  if (whole.numel() != n * part.numel()) {
    throw std::invalid_argument(whole_name + " has " + std::to_string(whole.numel()) +
                                " elements, expected world_size " + std::to_string(n) + " x " +
                                part_name + " " + std::to_string(part.numel()) + " (pad)");
  }
}

int64_t Bytes(const at::Tensor& t) { return t.numel() * static_cast<int64_t>(t.element_size()); }

}  // namespace

Communicator::Communicator(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Communicator::~Communicator() = default;

Result<std::unique_ptr<Communicator>> Communicator::Create(const CommOptions& o) {
  if (o.world_size < 1) return InvalidArgument("world_size must be at least 1");
  if (o.rank < 0 || o.rank >= o.world_size) {
    return InvalidArgument("rank " + std::to_string(o.rank) + " outside 0.." + std::to_string(o.world_size - 1));
  }
  if (o.backend != "gloo" && o.backend != "nccl") {
    return InvalidArgument("backend '" + o.backend + "': expected gloo or nccl");
  }
  if (o.timeout.count() <= 0) return InvalidArgument("collective timeout must be positive");
#if !defined(FUJI_DIST_NCCL)
  if (o.backend == "nccl") {
    return InvalidArgument("backend nccl: this build of fuji has no NCCL (libtorch without CUDA/NCCL)");
  }
#endif
#if !defined(FUJI_DIST_GLOO)
  if (o.backend == "gloo") {
    return InvalidArgument("backend gloo: this build of fuji has no Gloo (gloo headers were not found)");
  }
#endif
  auto impl = std::make_unique<Impl>();
  impl->options = o;
  impl->where = internal::Where{o.rank, o.world_size, o.backend, o.timeout};
  FUJI_ASSIGN_OR_RETURN(impl->store, internal::OpenStore(o));
  FUJI_RETURN_IF_ERROR(internal::Join(*impl->store, o));
#if defined(FUJI_DIST_GLOO)
  if (o.backend == "gloo") {
    FUJI_ASSIGN_OR_RETURN(impl->backend, internal::MakeGlooBackend(impl->store, o, impl->where));
  }
#endif
#if defined(FUJI_DIST_NCCL)
  if (o.backend == "nccl") {
    FUJI_ASSIGN_OR_RETURN(impl->backend, internal::MakeNcclBackend(impl->store, impl->where, o.device_index));
  }
#endif
  return std::unique_ptr<Communicator>(new Communicator(std::move(impl)));
}

int Communicator::rank() const { return impl_->options.rank; }
int Communicator::world_size() const { return impl_->options.world_size; }
const std::string& Communicator::backend() const { return impl_->options.backend; }
int64_t Communicator::bytes_sent() const { return impl_->bytes_sent.load(); }

std::unique_ptr<Work> Communicator::AllReduceSumAsync(at::Tensor t) {
  CheckReduced("all-reduce", t);
  const int64_t n = world_size();
  impl_->bytes_sent += 2 * Bytes(t) * (n - 1) / n;
  return impl_->backend->AllReduce(std::move(t), /*max=*/false);
}

void Communicator::AllReduceSum(at::Tensor& t) { AllReduceSumAsync(t)->Wait(); }

void Communicator::AllReduceMax(at::Tensor& t) {
  CheckReduced("all-reduce max", t);
  const int64_t n = world_size();
  impl_->bytes_sent += 2 * Bytes(t) * (n - 1) / n;
  impl_->backend->AllReduce(t, /*max=*/true)->Wait();
}

std::unique_ptr<Work> Communicator::ReduceScatterSumAsync(const at::Tensor& input, at::Tensor output) {
  const int64_t n = world_size();
  CheckPair("reduce-scatter", input, output);
  CheckWhole("reduce-scatter: input", input, "output", output, n);
  impl_->bytes_sent += Bytes(input) * (n - 1) / n;
  return impl_->backend->ReduceScatterSum(input.view({-1}), output.view({-1}));
}

void Communicator::ReduceScatterSum(const at::Tensor& input, at::Tensor& output) {
  ReduceScatterSumAsync(input, output)->Wait();
}

std::unique_ptr<Work> Communicator::AllGatherAsync(const at::Tensor& shard, at::Tensor full) {
  const int64_t n = world_size();
  CheckPair("all-gather", shard, full);
  CheckWhole("all-gather: full", full, "shard", shard, n);
  impl_->bytes_sent += Bytes(shard) * (n - 1);
  return impl_->backend->AllGather(shard.view({-1}), full.view({-1}));
}

void Communicator::AllGather(const at::Tensor& shard, at::Tensor& full) {
  AllGatherAsync(shard, full)->Wait();
}

void Communicator::Broadcast(at::Tensor& t, int root) {
  CheckTensor("broadcast", "tensor", t);
  if (root < 0 || root >= world_size()) {
    throw std::invalid_argument("broadcast: root " + std::to_string(root) + " outside 0.." +
                                std::to_string(world_size() - 1));
  }
  if (rank() == root) impl_->bytes_sent += Bytes(t) * (world_size() - 1);
  impl_->backend->Broadcast(t, root)->Wait();
}

void Communicator::Barrier() { impl_->backend->Barrier(); }

Status Communicator::StoreSet(const std::string& key, const std::string& value) {
  if (key.empty() || key.size() > 256) return InvalidArgument("store key must be 1..256 bytes");
  if (value.size() > (1 << 20)) return InvalidArgument("store value above 1 MiB");
  try {
    impl_->store->set("fuji/user/" + key, std::vector<uint8_t>(value.begin(), value.end()));
    return Status::Ok();
  } catch (const std::exception& e) {
    std::string what = e.what();
    return Unavailable("rendezvous " + impl_->options.rendezvous + ": cannot set " + key + ": " +
                       what.substr(0, what.find('\n')));
  }
}

Result<std::string> Communicator::StoreGet(const std::string& key) {
  if (key.empty() || key.size() > 256) return InvalidArgument("store key must be 1..256 bytes");
  const std::string full = "fuji/user/" + key;
  try {
    impl_->store->wait({full}, impl_->options.timeout);
    std::vector<uint8_t> value = impl_->store->get(full);
    return std::string(value.begin(), value.end());
  } catch (const std::exception& e) {
    std::string what = e.what();
    return Unavailable("rendezvous " + impl_->options.rendezvous + ": " + key + " was not set within " +
                       std::to_string(impl_->options.timeout.count()) + " ms: " + what.substr(0, what.find('\n')));
  }
}

}  // namespace fuji::dist
