// The canonical GPT-2 parameter layout (torch-free).
#include "lib/model/param_layout.h"

#include <cmath>

namespace fuji::engine {

std::vector<ParamInfo> ParameterLayout(const ModelConfig& c) {
  const int64_t C = c.n_embd, F = c.ffn();
  const double std = 0.02;
  // GPT-2 scales the residual projections by 1/sqrt(2 * n_layer) at init.
  const double proj_std = 0.02 / std::sqrt(2.0 * static_cast<double>(c.n_layer));
  std::vector<ParamInfo> layout;
  layout.push_back({"wte.weight", {c.vocab_size, C}, true, std});
  layout.push_back({"wpe.weight", {c.n_positions, C}, true, 0.01});
  for (int64_t l = 0; l < c.n_layer; ++l) {
    const std::string p = "h." + std::to_string(l) + ".";
    layout.push_back({p + "ln_1.weight", {C}, false, 0, true});
    layout.push_back({p + "ln_1.bias", {C}});
    layout.push_back({p + "attn.c_attn.weight", {C, 3 * C}, true, std});
    layout.push_back({p + "attn.c_attn.bias", {3 * C}});
    layout.push_back({p + "attn.c_proj.weight", {C, C}, true, proj_std});
    layout.push_back({p + "attn.c_proj.bias", {C}});
    layout.push_back({p + "ln_2.weight", {C}, false, 0, true});
    layout.push_back({p + "ln_2.bias", {C}});
    layout.push_back({p + "mlp.c_fc.weight", {C, F}, true, std});
    layout.push_back({p + "mlp.c_fc.bias", {F}});
    layout.push_back({p + "mlp.c_proj.weight", {F, C}, true, proj_std});
    layout.push_back({p + "mlp.c_proj.bias", {C}});
  }
  layout.push_back({"ln_f.weight", {C}, false, 0, true});
  layout.push_back({"ln_f.bias", {C}});
  if (!c.tie_word_embeddings) layout.push_back({"lm_head.weight", {c.vocab_size, C}, true, std});
  return layout;
}

}  // namespace fuji::engine
