// GPT-2 model configuration as Cerebras-GPT checkpoints describe it (HF config.json), and the
// named architectures fuji knows. Torch-free: the CLI and the planner use it too.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "lib/common/status.h"

namespace fuji::engine {

enum class Activation { kGeluErf, kGeluTanh };

struct ModelConfig {
  int64_t n_layer = 12;
  int64_t n_embd = 768;
  int64_t n_head = 12;
  int64_t n_inner = 0;  // 0 in config.json ("null") means 4 * n_embd; resolved by Validate()
  int64_t n_positions = 1024;
  int64_t vocab_size = 50257;
  double layer_norm_epsilon = 1e-5;
  Activation activation = Activation::kGeluTanh;  // GPT-2's default "gelu_new"
  bool scale_attn_by_inverse_layer_idx = false;
  bool tie_word_embeddings = true;
  int64_t eos_token_id = 50256;

  int64_t head_dim() const { return n_embd / n_head; }
  int64_t ffn() const { return n_inner > 0 ? n_inner : 4 * n_embd; }
  // Parameters, counting the tied embedding once.
  int64_t NumParameters() const;
  // Checks every field; resolves n_inner. INVALID_ARGUMENT naming the field.
  Status Validate();
  nlohmann::json ToJson() const;  // HF GPT2LMHeadModel config.json
};

// Parses an HF config.json; missing fields take GPT-2's defaults (the minimal 2.7B/6.7B configs).
Result<ModelConfig> ParseModelConfig(const nlohmann::json& j, const std::string& origin);
Result<ModelConfig> LoadModelConfig(const std::string& dir);

// "tiny", "cerebras-gpt-111m", ... "cerebras-gpt-13b" (the "cerebras-gpt-" prefix is optional).
Result<ModelConfig> ArchitectureConfig(const std::string& name);
std::vector<std::string> ArchitectureNames();

}  // namespace fuji::engine
