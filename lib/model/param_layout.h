// The canonical parameter layout of the GPT-2 network: names, shapes and init hints in one order,
// shared by loading, random init, export and ZeRO's flat buffers. Torch-free (fuji_model_config),
// so that the checkpoint format and the CLI can use it.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "lib/model/model_config.h"

namespace fuji::engine {

// One parameter of the canonical layout. Names are HF GPT2Model names ("h.0.attn.c_attn.weight");
// checkpoints may prefix them with "transformer.". Linear weights are stored [in, out] as HF's
// Conv1D does, so checkpoints load without a transpose.
struct ParamInfo {
  std::string name;
  std::vector<int64_t> shape;
  bool is_matrix = false;     // linear weight or embedding: decayed by AdamW, N(0, std) at init
  double init_std = 0.0;      // 0 for biases; LayerNorm weights init to 1
  bool is_layer_norm_weight = false;
};

std::vector<ParamInfo> ParameterLayout(const ModelConfig& config);

}  // namespace fuji::engine
