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
#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <nlohmann/json.hpp>

#include "worker/engine/batch_engine.h"
#include "worker/engine/checkpoint.h"
#include "worker/engine/device.h"
#include "worker/engine/generate.h"
#include "worker/engine/host_arena.h"

namespace {

using Clock = std::chrono::steady_clock;
double Seconds(Clock::time_point start) { return std::chrono::duration<double>(Clock::now() - start).count(); }

// Best of several passes summing a 1 GiB buffer on every thread: the memory-read bandwidth.
// The buffer is in huge pages like the model's weights, so the bound is the best this machine does.
double ReadBandwidth() {
  const int64_t n = (int64_t{1} << 30) / sizeof(float);
  auto arena = fuji::engine::HostArena::Create({static_cast<size_t>(n) * sizeof(float)});
  at::Tensor tensor = fuji::engine::HostArena::Tensor(*arena, 0, {n}, at::kFloat).fill_(1.0f);
  const float* buf = tensor.data_ptr<float>();
  double best = 0;
  for (int rep = 0; rep < 10; ++rep) {
    const auto start = Clock::now();
    std::vector<double> partial(static_cast<size_t>(at::get_num_threads()), 0.0);
    at::parallel_for(0, n, n / at::get_num_threads(), [&](int64_t b, int64_t e) {
      float lanes[16] = {};
      for (int64_t i = b; i + 16 <= e; i += 16) {
        for (int j = 0; j < 16; ++j) lanes[j] += buf[i + j];
      }
      double s = 0;
      for (float l : lanes) s += l;
      partial[static_cast<size_t>(at::get_thread_num())] += s;
    });
    const double sec = Seconds(start);
    double total = 0;
    for (double p : partial) total += p;
    if (total < 0) std::printf("impossible\n");  // keeps the sum alive
    best = std::max(best, static_cast<double>(n * sizeof(float)) / sec / 1e9);
  }
  return best;
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
  const double bandwidth = ReadBandwidth();
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
  nlohmann::json j = {{"bench", "decode"},
                      {"precision", precision},
                      {"threads", at::get_num_threads()},
                      {"weight_bytes_per_token", bytes_per_token},
                      {"read_bandwidth_gb_s", bandwidth},
                      {"bound_tokens_per_s", bound},
                      {"decode_tokens_per_s", best.DecodeTokensPerSecond()},
                      {"fraction_of_bound", best.DecodeTokensPerSecond() / bound},
                      {"prefill_ms", best.prefill_ms}};
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
