// Model configuration parsing, validation and the Cerebras-GPT architecture table.
#include "lib/model/model_config.h"

#include <nlohmann/json.hpp>

#include "lib/common/file_util.h"
#include "lib/common/json_bounds.h"

namespace fuji::engine {
namespace {

struct NamedArchitecture {
  const char* name;
  int64_t layers, width, heads, ffn;
};

// Cerebras-GPT (arXiv 2304.03208, HF model cards): layers / d_model / heads / d_ffn.
constexpr NamedArchitecture kArchitectures[] = {
    {"tiny", 2, 68, 17, 272},  // 17 heads like 256M: never assume powers of two
    {"cerebras-gpt-111m", 10, 768, 12, 3072},
    {"cerebras-gpt-256m", 14, 1088, 17, 4352},
    {"cerebras-gpt-590m", 18, 1536, 12, 6144},
    {"cerebras-gpt-1.3b", 24, 2048, 16, 8192},
    {"cerebras-gpt-2.7b", 32, 2560, 32, 10240},
    {"cerebras-gpt-6.7b", 32, 4096, 32, 16384},
    {"cerebras-gpt-13b", 40, 5120, 40, 20480},
};

Status ReadInt(const nlohmann::json& j, const char* key, const std::string& origin, int64_t* out) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return Status::Ok();
  if (!it->is_number_integer()) return InvalidArgument(origin + ": field '" + key + "' is not an integer");
  *out = it->get<int64_t>();
  return Status::Ok();
}

}  // namespace

int64_t ModelConfig::NumParameters() const {
  const int64_t c = n_embd, f = ffn();
  const int64_t per_layer = 2 * 2 * c            // two LayerNorms
                            + c * 3 * c + 3 * c  // c_attn
                            + c * c + c          // attn c_proj
                            + c * f + f          // c_fc
                            + f * c + c;         // mlp c_proj
  int64_t total = vocab_size * c + n_positions * c + n_layer * per_layer + 2 * c;
  if (!tie_word_embeddings) total += vocab_size * c;
  return total;
}

Status ModelConfig::Validate() {
  auto positive = [](const char* field, int64_t v, int64_t max) -> Status {
    if (v <= 0 || v > max) {
      return InvalidArgument(std::string(field) + " = " + std::to_string(v) + " is outside 1.." +
                             std::to_string(max));
    }
    return Status::Ok();
  };
  FUJI_RETURN_IF_ERROR(positive("n_layer", n_layer, 1024));
  FUJI_RETURN_IF_ERROR(positive("n_embd", n_embd, 1 << 16));
  FUJI_RETURN_IF_ERROR(positive("n_head", n_head, 1024));
  FUJI_RETURN_IF_ERROR(positive("n_positions", n_positions, 1 << 20));
  FUJI_RETURN_IF_ERROR(positive("vocab_size", vocab_size, 1 << 24));
  if (n_inner < 0 || n_inner > (1 << 20)) return InvalidArgument("n_inner = " + std::to_string(n_inner) + " is out of range");
  if (n_embd % n_head != 0) {
    return InvalidArgument("n_embd " + std::to_string(n_embd) + " is not divisible by n_head " +
                           std::to_string(n_head));
  }
  if (!(layer_norm_epsilon > 0 && layer_norm_epsilon < 1)) return InvalidArgument("layer_norm_epsilon out of range");
  if (n_inner == 0) n_inner = 4 * n_embd;
  return Status::Ok();
}

nlohmann::json ModelConfig::ToJson() const {
  return {
      {"architectures", {"GPT2LMHeadModel"}},
      {"model_type", "gpt2"},
      {"n_layer", n_layer},
      {"n_embd", n_embd},
      {"n_head", n_head},
      {"n_inner", ffn()},
      {"n_positions", n_positions},
      {"n_ctx", n_positions},
      {"vocab_size", vocab_size},
      {"layer_norm_epsilon", layer_norm_epsilon},
      {"activation_function", activation == Activation::kGeluErf ? "gelu" : "gelu_new"},
      {"scale_attn_by_inverse_layer_idx", scale_attn_by_inverse_layer_idx},
      {"tie_word_embeddings", tie_word_embeddings},
      {"bos_token_id", eos_token_id},
      {"eos_token_id", eos_token_id},
      {"embd_pdrop", 0.0},
      {"resid_pdrop", 0.0},
      {"attn_pdrop", 0.0},
      {"initializer_range", 0.02},
  };
}

Result<ModelConfig> ParseModelConfig(const nlohmann::json& j, const std::string& origin) {
  if (!j.is_object()) return InvalidArgument(origin + ": not a JSON object");
  ModelConfig c;
  FUJI_RETURN_IF_ERROR(ReadInt(j, "n_layer", origin, &c.n_layer));
  FUJI_RETURN_IF_ERROR(ReadInt(j, "n_embd", origin, &c.n_embd));
  FUJI_RETURN_IF_ERROR(ReadInt(j, "n_head", origin, &c.n_head));
  FUJI_RETURN_IF_ERROR(ReadInt(j, "n_inner", origin, &c.n_inner));
  FUJI_RETURN_IF_ERROR(ReadInt(j, "n_positions", origin, &c.n_positions));
  FUJI_RETURN_IF_ERROR(ReadInt(j, "vocab_size", origin, &c.vocab_size));
  FUJI_RETURN_IF_ERROR(ReadInt(j, "eos_token_id", origin, &c.eos_token_id));
  if (auto it = j.find("layer_norm_epsilon"); it != j.end() && !it->is_null()) {
    if (!it->is_number()) return InvalidArgument(origin + ": field 'layer_norm_epsilon' is not a number");
    c.layer_norm_epsilon = it->get<double>();
  }
  if (auto it = j.find("activation_function"); it != j.end() && !it->is_null()) {
    const std::string a = it->is_string() ? it->get<std::string>() : "";
    if (a == "gelu") {
      c.activation = Activation::kGeluErf;
    } else if (a == "gelu_new" || a == "gelu_pytorch_tanh" || a == "gelu_fast") {
      c.activation = Activation::kGeluTanh;
    } else {
      return InvalidArgument(origin + ": unsupported activation_function '" + a + "'");
    }
  }
  for (const char* key : {"scale_attn_by_inverse_layer_idx", "tie_word_embeddings"}) {
    auto it = j.find(key);
    if (it == j.end() || it->is_null()) continue;
    if (!it->is_boolean()) return InvalidArgument(origin + ": field '" + key + "' is not a boolean");
    (std::string(key) == "tie_word_embeddings" ? c.tie_word_embeddings
                                               : c.scale_attn_by_inverse_layer_idx) = it->get<bool>();
  }
  Status s = c.Validate();
  if (!s.ok()) return s.WithContext(origin);
  return c;
}

Result<ModelConfig> LoadModelConfig(const std::string& dir) {
  const std::string path = dir + "/config.json";
  FUJI_ASSIGN_OR_RETURN(std::string text, ReadFile(path, 1 << 20));
  FUJI_RETURN_IF_ERROR(CheckJsonDepth(text, path));
  nlohmann::json j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return InvalidArgument(path + ": malformed JSON");
  return ParseModelConfig(j, path);
}

Result<ModelConfig> ArchitectureConfig(const std::string& name) {
  for (const auto& a : kArchitectures) {
    const std::string full = a.name;
    if (name == full || "cerebras-gpt-" + name == full) {
      ModelConfig c;
      c.n_layer = a.layers;
      c.n_embd = a.width;
      c.n_head = a.heads;
      c.n_inner = a.ffn;
      c.n_positions = 2048;
      c.activation = Activation::kGeluErf;  // Cerebras-GPT's config says "gelu" (exact erf)
      if (full == "tiny") c.n_positions = 256;
      return c;
    }
  }
  std::string known;
  for (const auto& n : ArchitectureNames()) known += (known.empty() ? "" : ", ") + n;
  return InvalidArgument("unknown architecture '" + name + "' (known: " + known + ")");
}

std::vector<std::string> ArchitectureNames() {
  std::vector<std::string> names;
  for (const auto& a : kArchitectures) names.emplace_back(a.name);
  return names;
}

}  // namespace fuji::engine
