// Load benchmark: one rank of a ZeRO-3 group loading a checkpoint (train::ZeroModel::Load, the
// parameters only: inference_only, so no gradients or optimizer states are allocated), timed, with
// its peak resident set. FUJI_LOAD_WHOLE=1 selects the whole-model load (every rank reads the whole
// checkpoint into host memory first) for comparison. Ranks meet over a file rendezvous (Gloo).
// usage: fuji-load-bench MODEL_DIR --rank R --world N --rendezvous file:/abs/path [--precision P]
// Prints one JSON line; bench/run_load_bench.sh runs the ranks, before and after, and sums up.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include <ATen/Parallel.h>
#include <nlohmann/json.hpp>

#include "lib/common/proc_stats.h"
#include "worker/dist/communicator.h"
#include "worker/engine/checkpoint.h"
#include "worker/train/zero_model.h"

namespace {

int Fail(const std::string& message) {
  std::fprintf(stderr, "fuji-load-bench: %s\n", message.c_str());
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) return Fail("usage: fuji-load-bench MODEL_DIR --rank R --world N --rendezvous file:PATH");
  const std::string dir = argv[1];
  int rank = 0, world = 1;
  std::string rendezvous, precision = "bf16";
  for (int i = 2; i + 1 < argc; i += 2) {
    const std::string flag = argv[i], value = argv[i + 1];
    if (flag == "--rank") {
      rank = std::atoi(value.c_str());
    } else if (flag == "--world") {
      world = std::atoi(value.c_str());
    } else if (flag == "--rendezvous") {
      rendezvous = value;
    } else if (flag == "--precision") {
      precision = value;
    } else {
      return Fail("unknown flag " + flag);
    }
  }
  if (world < 1 || world > 64 || rank < 0 || rank >= world) return Fail("need 0 <= rank < world <= 64");
  auto dtype = fuji::engine::ParsePrecision(precision);
  if (!dtype.ok()) return Fail(dtype.status().message());
  at::set_num_threads(1);
  std::unique_ptr<fuji::dist::Communicator> comm;
  if (world > 1) {
    fuji::dist::CommOptions o;
    o.rank = rank;
    o.world_size = world;
    o.rendezvous = rendezvous;
    auto created = fuji::dist::Communicator::Create(o);
    if (!created.ok()) return Fail(created.status().ToString());
    comm = std::move(created).value();
  }
  fuji::train::ZeroOptions options;
  options.stage = 3;
  options.dtype = *dtype;
  options.inference_only = true;
  const int64_t base = fuji::PeakRssBytes();
  const auto start = std::chrono::steady_clock::now();
  auto model = fuji::train::ZeroModel::Load(dir, options, comm.get());
  if (!model.ok()) return Fail(model.status().ToString());
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const fuji::train::MemoryAccount m = (*model)->memory();
  const char* whole = std::getenv("FUJI_LOAD_WHOLE");
  const nlohmann::json out = {{"rank", rank},
                              {"world", world},
                              {"precision", precision},
                              {"whole", whole != nullptr && std::strcmp(whole, "1") == 0},
                              {"seconds", seconds},
                              {"params_bytes", m.params_device + m.params_host},
                              {"peak_rss_before_bytes", base},
                              {"peak_rss_bytes", fuji::PeakRssBytes()}};
  std::printf("%s\n", out.dump().c_str());
  if (comm) comm->Barrier();
  return 0;
}
