// Engine benchmarks, each beside the machine bound measured in the same run:
//   decode  tokens/s at batch 1 vs memory-read bandwidth / bytes of weights read per token
//   load    GB/s of a checkpoint from the page cache vs memcpy bandwidth
//   batch   aggregate decode tokens/s of continuous batching (BatchEngine) with 1, 2, 4, 8, 16
//           and 32 concurrent requests (prompts of 20..200 tokens, --tokens new tokens each, EOS
//           ignored; steps with prompt chunks count in the with-prefill rate only) beside the
//           same 16 requests generated one after another (Generate), and the time to the first
//           token of a lone request with a prompt of 20, 64, 128 and 200 tokens
// usage: fuji-engine-bench decode MODEL_DIR [--tokens N] [--precision fp32|bf16]
//        fuji-engine-bench load MODEL_DIR
//        fuji-engine-bench batch MODEL_DIR [--tokens N] [--precision fp32|bf16]
// Prints one JSON object; bench/run_engine_bench.sh turns the runs into docs/performance.md rows.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iterator>
#include <memory>
#include <string>
#include <vector>

#include <sys/mman.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <nlohmann/json.hpp>

#include "lib/common/multiversion.h"
#include "worker/engine/batch_engine.h"
#include "worker/engine/checkpoint.h"
#include "worker/engine/device.h"
#include "worker/engine/generate.h"
#include "worker/engine/host_arena.h"

namespace {

using Clock = std::chrono::steady_clock;
double Seconds(Clock::time_point start) { return std::chrono::duration<double>(Clock::now() - start).count(); }

// Memory-read kernels for the decode bound. Each sums its range of a buffer in independent
// accumulators so that the adds never wait on each other; FUJI_MULTIVERSION builds them for
// AVX-512, AVX2 and baseline x86-64 like the engine's kernels. GCC vector types lower to one
// zmm, two ymm or four xmm per V16 in each clone.
typedef float V16 __attribute__((vector_size(64), aligned(4), may_alias));

template <int A>
inline __attribute__((always_inline)) float SumLanes(const float* p, int64_t n) {
  V16 acc[A] = {};
  int64_t i = 0;
  for (; i + 16 * A <= n; i += 16 * A) {
    for (int a = 0; a < A; ++a) acc[a] += *reinterpret_cast<const V16*>(p + i + 16 * a);
  }
  float s = 0;
  for (; i < n; ++i) s += p[i];
  for (int a = 0; a < A; ++a) {
    for (int l = 0; l < 16; ++l) s += acc[a][l];
  }
  return s;
}
FUJI_MULTIVERSION float SumVector4(const float* p, int64_t n) { return SumLanes<4>(p, n); }
FUJI_MULTIVERSION float SumVector8(const float* p, int64_t n) { return SumLanes<8>(p, n); }
// The check's kernel: four 64-bit integer accumulators (integer sums may be reordered, so the
// compiler vectorizes them as wide as each clone allows).
[[maybe_unused]] FUJI_MULTIVERSION int64_t SumWords(const int64_t* p, int64_t n) {
  int64_t a0 = 0, a1 = 0, a2 = 0, a3 = 0;
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) {
    a0 += p[i];
    a1 += p[i + 1];
    a2 += p[i + 2];
    a3 += p[i + 3];
  }
  for (; i < n; ++i) a0 += p[i];
  return a0 + a1 + a2 + a3;
}
// Sixteen float lanes in a plain array (the loop GCC vectorizes itself).
FUJI_MULTIVERSION float SumArray16(const float* p, int64_t n) {
  float lanes[16] = {};
  for (int64_t i = 0; i + 16 <= n; i += 16) {
    for (int j = 0; j < 16; ++j) lanes[j] += p[i + j];
  }
  float s = 0;
  for (float l : lanes) s += l;
  return s;
}

struct ReadBandwidths {
  std::vector<std::pair<std::string, double>> kernels;  // GB/s of each read kernel, best pass
  double best = 0;                                      // the bound's bandwidth: the best kernel
  double omp_sum = 0;                                   // the independent check
};

// The memory-read bandwidth of all threads: the best of several passes of each read kernel over
// a 1 GiB buffer in a HostArena (transparent huge pages, like the model's weights), each thread
// reading one contiguous share of it as the engine's kernels split their weights
// (at::parallel_for over the thread count, on libtorch's OpenMP threads: the decode's own threads,
// not pinned to cores, like the engine's). Checked against an independent measure: an OpenMP
// `parallel for` with four integer accumulators per thread over a separate buffer.
// Needs this file compiled with OpenMP: without it at::parallel_for (a template expanded here)
// runs every range on the calling thread, which is what the first version of this bound measured.
fuji::Result<ReadBandwidths> ReadBandwidth() {
  const int64_t n = (int64_t{1} << 30) / sizeof(float);
  FUJI_ASSIGN_OR_RETURN(auto arena, fuji::engine::HostArena::Create({static_cast<size_t>(n) * sizeof(float)}));
  at::Tensor tensor = fuji::engine::HostArena::Tensor(arena, 0, {n}, at::kFloat).fill_(1.0f);
  const float* buf = tensor.data_ptr<float>();
  const int64_t threads = std::max<int64_t>(1, at::get_num_threads());
  const int64_t chunk = (n / threads + 1023) / 1024 * 1024;
  const std::pair<const char*, float (*)(const float*, int64_t)> kernels[] = {
      {"vector4", &SumVector4}, {"vector8", &SumVector8}, {"array16", &SumArray16}};
  // The independent measure: its own buffer (aligned to and advised for 2 MiB pages, as the
  // arena does for the weights: on 4 KiB pages the same sum read 0.6-0.8x as fast here, the
  // prefetchers stopping at every page), OpenMP's own threads and split (not at::parallel_for),
  // and SumWords's integer accumulators (four float accumulators would wait on the adds' latency).
  const int64_t words = n / 2;
  const size_t plain_bytes = static_cast<size_t>(words) * sizeof(int64_t);
  void* plain_raw = nullptr;
  if (::posix_memalign(&plain_raw, size_t{2} << 20, plain_bytes) != 0) {
    return fuji::ResourceExhausted("cannot allocate 1 GiB for the bandwidth check");
  }
  std::unique_ptr<int64_t, decltype(&std::free)> plain(static_cast<int64_t*>(plain_raw), &std::free);
  ::madvise(plain_raw, plain_bytes, MADV_HUGEPAGE);  // advice only: 4 KiB pages if refused
  std::fill(plain.get(), plain.get() + words, int64_t{1});
  const int64_t* pb = plain.get();
  ReadBandwidths out;
  std::vector<double> kernel_best(std::size(kernels), 0.0);
  double keep = 0;  // every sum is used, so no pass can be optimized away
  // Rounds of one pass of each kernel then one of the OpenMP sum: on a shared machine both
  // measures meet the same neighbours, and the best pass of each is compared.
  for (int round = 0; round < 10; ++round) {
    for (size_t k = 0; k < std::size(kernels); ++k) {
      std::vector<double> partial(static_cast<size_t>(threads), 0.0);
      const auto start = Clock::now();
      at::parallel_for(0, threads, 1, [&](int64_t begin, int64_t end) {
        for (int64_t t = begin; t < end; ++t) {
          const int64_t lo = t * chunk, hi = std::min(n, lo + chunk);
          if (lo < hi) partial[static_cast<size_t>(t)] = kernels[k].second(buf + lo, hi - lo);
        }
      });
      const double sec = Seconds(start);
      for (double p : partial) keep += p;
      kernel_best[k] = std::max(kernel_best[k], static_cast<double>(n * sizeof(float)) / sec / 1e9);
    }
#ifdef _OPENMP
    int64_t sum = 0;
    const auto start = Clock::now();
#pragma omp parallel num_threads(static_cast<int>(threads)) reduction(+ : sum)
    {
      const int64_t count = omp_get_num_threads(), share = (words / count + 3) / 4 * 4;
      const int64_t lo = std::min(words, omp_get_thread_num() * share), hi = std::min(words, lo + share);
      sum += SumWords(pb + lo, hi - lo);
    }
    const double sec = Seconds(start);
    keep += static_cast<double>(sum);
    out.omp_sum = std::max(out.omp_sum, static_cast<double>(words * sizeof(int64_t)) / sec / 1e9);
#endif
  }
  for (size_t k = 0; k < std::size(kernels); ++k) {
    out.kernels.emplace_back(kernels[k].first, kernel_best[k]);
    out.best = std::max(out.best, kernel_best[k]);
  }
  if (keep < 0) std::printf("impossible\n");
  return out;
}

// Best of several copies of a 1 GiB buffer: single-threaded memcpy, and the same split over threads.
std::pair<double, double> CopyBandwidth() {
  const size_t bytes = size_t{1} << 30;
  std::vector<char> a(bytes, 1), b(bytes, 0);
  double single = 0, parallel = 0;
  for (int rep = 0; rep < 3; ++rep) {
    auto start = Clock::now();
    std::memcpy(b.data(), a.data(), bytes);
    single = std::max(single, bytes / Seconds(start) / 1e9);
    start = Clock::now();
    at::parallel_for(0, static_cast<int64_t>(bytes), static_cast<int64_t>(bytes) / at::get_num_threads(),
                     [&](int64_t lo, int64_t hi) { std::memcpy(b.data() + lo, a.data() + lo, static_cast<size_t>(hi - lo)); });
    parallel = std::max(parallel, bytes / Seconds(start) / 1e9);
  }
  return {single, parallel};
}

int Fail(const fuji::Status& s) {
  std::fprintf(stderr, "fuji-engine-bench: %s\n", s.ToString().c_str());
  return 1;
}

int Decode(const std::string& dir, int64_t tokens, const std::string& precision) {
  auto dtype = fuji::engine::ParsePrecision(precision);
  if (!dtype.ok()) return Fail(dtype.status());
  auto model = fuji::engine::LoadModel(dir, {*dtype, at::kCPU});
  if (!model.ok()) return Fail(model.status());
  const auto& c = (*model)->config();
  // Every parameter is read once per token except the position table (one row).
  const double bytes_per_token = static_cast<double>((*model)->ParameterBytes()) -
                                 static_cast<double>(c.n_positions - 1) * c.n_embd * at::elementSize(*dtype);
  auto measured = ReadBandwidth();
  if (!measured.ok()) return Fail(measured.status());
  const double bandwidth = measured->best;
  fuji::engine::GenerateOptions options;
  options.max_new_tokens = tokens;
  options.ignore_eos = true;
  fuji::engine::GenerateTimings best;
  for (int rep = 0; rep < 3; ++rep) {
    fuji::engine::GenerateTimings t;
    auto out = fuji::engine::Generate(**model, {1858, 389, 5863, 8598, 588, 18632, 13}, options, &t);
    if (!out.ok()) return Fail(out.status());
    if (t.DecodeTokensPerSecond() > best.DecodeTokensPerSecond()) best = t;
  }
  const double bound = bandwidth * 1e9 / bytes_per_token;
  nlohmann::json kernels = nlohmann::json::object();
  for (const auto& [name, gb_s] : measured->kernels) kernels[name] = gb_s;
  // The two measures should agree within 10%; when they do not, the bound is suspect.
  const double agreement = bandwidth > 0 ? measured->omp_sum / bandwidth : 0;
  const bool disagree = agreement < 0.9 || agreement > 1.1;
  if (disagree) {
    std::fprintf(stderr, "fuji-engine-bench: the read kernels (%.1f GB/s) and the OpenMP sum (%.1f GB/s) disagree by "
                 "more than 10%%: the bound is not trustworthy in this run\n", bandwidth, measured->omp_sum);
  }
  nlohmann::json j = {{"bench", "decode"},
                      {"precision", precision},
                      {"threads", at::get_num_threads()},
                      {"weight_bytes_per_token", bytes_per_token},
                      {"read_bandwidth_gb_s", bandwidth},
                      {"read_kernels_gb_s", kernels},
                      {"omp_sum_gb_s", measured->omp_sum},
                      {"omp_sum_over_read_bandwidth", agreement},
                      {"bound_tokens_per_s", bound},
                      {"decode_tokens_per_s", best.DecodeTokensPerSecond()},
                      {"fraction_of_bound", best.DecodeTokensPerSecond() / bound},
                      {"prefill_ms", best.prefill_ms},
                      {"bandwidth_measures_disagree", disagree}};
  std::printf("%s\n", j.dump().c_str());
  return 0;
}

int Load(const std::string& dir) {
  const auto [single, parallel] = CopyBandwidth();
  double best = 0;
  int64_t bytes = 0;
  for (int rep = 0; rep < 3; ++rep) {  // the first pass also brings the file into the page cache
    fuji::engine::LoadReport report;
    const auto start = Clock::now();
    auto model = fuji::engine::LoadModel(dir, {at::kFloat, at::kCPU}, &report);
    const double sec = Seconds(start);
    if (!model.ok()) return Fail(model.status());
    bytes = report.bytes;
    if (rep > 0) best = std::max(best, static_cast<double>(bytes) / sec / 1e9);
  }
  nlohmann::json j = {{"bench", "load"},       {"bytes", bytes},
                      {"load_gb_s", best},     {"memcpy_gb_s", single},
                      {"parallel_copy_gb_s", parallel}, {"fraction_of_memcpy", best / single},
                      {"threads", at::get_num_threads()}};
  std::printf("%s\n", j.dump().c_str());
  return 0;
}

// Request i of a batch run: a prompt of 20..200 tokens, ids spread over the vocabulary.
std::vector<int32_t> BatchPrompt(int i, int64_t vocab) {
  const int len = 20 + (i * 97) % 181;
  std::vector<int32_t> prompt;
  for (int t = 0; t < len; ++t) prompt.push_back(static_cast<int32_t>((i * 7919 + t * 104729) % vocab));
  return prompt;
}

int Batch(const std::string& dir, int64_t tokens, const std::string& precision) {
  auto dtype = fuji::engine::ParsePrecision(precision);
  if (!dtype.ok()) return Fail(dtype.status());
  auto model = fuji::engine::LoadModel(dir, {*dtype, at::kCPU});
  if (!model.ok()) return Fail(model.status());
  const auto& c = (*model)->config();
  fuji::engine::GenerateOptions options;
  options.max_new_tokens = tokens;
  options.ignore_eos = true;
  nlohmann::json rows = nlohmann::json::array();
  double concurrent16 = 0;
  for (int concurrency : {1, 2, 4, 8, 16, 32}) {
    fuji::engine::BatchEngineOptions engine_options;
    engine_options.num_blocks = concurrency * ((200 + tokens + 15) / 16 + 1);
    auto engine = fuji::engine::BatchEngine::Create(**model, engine_options);
    if (!engine.ok()) return Fail(engine.status());
    const auto start = Clock::now();
    for (int i = 0; i < concurrency; ++i) {
      fuji::Status added = (*engine)->Add({"r" + std::to_string(i), BatchPrompt(i, c.vocab_size), options, nullptr});
      if (!added.ok()) return Fail(added);
    }
    // Steps whose rows are all decode tokens (no prompt chunk) measure the decode rate.
    int64_t generated = 0, steps = 0, decode_tokens = 0;
    double decode_seconds = 0;
    while (!(*engine)->Idle()) {
      const int64_t waiting = (*engine)->waiting();
      const auto step_start = Clock::now();
      auto events = (*engine)->Step();
      if (!events.ok()) return Fail(events.status());
      const double step_seconds = Seconds(step_start);
      ++steps;
      int64_t step_tokens = 0;
      for (const auto& e : *events) step_tokens += e.kind == fuji::engine::BatchEvent::Kind::kToken;
      generated += step_tokens;
      if (waiting == 0 && step_tokens == (*engine)->last_step_batch() && steps > 1) {
        decode_tokens += step_tokens;
        decode_seconds += step_seconds;
      }
    }
    const double sec = Seconds(start);
    const double decode_rate = decode_seconds > 0 ? static_cast<double>(decode_tokens) / decode_seconds : 0;
    if (concurrency == 16) concurrent16 = decode_rate;
    rows.push_back({{"concurrent", concurrency},
                    {"tokens", generated},
                    {"steps", steps},
                    {"seconds", sec},
                    {"tokens_per_s_with_prefill", static_cast<double>(generated) / sec},
                    {"decode_tokens_per_s", decode_rate},
                    {"max_batch_seen", (*engine)->max_batch_seen()}});
    std::fprintf(stderr, "%s\n", rows.back().dump().c_str());
  }
  // Time to the first token of one request alone in the engine (its prompt's prefill and the
  // first token's logits), best of three, for prompts of 20..200 tokens.
  nlohmann::json prefill = nlohmann::json::object();
  for (const int length : {20, 64, 128, 200}) {
    double best = 0;
    for (int rep = 0; rep < 3; ++rep) {
      fuji::engine::BatchEngineOptions engine_options;
      engine_options.num_blocks = (length + 1 + 15) / 16 + 1;
      auto engine = fuji::engine::BatchEngine::Create(**model, engine_options);
      if (!engine.ok()) return Fail(engine.status());
      std::vector<int32_t> prompt;
      for (int t = 0; t < length; ++t) prompt.push_back(static_cast<int32_t>((t * 104729 + 17) % c.vocab_size));
      fuji::engine::GenerateOptions one = options;
      one.max_new_tokens = 1;
      const auto start = Clock::now();
      fuji::Status added = (*engine)->Add({"p", prompt, one, nullptr});
      if (!added.ok()) return Fail(added);
      while (!(*engine)->Idle()) {
        auto events = (*engine)->Step();
        if (!events.ok()) return Fail(events.status());
      }
      const double ms = Seconds(start) * 1000;
      if (rep == 0 || ms < best) best = ms;
    }
    prefill[std::to_string(length)] = best;
  }
  // The same 16 requests one after another, as a rank without batching serves them.
  const auto start = Clock::now();
  int64_t generated = 0, decode_steps = 0;
  double decode_ms = 0;
  for (int i = 0; i < 16; ++i) {
    fuji::engine::GenerateTimings t;
    auto out = fuji::engine::Generate(**model, BatchPrompt(i, c.vocab_size), options, &t);
    if (!out.ok()) return Fail(out.status());
    generated += static_cast<int64_t>(out->size());
    decode_steps += t.decode_steps;
    decode_ms += t.decode_ms;
  }
  const double sequential_with_prefill = static_cast<double>(generated) / Seconds(start);
  const double sequential = decode_ms > 0 ? decode_steps * 1000.0 / decode_ms : 0;
  nlohmann::json j = {{"bench", "batch"},
                      {"precision", precision},
                      {"threads", at::get_num_threads()},
                      {"new_tokens", tokens},
                      {"runs", rows},
                      {"sequential16_tokens_per_s_with_prefill", sequential_with_prefill},
                      {"sequential16_decode_tokens_per_s", sequential},
                      {"concurrent16_over_sequential", concurrent16 / sequential},
                      {"first_token_ms_by_prompt_tokens", prefill}};
  std::printf("%s\n", j.dump().c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  fuji::engine::ReexecWithPassiveOpenMp(argv);
  fuji::engine::ConfigureThreads();
  if (argc < 3) {
    std::fprintf(stderr, "usage: fuji-engine-bench decode|load|batch MODEL_DIR [--tokens N] [--precision P]\n");
    return 2;
  }
  const std::string mode = argv[1], dir = argv[2];
  int64_t tokens = 64;
  std::string precision = "fp32";
  for (int i = 3; i + 1 < argc; i += 2) {
    if (std::strcmp(argv[i], "--tokens") == 0) tokens = std::stoll(argv[i + 1]);
    if (std::strcmp(argv[i], "--precision") == 0) precision = argv[i + 1];
  }
  if (mode == "decode") return Decode(dir, tokens, precision);
  if (mode == "load") return Load(dir);
  if (mode == "batch") return Batch(dir, tokens, precision);
  std::fprintf(stderr, "unknown mode '%s'\n", mode.c_str());
  return 2;
}
