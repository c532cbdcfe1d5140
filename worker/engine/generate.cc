// Generation loop and token sampling.
#include "worker/engine/generate.h"

#include <algorithm>
#include <chrono>
#include <cmath>

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

namespace fuji::engine {
namespace {

double MsSince(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
}

}  // namespace

Status ValidateGeneration(const ModelConfig& config, const std::vector<int32_t>& prompt,
                          const GenerateOptions& options) {
  if (prompt.empty()) return InvalidArgument("empty prompt: give at least one token");
  for (int32_t id : prompt) {
    if (id < 0 || id >= config.vocab_size) {
      return InvalidArgument("token id " + std::to_string(id) + " is outside the vocabulary (size " +
                             std::to_string(config.vocab_size) + ")");
    }
  }
  if (options.max_new_tokens < 1 || options.max_new_tokens > config.n_positions) {
    return InvalidArgument("max_new_tokens " + std::to_string(options.max_new_tokens) +
                           " is outside 1.." + std::to_string(config.n_positions));
  }
  const int64_t total = static_cast<int64_t>(prompt.size()) + options.max_new_tokens;
  if (static_cast<int64_t>(prompt.size()) > config.n_positions) {
    return InvalidArgument("prompt of " + std::to_string(prompt.size()) +
                           " tokens is longer than the model's " + std::to_string(config.n_positions) +
                           " positions");
  }
  if (total > config.n_positions) {
    return InvalidArgument("prompt of " + std::to_string(prompt.size()) + " tokens plus " +
                           std::to_string(options.max_new_tokens) + " new tokens exceeds the model's " +
                           std::to_string(config.n_positions) + " positions");
  }
  const SamplingOptions& s = options.sampling;
  if (!s.greedy) {
    if (!(s.temperature > 0 && s.temperature <= 100)) return InvalidArgument("temperature must be in (0, 100]");
    if (s.top_k < 0) return InvalidArgument("top_k must be >= 0");
    if (!(s.top_p > 0 && s.top_p <= 1)) return InvalidArgument("top_p must be in (0, 1]");
  }
  return Status::Ok();
}

TokenSampler::TokenSampler(const SamplingOptions& options)
    : options_(options), state_(options.seed ^ 0x9E3779B97F4A7C15ull) {}

// splitmix64: small, fast, and the same stream on every platform and libtorch version.
double TokenSampler::NextUniform() {
  uint64_t z = (state_ += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  z ^= z >> 31;
  return static_cast<double>(z >> 11) * (1.0 / 9007199254740992.0);
}

int32_t TokenSampler::Sample(const float* logits, int64_t vocab) {
  if (options_.greedy) {
    return static_cast<int32_t>(std::max_element(logits, logits + vocab) - logits);
  }
  candidates_.clear();
  for (int64_t i = 0; i < vocab; ++i) {
    candidates_.emplace_back(static_cast<float>(logits[i] / options_.temperature), static_cast<int32_t>(i));
  }
  auto by_logit = [](const auto& a, const auto& b) { return a.first > b.first || (a.first == b.first && a.second < b.second); };
  size_t keep = candidates_.size();
  if (options_.top_k > 0 && static_cast<size_t>(options_.top_k) < keep) {
    keep = static_cast<size_t>(options_.top_k);
    std::partial_sort(candidates_.begin(), candidates_.begin() + static_cast<long>(keep), candidates_.end(), by_logit);
  } else {
    std::sort(candidates_.begin(), candidates_.end(), by_logit);
  }
  candidates_.resize(keep);
  // Softmax over the kept candidates, then the top-p nucleus.
  const double max_logit = candidates_.front().first;
  std::vector<double> probs(keep);
  double sum = 0;
  for (size_t i = 0; i < keep; ++i) sum += probs[i] = std::exp(candidates_[i].first - max_logit);
  double cumulative = 0;
  size_t nucleus = keep;
  for (size_t i = 0; i < keep; ++i) {
    cumulative += probs[i] / sum;
    if (cumulative >= options_.top_p) {
      nucleus = i + 1;
      break;
    }
  }
  double mass = 0;
  for (size_t i = 0; i < nucleus; ++i) mass += probs[i];
  double u = NextUniform() * mass;
  for (size_t i = 0; i < nucleus; ++i) {
    u -= probs[i];
    if (u <= 0) return candidates_[i].second;
  }
  return candidates_[nucleus - 1].second;
}

Result<std::vector<int32_t>> Generate(const Gpt2Model& model, const std::vector<int32_t>& prompt,
                                      const GenerateOptions& options, GenerateTimings* timings,
                                      const TokenCallback& on_token) {
  const ModelConfig& config = model.config();
  FUJI_RETURN_IF_ERROR(ValidateGeneration(config, prompt, options));
  c10::InferenceMode inference;
  const int64_t total = static_cast<int64_t>(prompt.size()) + options.max_new_tokens;
  KvCache cache(config, 1, total, model.dtype(), model.device());
  TokenSampler sampler(options.sampling);
  const auto id_options = at::TensorOptions().dtype(at::kLong).device(model.device());

  std::vector<int64_t> prompt64(prompt.begin(), prompt.end());
  at::Tensor ids = at::tensor(prompt64, at::kLong).to(model.device()).view({1, -1});
  std::vector<int32_t> out;
  GenerateTimings local;
  auto start = std::chrono::steady_clock::now();
  int64_t previous = -1;  // the token a decode step feeds (the prompt goes through Forward)
  for (int64_t step = 0; step < options.max_new_tokens; ++step) {
    at::Tensor last;
    if (previous >= 0 && model.DecodeStepApplies(cache)) {
      last = model.DecodeStep(previous, &cache);  // the same logits, in one parallel region
    } else {
      at::Tensor hidden = model.Forward(ids, &cache);
      // Logits come back to the host for sampling, which also waits for the device.
      last = model.Logits(hidden.select(1, hidden.size(1) - 1)).to(at::kCPU, at::kFloat).contiguous();
    }
    const int32_t token = sampler.Sample(last.data_ptr<float>(), config.vocab_size);
    if (step == 0) {
      local.prefill_ms = MsSince(start);
      start = std::chrono::steady_clock::now();
    } else {
      local.decode_ms = MsSince(start);
      local.decode_steps = step;
    }
    out.push_back(token);
    if (on_token) on_token(token, step);
    if (token == config.eos_token_id && !options.ignore_eos) break;
    previous = token;
    ids = at::full({1, 1}, previous, id_options);
  }
  if (timings != nullptr) *timings = local;
  return out;
}

}  // namespace fuji::engine
