// Autoregressive generation with a KV cache: greedy, temperature, top-k and top-p sampling.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "lib/common/status.h"
#include "worker/engine/gpt2_model.h"

namespace fuji::engine {

struct SamplingOptions {
  bool greedy = true;
  double temperature = 1.0;  // > 0
  int64_t top_k = 0;         // 0: no limit
  double top_p = 1.0;        // (0, 1]
  uint64_t seed = 0;
};

struct GenerateOptions {
  int64_t max_new_tokens = 64;
  bool ignore_eos = false;  // run to max_new_tokens (benchmarks, comparisons)
  SamplingOptions sampling;
};

struct GenerateTimings {
  double prefill_ms = 0;   // the prompt's forward pass and the first new token
  double decode_ms = 0;    // every later token
  int64_t decode_steps = 0;
  double DecodeTokensPerSecond() const { return decode_ms > 0 ? decode_steps * 1000.0 / decode_ms : 0; }
};

// Called with each new token as it is chosen.
using TokenCallback = std::function<void(int32_t token, int64_t index)>;

// Checks options and prompt against the model: INVALID_ARGUMENT with the reason.
Status ValidateGeneration(const ModelConfig& config, const std::vector<int32_t>& prompt,
                          const GenerateOptions& options);

// Returns the new tokens (the prompt excluded). Stops at EOS unless ignore_eos, or at the limit.
Result<std::vector<int32_t>> Generate(const Gpt2Model& model, const std::vector<int32_t>& prompt,
                                      const GenerateOptions& options, GenerateTimings* timings,
                                      const TokenCallback& on_token = nullptr);

// Picks a token from one row of logits (float32, length V). Deterministic for a seeded rng.
class TokenSampler {
 public:
  explicit TokenSampler(const SamplingOptions& options);
  int32_t Sample(const float* logits, int64_t vocab);

 private:
  SamplingOptions options_;
  uint64_t state_;
  double NextUniform();
  std::vector<std::pair<float, int32_t>> candidates_;
};

}  // namespace fuji::engine
