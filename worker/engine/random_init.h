// Random checkpoints for tests, benchmarks and the GPU check (no weights exist here): GPT-2's
// initialization, deterministic for a seed whatever the thread count, written tensor by tensor.
#pragma once

#include <cstdint>
#include <string>

#include <ATen/core/Tensor.h>

#include "lib/common/status.h"
#include "worker/engine/gpt2_model.h"
#include "lib/format/tensor_view.h"

namespace fuji::engine {

// Parameter `index` of the layout, float32 on the CPU: N(0, std) matrices, ones for LayerNorm
// weights, zeros for biases. Element i of tensor `index` depends only on (seed, index, i).
at::Tensor RandomParameter(const ParamInfo& info, uint64_t seed, size_t index);

// Writes config.json, model.safetensors and the tokenizer files from vocab_dir.
Status WriteRandomCheckpoint(const ModelConfig& config, const std::string& dir, uint64_t seed,
                             format::DType dtype, const std::string& vocab_dir);

}  // namespace fuji::engine
