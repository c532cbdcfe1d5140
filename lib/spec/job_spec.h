// Job specifications as JSON: parsed and checked in one place, torch-free, so that the CLI, the
// daemon (at submit) and fuji-rank refuse the same bad input with the same messages.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "lib/common/limits.h"
#include "lib/common/status.h"

namespace fuji {

// Limits on what a request may carry (lib/common/limits.h); the model's own limits (positions,
// vocabulary) are checked again where the model is known.
inline constexpr size_t kMaxPromptBytes = limits::kMaxPromptBytes;
inline constexpr size_t kMaxPromptIds = limits::kMaxPromptIds;
inline constexpr int64_t kMaxNewTokens = limits::kMaxNewTokens;

struct InferSpec {
  std::string model;                 // checkpoint directory
  std::optional<std::string> prompt; // text, tokenized by the rank with the model's tokenizer
  std::vector<int32_t> prompt_ids;   // used when prompt is absent
  int64_t max_new_tokens = 64;
  bool greedy = true;
  double temperature = 1.0;
  int64_t top_k = 0;
  double top_p = 1.0;
  uint64_t seed = 0;
  std::string precision = "fp32";    // fp32 | bf16 | fp16
  std::string device = "cpu";        // cpu | cuda | cuda:N
  bool ignore_eos = false;
  // params: the weights stay in host memory and are streamed to the device block by block
  // (the ZeRO-3 offload path), so a model larger than the device's memory still generates.
  std::string offload = "none";      // none | params
  // A serving job (fuji serve start): no prompt; its rank loads the model and keeps it loaded,
  // pinned on its device, until the job is cancelled. Inference jobs of the same model placed
  // there run in that rank.
  bool serve = false;
  // Generation ends once the decoded text contains one of these; the text is cut before it.
  std::vector<std::string> stop;     // at most kMaxStopStrings, each 1..kMaxStopBytes bytes
  static constexpr size_t kMaxStopStrings = 4;
  static constexpr size_t kMaxStopBytes = 256;

  nlohmann::json ToJson() const;
  // INVALID_ARGUMENT naming the field for anything malformed or out of range.
  static Result<InferSpec> FromJson(const nlohmann::json& j);
};

struct InitSpec {
  std::string out;
  std::string arch = "tiny";
  uint64_t seed = 0;
  std::string dtype = "fp32";
  std::string vocab_dir;  // where vocab.json + merges.txt (or encoder.json + vocab.bpe) are
  // Overrides of the architecture's shape; 0 keeps the architecture's value.
  int64_t layers = 0, width = 0, heads = 0, ffn = 0, vocab = 0, positions = 0;

  nlohmann::json ToJson() const;
  static Result<InitSpec> FromJson(const nlohmann::json& j);
};

// "1,2,3" -> ids; INVALID_ARGUMENT for anything but comma-separated non-negative integers.
Result<std::vector<int32_t>> ParseIdList(const std::string& text);

}  // namespace fuji
