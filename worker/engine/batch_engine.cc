// Continuous batching over a paged KV cache: scheduling, the flattened forward pass, sampling.
#include "worker/engine/batch_engine.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include "worker/engine/cpu_kernels.h"

namespace fuji::engine {
namespace {

double MsBetween(std::chrono::steady_clock::time_point a, std::chrono::steady_clock::time_point b) {
  return std::chrono::duration<double, std::milli>(b - a).count();
}

}  // namespace

struct BatchEngine::Sequence {
  explicit Sequence(BatchRequest r)
      : request(std::move(r)), sampler(request.options.sampling), tokens(request.prompt) {}
  BatchRequest request;
  TokenSampler sampler;
  std::vector<int32_t> tokens;     // prompt, then every generated token
  std::vector<int32_t> generated;  // emitted so far
  int64_t computed = 0;            // positions whose keys and values are in `blocks`
  std::vector<int32_t> blocks;     // the block table
  Clock::time_point arrival = Clock::now();
  Clock::time_point first_token, last_token;
  bool admitted = false;
  BatchTimings timings;
};

BatchEngine::BatchEngine(const Gpt2Model& model, const BatchEngineOptions& options, KvBlockPool pool)
    : model_(model), options_(options), pool_(std::move(pool)) {}

BatchEngine::~BatchEngine() = default;

Result<std::unique_ptr<BatchEngine>> BatchEngine::Create(const Gpt2Model& model, const BatchEngineOptions& options) {
  if (options.max_batch < 1 || options.max_batch > 4096) {
    return InvalidArgument("max_batch " + std::to_string(options.max_batch) + " is outside 1..4096");
  }
  if (options.prefill_chunk < 1 || options.prefill_chunk > (1 << 20)) {
    return InvalidArgument("prefill_chunk " + std::to_string(options.prefill_chunk) + " is outside 1..1048576");
  }
  FUJI_ASSIGN_OR_RETURN(KvBlockPool pool, KvBlockPool::Create(model.config(), options.num_blocks, options.block_size,
                                                             model.dtype(), model.device()));
  return std::unique_ptr<BatchEngine>(new BatchEngine(model, options, std::move(pool)));
}

Status BatchEngine::Add(BatchRequest request) {
  if (request.id.empty()) return InvalidArgument("a request needs an id");
  if (sequences_.count(request.id) != 0) return InvalidArgument("request id '" + request.id + "' is already in use");
  FUJI_RETURN_IF_ERROR(ValidateGeneration(model_.config(), request.prompt, request.options));
  const int64_t tokens = static_cast<int64_t>(request.prompt.size()) + request.options.max_new_tokens;
  if (pool_.BlocksFor(tokens) > pool_.num_blocks()) {
    return ResourceExhausted("a prompt of " + std::to_string(request.prompt.size()) + " tokens plus " +
                             std::to_string(request.options.max_new_tokens) + " new tokens needs " +
                             std::to_string(pool_.BlocksFor(tokens)) + " KV blocks of " +
                             std::to_string(pool_.block_size()) + " tokens; the cache has " +
                             std::to_string(pool_.num_blocks()));
  }
  auto s = std::make_unique<Sequence>(std::move(request));
  waiting_.push_back(s.get());
  const std::string id = s->request.id;
  sequences_.emplace(id, std::move(s));
  return Status::Ok();
}

bool BatchEngine::Cancel(const std::string& id) {
  auto it = sequences_.find(id);
  if (it == sequences_.end()) return false;
  Sequence* s = it->second.get();
  Finish(s, "cancelled", &pending_);
  return true;
}

bool BatchEngine::Idle() const { return running_.empty() && waiting_.empty() && pending_.empty(); }

void BatchEngine::Preempt(Sequence* s) {
  pool_.Release(&s->blocks);
  s->computed = 0;
  running_.erase(std::find(running_.begin(), running_.end(), s));
  waiting_.push_front(s);
  ++preemptions_;
}

void BatchEngine::Finish(Sequence* s, const char* reason, std::vector<BatchEvent>* events) {
  pool_.Release(&s->blocks);
  if (auto it = std::find(running_.begin(), running_.end(), s); it != running_.end()) running_.erase(it);
  if (auto it = std::find(waiting_.begin(), waiting_.end(), s); it != waiting_.end()) waiting_.erase(it);
  const auto now = Clock::now();
  BatchEvent e;
  e.id = s->request.id;
  e.kind = BatchEvent::Kind::kFinished;
  e.finish_reason = reason;
  e.timings = s->timings;
  if (!s->admitted) e.timings.queue_ms = MsBetween(s->arrival, now);
  events->push_back(std::move(e));
  sequences_.erase(s->request.id);  // s is gone
}

Result<std::vector<BatchEvent>> BatchEngine::Step() {
  std::vector<BatchEvent> events = std::move(pending_);
  pending_.clear();
  if (running_.empty() && waiting_.empty()) return events;
  c10::InferenceMode inference;

  // Plan this step's rows: every running sequence, oldest first, takes its next rows (one when
  // decoding, a chunk of its prompt within the step's prefill budget), growing its block table;
  // when the pool is short, the newest running sequence gives its blocks back.
  struct Planned {
    Sequence* s;
    int64_t past, rows, first_row;
  };
  std::vector<Planned> plan;
  int64_t budget = options_.prefill_chunk;
  auto take = [&](Sequence* s) -> int64_t {
    const int64_t need = static_cast<int64_t>(s->tokens.size()) - s->computed;
    if (need == 1) return 1;
    const int64_t n = std::min(need, budget);
    return n;
  };
  bool preempted = false;
  for (size_t i = 0; i < running_.size(); ++i) {
    Sequence* s = running_[i];
    const int64_t n = take(s);
    if (n == 0) continue;
    bool preempted_self = false;
    while (!pool_.Grow(&s->blocks, s->computed + n)) {
      Sequence* victim = running_.back();
      Preempt(victim);
      preempted = true;
      if (victim == s) {
        preempted_self = true;
        break;
      }
    }
    if (preempted_self) break;
    if (n > 1 || static_cast<int64_t>(s->tokens.size()) - s->computed > 1) budget -= n;
    plan.push_back({s, s->computed, n, 0});
  }
  // Admit waiting requests, front first, while the batch, the budget and the free blocks allow;
  // not in a step that had to preempt (the blocks just freed are what the running ones grow into:
  // readmitting at once would recompute the preempted sequence every step).
  while (!preempted && !waiting_.empty() && static_cast<int64_t>(running_.size()) < options_.max_batch) {
    Sequence* s = waiting_.front();
    const int64_t n = take(s);
    if (n == 0 || !pool_.Grow(&s->blocks, s->computed + n)) break;
    if (static_cast<int64_t>(s->tokens.size()) - s->computed > 1) budget -= n;
    waiting_.pop_front();
    running_.push_back(s);
    if (!s->admitted) {
      s->admitted = true;
      s->timings.queue_ms = MsBetween(s->arrival, Clock::now());
    }
    plan.push_back({s, s->computed, n, 0});
  }
  max_batch_seen_ = std::max(max_batch_seen_, static_cast<int64_t>(running_.size()));
  last_step_batch_ = static_cast<int64_t>(plan.size());
  if (plan.empty()) return events;

  // Rows: each planned sequence's tokens at their positions, in plan order.
  const ModelConfig& config = model_.config();
  const int64_t C = config.n_embd, H = config.n_head, D = config.head_dim(), bs = pool_.block_size();
  std::vector<int64_t> ids, positions, row_block, row_offset;
  std::vector<int64_t> sample_rows;  // rows whose logits choose a token
  std::vector<size_t> sampled;       // their plan entries
  for (size_t p = 0; p < plan.size(); ++p) {
    Planned& e = plan[p];
    e.first_row = static_cast<int64_t>(ids.size());
    for (int64_t i = 0; i < e.rows; ++i) {
      const int64_t pos = e.past + i;
      ids.push_back(e.s->tokens[static_cast<size_t>(pos)]);
      positions.push_back(pos);
      row_block.push_back(e.s->blocks[static_cast<size_t>(pos / bs)]);
      row_offset.push_back(pos % bs);
    }
    if (e.past + e.rows == static_cast<int64_t>(e.s->tokens.size())) {
      sample_rows.push_back(e.first_row + e.rows - 1);
      sampled.push_back(p);
    }
  }
  const at::Device device = model_.device();
  const auto long_options = at::TensorOptions().dtype(at::kLong);
  auto to_device = [&](const std::vector<int64_t>& v) { return at::tensor(v, long_options).to(device); };
  const at::Tensor ids_t = to_device(ids), positions_t = to_device(positions);
  const at::Tensor block_t = to_device(row_block), offset_t = to_device(row_offset);

  // Decode rows (one new token) attend through the paged kernel on the CPU, all at once.
  const bool paged_kernel = device.is_cpu() && (model_.dtype() == at::kFloat || model_.dtype() == at::kBFloat16);
  std::vector<int64_t> decode_rows, decode_lengths, decode_table_offsets;
  std::vector<int32_t> decode_tables;
  if (paged_kernel) {
    for (const Planned& e : plan) {
      if (e.rows != 1) continue;
      decode_rows.push_back(e.first_row);
      decode_lengths.push_back(e.past + 1);
      decode_table_offsets.push_back(static_cast<int64_t>(decode_tables.size()));
      decode_tables.insert(decode_tables.end(), e.s->blocks.begin(), e.s->blocks.end());
    }
  }
  const at::Tensor decode_rows_t = at::tensor(decode_rows, long_options);

  auto attend = [&](int64_t layer, const at::Tensor& qkv) -> at::Tensor {
    using at::indexing::Slice;
    const int64_t N = qkv.size(0);
    at::Tensor& keys = pool_.keys(layer);
    at::Tensor& values = pool_.values(layer);
    keys.index_put_({block_t, Slice(), Slice(), offset_t}, qkv.narrow(1, C, C).view({N, H, D}));
    values.index_put_({block_t, Slice(), offset_t}, qkv.narrow(1, 2 * C, C).view({N, H, D}));
    double scale = 1.0 / std::sqrt(static_cast<double>(D));
    if (config.scale_attn_by_inverse_layer_idx) scale /= static_cast<double>(layer + 1);
    const at::Tensor q = qkv.narrow(1, 0, C);
    at::Tensor y = at::empty({N, C}, qkv.options());
    if (!decode_rows.empty()) {
      // Rows that run batch 1's kernels (a small step) keep its arithmetic here too.
      const bool exact = N <= model_.RowKernelMaxRows();
      at::Tensor out = PagedDecodeAttention(q.index_select(0, decode_rows_t), keys, values, decode_tables,
                                            decode_table_offsets, decode_lengths, scale, exact);
      y.index_copy_(0, decode_rows_t, out.to(qkv.scalar_type()));
    }
    for (const Planned& e : plan) {
      if (paged_kernel && e.rows == 1) continue;
      const int64_t length = e.past + e.rows, nb = pool_.BlocksFor(length);
      std::vector<int64_t> table(e.s->blocks.begin(), e.s->blocks.begin() + nb);
      const at::Tensor table_t = to_device(table);
      // -> [1, H, length, D] (keys are [block, H, D, position] in the pool)
      const at::Tensor k =
          keys.index_select(0, table_t).permute({1, 0, 3, 2}).reshape({1, H, nb * bs, D}).narrow(2, 0, length);
      const at::Tensor v =
          values.index_select(0, table_t).transpose(0, 1).reshape({1, H, nb * bs, D}).narrow(2, 0, length);
      const at::Tensor qs = q.narrow(0, e.first_row, e.rows).view({1, e.rows, H, D}).transpose(1, 2);
      // Gpt2Model::Attention's arithmetic: fp32 scores, causal mask over the chunk.
      at::Tensor scores = at::matmul(qs, k.transpose(-1, -2)).to(at::kFloat).mul_(scale);
      if (e.rows > 1) {
        at::Tensor mask = at::ones({e.rows, length}, scores.options().dtype(at::kBool)).triu(e.past + 1);
        scores.masked_fill_(mask, -std::numeric_limits<float>::infinity());
      }
      at::Tensor out = at::matmul(at::softmax(scores, -1).to(qkv.scalar_type()), v);
      y.narrow(0, e.first_row, e.rows).copy_(out.transpose(1, 2).reshape({e.rows, C}));
    }
    return y;
  };

  at::Tensor logits;
  try {
    // A step of prompt rows only holds no row to batch 1's arithmetic.
    bool decoding = false;
    for (const Planned& e : plan) decoding = decoding || e.rows == 1;
    at::Tensor hidden = model_.ForwardRows(ids_t, positions_t, attend,
                                           decoding ? Gpt2Model::kRowKernelMaxRows
                                                    : Gpt2Model::kPromptRowKernelMaxRows);
    if (!sample_rows.empty()) {
      logits = model_.LogitsRows(hidden.index_select(0, to_device(sample_rows))).to(at::kCPU).contiguous();
    }
  } catch (const std::exception& e) {
    const std::string what = e.what();
    const std::string message = what.substr(0, what.find('\n'));
    if (what.find("out of memory") != std::string::npos) return ResourceExhausted(message);
    return Internal("batch step failed: " + message);
  }

  for (Planned& e : plan) e.s->computed += e.rows;
  const auto now = Clock::now();
  std::vector<std::pair<Sequence*, const char*>> done;
  for (size_t i = 0; i < sampled.size(); ++i) {
    Sequence* s = plan[sampled[i]].s;
    const int32_t token = s->sampler.Sample(logits.data_ptr<float>() + static_cast<int64_t>(i) * config.vocab_size,
                                            config.vocab_size);
    const int64_t index = static_cast<int64_t>(s->generated.size());
    s->tokens.push_back(token);
    s->generated.push_back(token);
    if (index == 0) {
      s->first_token = now;
      s->timings.prefill_ms = MsBetween(s->arrival, now);
    } else {
      s->timings.decode_ms = MsBetween(s->first_token, now);
      s->timings.decode_steps = index;
    }
    BatchEvent te;
    te.id = s->request.id;
    te.token = token;
    te.index = index;
    events.push_back(std::move(te));
    if (token == config.eos_token_id && !s->request.options.ignore_eos) {
      done.emplace_back(s, "eos");
    } else if (s->request.stop && s->request.stop(s->generated)) {
      done.emplace_back(s, "stop");
    } else if (static_cast<int64_t>(s->generated.size()) >= s->request.options.max_new_tokens) {
      done.emplace_back(s, "length");
    }
  }
  for (auto& [s, reason] : done) Finish(s, reason, &events);
  return events;
}

}  // namespace fuji::engine
