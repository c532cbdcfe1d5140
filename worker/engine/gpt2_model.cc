// GPT-2 forward pass with an optional KV cache, in ATen ops (autograd-capable for training).
#include "worker/engine/gpt2_model.h"

#include <algorithm>
#include <cmath>

#include <ATen/ATen.h>
#include <torch/version.h>

#include "worker/engine/cpu_kernels.h"

namespace fuji::engine {

KvCache::KvCache(const ModelConfig& config, int64_t batch, int64_t max_len, at::ScalarType dtype,
                 at::Device device)
    : capacity_(max_len) {
  const auto options = at::TensorOptions().dtype(dtype).device(device);
  for (int64_t l = 0; l < config.n_layer; ++l) {
    keys_.push_back(at::empty({batch, config.n_head, max_len, config.head_dim()}, options));
    values_.push_back(at::empty({batch, config.n_head, max_len, config.head_dim()}, options));
  }
}

Gpt2Model::Gpt2Model(ModelConfig config, std::vector<at::Tensor> params)
    : config_(std::move(config)), params_(std::move(params)) {}

at::ScalarType Gpt2Model::dtype() const { return P(param_index::kWte).scalar_type(); }
at::Device Gpt2Model::device() const { return P(param_index::kWte).device(); }

int64_t Gpt2Model::ParameterBytes() const {
  int64_t bytes = 0;
  for (const auto& p : params_) bytes += p.numel() * static_cast<int64_t>(p.element_size());
  return bytes;
}

namespace {

// x [N, in] @ w [in, out] + b: HF's Conv1D. One row (decode) streams the weights through the
// GEMV kernel; more rows (prefill, training) go to BLAS.
at::Tensor Linear(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b) {
  if (DecodeKernelApplies(x, w)) return RowTimesMatrix(x, w, b).to(x.scalar_type());
  return at::addmm(b, x, w);
}

}  // namespace

at::Tensor Gpt2Model::Attention(int64_t layer, const at::Tensor& qkv, int64_t batch, int64_t steps,
                                KvCache* cache) const {
  const int64_t C = config_.n_embd, H = config_.n_head, D = config_.head_dim();
  auto heads = [&](int64_t i) {  // [B*T, 3C] slice i -> [B, H, T, D]
    return qkv.narrow(1, i * C, C).view({batch, steps, H, D}).transpose(1, 2);
  };
  at::Tensor q = heads(0), k = heads(1), v = heads(2);
  int64_t past = 0;
  if (cache != nullptr) {
    past = cache->length_;
    at::Tensor& keys = cache->keys_[static_cast<size_t>(layer)];
    at::Tensor& values = cache->values_[static_cast<size_t>(layer)];
    keys.narrow(2, past, steps).copy_(k);
    values.narrow(2, past, steps).copy_(v);
    k = keys.narrow(2, 0, past + steps);
    v = values.narrow(2, 0, past + steps);
  }
  double scale = 1.0 / std::sqrt(static_cast<double>(D));
  if (config_.scale_attn_by_inverse_layer_idx) scale /= static_cast<double>(layer + 1);
  if (cache != nullptr && steps == 1 && batch == 1 && IsDecodeRow(qkv)) {
    const size_t l = static_cast<size_t>(layer);
    return DecodeAttention(q, cache->keys_[l], cache->values_[l], past + 1, scale).to(q.scalar_type());
  }

  at::Tensor y;
#if TORCH_VERSION_MAJOR >= 2
  // Fused (flash / memory-efficient) attention where the build has it.
  if (q.is_cuda()) {
    const bool causal = steps > 1;
    c10::optional<at::Tensor> mask;
    if (causal && past > 0) {
      mask = at::ones({steps, past + steps}, q.options().dtype(at::kBool)).tril(past);
    }
    y = at::scaled_dot_product_attention(q, k, v, mask, 0.0, causal && past == 0, scale);
  }
#endif
  if (!y.defined()) {
    // Scores in fp32: bf16/fp16 softmax over long contexts loses too much.
    at::Tensor scores = at::matmul(q, k.transpose(-1, -2)).to(at::kFloat).mul_(scale);
    if (steps > 1) {
      // Query i (absolute position past + i) sees keys 0..past + i.
      at::Tensor mask = at::ones({steps, past + steps}, scores.options().dtype(at::kBool))
                            .triu(past + 1);
      scores.masked_fill_(mask, -std::numeric_limits<float>::infinity());
    }
    y = at::matmul(at::softmax(scores, -1).to(q.scalar_type()), v);
  }
  return y.transpose(1, 2).reshape({batch * steps, C});
}

at::Tensor Gpt2Model::Embed(const at::Tensor& ids, int64_t past) const {
  using namespace param_index;  // NOLINT
  const int64_t B = ids.size(0), T = ids.size(1), C = config_.n_embd;
  at::Tensor positions = at::arange(past, past + T, ids.options());
  at::Tensor x = at::embedding(P(kWte), ids.reshape({B * T})).view({B, T, C}) +
                 at::embedding(P(kWpe), positions).unsqueeze(0);
  return x.reshape({B * T, C});
}

at::Tensor Gpt2Model::Block(int64_t l, const at::Tensor& input, int64_t B, int64_t T,
                            KvCache* cache) const {
  return BlockWith(l, input, [&](const at::Tensor& qkv) { return Attention(l, qkv, B, T, cache); }, false);
}

at::Tensor Gpt2Model::BlockWith(int64_t l, const at::Tensor& input,
                                const std::function<at::Tensor(const at::Tensor& qkv)>& attend,
                                bool row_kernels) const {
  using namespace param_index;  // NOLINT
  if (row_kernels && input.size(0) > 1 && input.size(0) <= kRowKernelMaxRows &&
      DecodeKernelApplies(input.narrow(0, 0, 1), P(Layer(l, kFcW)))) {
    return RowBlock(l, input, attend);
  }
  const int64_t C = config_.n_embd;
  const double eps = config_.layer_norm_epsilon;
  const char* gelu = config_.activation == Activation::kGeluErf ? "none" : "tanh";
  auto w = [&](LayerParam p) -> const at::Tensor& { return P(Layer(l, p)); };
  at::Tensor x = input;
  at::Tensor h = at::layer_norm(x, {C}, w(kLn1W), w(kLn1B), eps);
  at::Tensor attn = attend(Linear(h, w(kAttnW), w(kAttnB)));
  x = x + Linear(attn, w(kAttnProjW), w(kAttnProjB));
  h = at::layer_norm(x, {C}, w(kLn2W), w(kLn2B), eps);
  h = Linear(h, w(kFcW), w(kFcB));
  h = IsDecodeRow(h) ? GeluRow(h, config_.activation == Activation::kGeluTanh).to(h.scalar_type())
                     : at::gelu(h, gelu);
  return x + Linear(h, w(kMlpProjW), w(kMlpProjB));
}

// BlockWith for a few rows, each with batch 1's kernels.
at::Tensor Gpt2Model::RowBlock(int64_t l, const at::Tensor& input,
                               const std::function<at::Tensor(const at::Tensor& qkv)>& attend) const {
  using namespace param_index;  // NOLINT
  const int64_t C = config_.n_embd;
  const double eps = config_.layer_norm_epsilon;
  auto w = [&](LayerParam p) -> const at::Tensor& { return P(Layer(l, p)); };
  auto linear = [&](const at::Tensor& x, LayerParam weight, LayerParam bias) {
    return RowsTimesMatrix(x, w(weight), w(bias)).to(x.scalar_type());
  };
  at::Tensor x = input;
  at::Tensor h = at::layer_norm(x, {C}, w(kLn1W), w(kLn1B), eps);
  at::Tensor attn = attend(linear(h, kAttnW, kAttnB));
  x = x + linear(attn, kAttnProjW, kAttnProjB);
  h = at::layer_norm(x, {C}, w(kLn2W), w(kLn2B), eps);
  h = linear(h, kFcW, kFcB);
  h = GeluRow(h, config_.activation == Activation::kGeluTanh).to(h.scalar_type());
  return x + linear(h, kMlpProjW, kMlpProjB);
}

at::Tensor Gpt2Model::FinalNorm(const at::Tensor& x) const {
  return at::layer_norm(x, {config_.n_embd}, P(param_index::LnfW(config_)),
                        P(param_index::LnfB(config_)), config_.layer_norm_epsilon);
}

at::Tensor Gpt2Model::Forward(const at::Tensor& ids, KvCache* cache) const {
  TORCH_CHECK(ids.dim() == 2, "ids must be [batch, steps]");
  const int64_t B = ids.size(0), T = ids.size(1), C = config_.n_embd;
  const int64_t past = cache != nullptr ? cache->length_ : 0;
  TORCH_CHECK(past + T <= config_.n_positions, "sequence of ", past + T,
              " tokens exceeds n_positions ", config_.n_positions);
  TORCH_CHECK(cache == nullptr || past + T <= cache->capacity_, "KV cache full");
  const int L = static_cast<int>(config_.n_layer);
  Before(0);
  at::Tensor x = Embed(ids, past);
  After(0);
  for (int l = 0; l < L; ++l) {
    Before(1 + l);
    x = Block(l, x, B, T, cache);
    After(1 + l);
  }
  if (cache != nullptr) cache->length_ += T;
  Before(L + 1);
  x = FinalNorm(x).view({B, T, C});
  After(L + 1);
  return x;
}

int64_t Gpt2Model::RowKernelMaxRows() const {
  return dtype() == at::kBFloat16 ? kBf16RowKernelMaxRows : kRowKernelMaxRows;
}

at::Tensor Gpt2Model::ForwardRows(const at::Tensor& ids, const at::Tensor& positions, const RowAttention& attend,
                                  int64_t row_kernel_max_rows) const {
  using namespace param_index;  // NOLINT
  TORCH_CHECK(ids.dim() == 1 && positions.dim() == 1 && ids.size(0) == positions.size(0),
              "ids and positions must be [N]");
  TORCH_CHECK(ids.size(0) == 0 || positions.max().item<int64_t>() < config_.n_positions,
              "a position exceeds n_positions ", config_.n_positions);
  const int L = static_cast<int>(config_.n_layer);
  const bool row_kernels = ids.size(0) <= std::min(row_kernel_max_rows, RowKernelMaxRows());
  Before(0);
  at::Tensor x = at::embedding(P(kWte), ids) + at::embedding(P(kWpe), positions);
  After(0);
  for (int l = 0; l < L; ++l) {
    Before(1 + l);
    x = BlockWith(l, x, [&](const at::Tensor& qkv) { return attend(l, qkv); }, row_kernels);
    After(1 + l);
  }
  Before(L + 1);
  x = FinalNorm(x);
  After(L + 1);
  return x;
}

at::Tensor Gpt2Model::LogitsRows(const at::Tensor& hidden) const {
  const int unit = config_.tie_word_embeddings ? 0 : static_cast<int>(config_.n_layer) + 1;
  const at::Tensor& head =
      config_.tie_word_embeddings ? P(param_index::kWte) : P(param_index::LmHead(config_));
  Before(unit);
  at::Tensor logits;
  const at::Tensor rows = hidden.reshape({-1, config_.n_embd});
  if (rows.size(0) >= 1 && rows.size(0) <= RowKernelMaxRows() && DecodeKernelApplies(rows.narrow(0, 0, 1), head)) {
    logits = RowsDotRows(rows, head);
  } else if (head.scalar_type() == at::kFloat) {
    logits = at::matmul(rows.to(at::kFloat), head.t());
  } else {
    const at::Tensor x = rows.to(at::kFloat);
    const int64_t V = head.size(0);
    logits = at::empty({rows.size(0), V}, x.options());
    constexpr int64_t kSlice = 1024;  // rows of the head widened at a time: stays in cache
    for (int64_t v0 = 0; v0 < V; v0 += kSlice) {
      const int64_t n = std::min(kSlice, V - v0);
      logits.narrow(1, v0, n).copy_(at::matmul(x, head.narrow(0, v0, n).to(at::kFloat).t()));
    }
  }
  After(unit);
  return logits;
}

at::Tensor Gpt2Model::Logits(const at::Tensor& hidden) const {
  const int unit = config_.tie_word_embeddings ? 0 : static_cast<int>(config_.n_layer) + 1;
  Before(unit);
  at::Tensor logits = LogitsOf(hidden);
  After(unit);
  return logits;
}

at::Tensor Gpt2Model::LogitsOf(const at::Tensor& hidden) const {
  const at::Tensor& head =
      config_.tie_word_embeddings ? P(param_index::kWte) : P(param_index::LmHead(config_));
  if (hidden.numel() == hidden.size(-1)) {
    at::Tensor row = hidden.reshape({1, hidden.size(-1)});
    if (DecodeKernelApplies(row, head)) {
      std::vector<int64_t> shape = hidden.sizes().vec();
      shape.back() = head.size(0);
      return RowDotRows(row, head).view(shape);  // float32 logits
    }
  }
  return at::matmul(hidden, head.t());
}

}  // namespace fuji::engine
