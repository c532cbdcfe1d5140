// One rank's fine-tuning loop. See trainer.h.
#include "worker/train/trainer.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstdio>
#include <memory>
#include <optional>
#include <thread>

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <vector>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include "worker/ckpt/retention.h"
#include "worker/ckpt/zero_checkpoint.h"
#include "lib/common/proc_stats.h"
#include "lib/common/wall_clock.h"
#include "worker/data/batch_sampler.h"
#include "worker/data/packed_dataset.h"
#include "worker/data/token_cache.h"
#include "worker/dist/communicator.h"
#include "worker/engine/checkpoint.h"
#include "worker/engine/device.h"
#include "worker/engine/random_init.h"
#include "worker/train/zero_model.h"

namespace fuji::train {
namespace {

using Clock = std::chrono::steady_clock;

// Set by RequestPreempt, from a signal handler: a lock-free atomic is safe there.
std::atomic<bool> g_preempt_requested{false};
static_assert(std::atomic<bool>::is_always_lock_free);

double MsSince(Clock::time_point start) {
  return std::chrono::duration<double, std::milli>(Clock::now() - start).count();
}

// Warmup, then cosine decay to min_lr at the last step. step counts from 1.
double LearningRate(const FinetuneSpec& spec, int64_t step) {
  const int64_t warmup = spec.EffectiveWarmupSteps();
  const double min_lr = spec.EffectiveMinLr();
  if (warmup > 0 && step <= warmup) return spec.lr * static_cast<double>(step) / static_cast<double>(warmup);
  if (spec.steps <= warmup) return spec.lr;
  const double progress = static_cast<double>(step - warmup) / static_cast<double>(spec.steps - warmup);
  return min_lr + 0.5 * (spec.lr - min_lr) * (1 + std::cos(M_PI * std::min(1.0, progress)));
}

// "rank 2", "ranks 2-3", "ranks 0, 2-3": ascending ranks as ranges.
std::string DescribeRanks(const std::vector<int>& ranks) {
  std::string out;
  for (size_t i = 0; i < ranks.size();) {
    size_t j = i;
    while (j + 1 < ranks.size() && ranks[j + 1] == ranks[j] + 1) ++j;
    out += (out.empty() ? "" : ", ") + std::to_string(ranks[i]) + (j > i ? "-" + std::to_string(ranks[j]) : "");
    i = j + 1;
  }
  return (ranks.size() == 1 ? "rank " : "ranks ") + out;
}

// 16 random hex digits from /dev/urandom.
Result<std::string> RandomHex() {
  unsigned char bytes[8];
  const int fd = ::open("/dev/urandom", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return Internal("cannot open /dev/urandom: " + std::string(std::strerror(errno)));
  const ssize_t got = ::read(fd, bytes, sizeof(bytes));
  ::close(fd);
  if (got != static_cast<ssize_t>(sizeof(bytes))) return Internal("cannot read /dev/urandom");
  static const char kHex[] = "0123456789abcdef";
  std::string out;
  for (unsigned char b : bytes) {
    out += kHex[b >> 4];
    out += kHex[b & 15];
  }
  return out;
}

// What this rank sees of the probe: "" when the file holds `token`, else why not.
std::string ReadProbe(const std::string& path, const std::string& token) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) return errno == ENOENT ? "missing" : std::string(std::strerror(errno));
  char buf[64] = {};
  const ssize_t got = ::read(fd, buf, sizeof(buf) - 1);
  ::close(fd);
  if (got < 0) return std::strerror(errno);
  return std::string(buf, static_cast<size_t>(got)) == token ? "" : "another token";
}

// A gang's save directory must be one directory for every rank, wherever it runs: rank 0 writes a
// probe file of a random name and token there, every rank reads it back and says what it saw in
// the rendezvous store, and every rank fails the same way (bad_input, one line naming the node that
// does not see rank 0's file) when any rank saw something else. Rank 0 removes the probe.
Status CheckSaveDirShared(dist::Communicator& comm, const std::string& save_to, const std::string& node) {
  const int rank = comm.rank(), world = comm.world_size();
  FUJI_RETURN_IF_ERROR(comm.StoreSet("probe/node/" + std::to_string(rank), node));
  std::string path, token;
  if (rank == 0) {
    FUJI_ASSIGN_OR_RETURN(std::string name, RandomHex());
    FUJI_ASSIGN_OR_RETURN(token, RandomHex());
    path = save_to + "/.fuji-probe-" + name;
    std::string error;
    const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0) {
      error = "--save-to " + save_to + ": rank 0 cannot create a probe file there: " + std::strerror(errno);
    } else {
      const bool written = ::write(fd, token.data(), token.size()) == static_cast<ssize_t>(token.size());
      ::close(fd);
      if (!written) {
        ::unlink(path.c_str());
        error = "--save-to " + save_to + ": rank 0 cannot write a probe file there";
      }
    }
    // The others fail with rank 0's words at once rather than wait for a probe that never comes.
    FUJI_RETURN_IF_ERROR(comm.StoreSet("probe/file", error.empty() ? path + "\n" + token : "!" + error));
    if (!error.empty()) return InvalidArgument(error);
  } else {
    FUJI_ASSIGN_OR_RETURN(std::string file, comm.StoreGet("probe/file"));
    if (!file.empty() && file[0] == '!') return InvalidArgument(file.substr(1));
    const size_t nl = file.find('\n');
    if (nl == std::string::npos) return Internal("malformed probe entry in the rendezvous store");
    path = file.substr(0, nl);
    token = file.substr(nl + 1);
  }
  FUJI_RETURN_IF_ERROR(comm.StoreSet("probe/verdict/" + std::to_string(rank), ReadProbe(path, token)));
  std::vector<std::string> nodes(static_cast<size_t>(world)), verdicts(static_cast<size_t>(world));
  Status status = Status::Ok();
  for (int r = 0; r < world && status.ok(); ++r) {
    auto n = comm.StoreGet("probe/node/" + std::to_string(r));
    auto v = n.ok() ? comm.StoreGet("probe/verdict/" + std::to_string(r)) : n;
    if (!v.ok()) status = v.status();
    if (status.ok()) {
      nodes[static_cast<size_t>(r)] = *n;
      verdicts[static_cast<size_t>(r)] = *v;
    }
  }
  if (rank == 0) ::unlink(path.c_str());
  FUJI_RETURN_IF_ERROR(status);
  for (int r = 0; r < world; ++r) {
    const std::string& verdict = verdicts[static_cast<size_t>(r)];
    if (verdict.empty()) continue;
    std::vector<int> failing;  // the ranks of r's node that do not see it
    for (int q = 0; q < world; ++q) {
      const size_t i = static_cast<size_t>(q);
      if (nodes[i] == nodes[static_cast<size_t>(r)] && !verdicts[i].empty()) failing.push_back(q);
    }
    const std::string why = verdict == "missing"         ? ""
                            : verdict == "another token" ? " (it reads another token)"
                                                         : " (" + verdict + ")";
    return InvalidArgument("--save-to " + save_to + " is not shared by every node: " + nodes[static_cast<size_t>(r)] +
                           " (" + DescribeRanks(failing) + ") does not see the probe " + nodes[0] +
                           " (rank 0) wrote there" + why);
  }
  return Status::Ok();
}

struct Batch {
  at::Tensor ids, targets;
};

Batch MakeBatch(const data::PackedDataset& dataset, const std::vector<int64_t>& blocks) {
  const int64_t B = static_cast<int64_t>(blocks.size()), T = dataset.seq_len();
  Batch batch{at::empty({B, T}, at::kLong), at::empty({B, T}, at::kLong)};
  for (int64_t b = 0; b < B; ++b) {
    dataset.CopyBlock(blocks[static_cast<size_t>(b)], batch.ids.data_ptr<int64_t>() + b * T,
                      batch.targets.data_ptr<int64_t>() + b * T);
  }
  return batch;
}

class Run {
 public:
  Run(const FinetuneSpec& spec, const EventSink& emit) : spec_(spec), emit_(emit) {}

  Status Go();

 private:
  void Timing(const char* phase, Clock::time_point start, double ms) {
    const int64_t end_ms = WallClockMs();
    emit_({{"event", "timing"}, {"phase", phase}, {"ms", ms},
           {"start_ms", end_ms - static_cast<int64_t>(ms + 0.5)}, {"end_ms", end_ms}});
    (void)start;
  }
  double AllReduceSum(double value);
  // The step's loss summed over the ranks, and whether any rank was asked to stop (RequestPreempt):
  // one all-reduce of both, so that every rank stops after the same step.
  std::pair<double, bool> AllReduceLossAndStop(double loss_sum);
  Status Setup();
  Status Resume();
  double Evaluate();
  Status Save(int64_t step);

  const FinetuneSpec& spec_;
  const EventSink& emit_;
  int rank_ = 0, world_ = 1;
  c10::Device device_ = at::kCPU;
  at::ScalarType dtype_ = at::kFloat;
  std::unique_ptr<dist::Communicator> comm_;
  std::shared_ptr<const data::TokenCache> tokens_;
  std::unique_ptr<data::PackedDataset> dataset_;
  std::unique_ptr<data::BatchSampler> sampler_;
  std::unique_ptr<ZeroModel> model_;
  std::vector<ckpt::UnitLayout> layout_;
  nlohmann::json model_config_json_;
  int64_t start_step_ = 0;
  double loss_scale_ = 1;
  int64_t good_steps_ = 0;
  double load_ms_ = 0, data_ms_ = 0, eval_ms_ = 0, save_ms_ = 0;
  int64_t load_peak_rss_ = 0;  // the process's peak resident set once the model was loaded
  std::string last_checkpoint_;
  // The fencing token of the fujid attempt this run is (FUJI_ATTEMPT, set by the agent); none for
  // a run outside fujid.
  std::optional<ckpt::AttemptToken> attempt_;
};

double Run::AllReduceSum(double value) {
  if (!comm_) return value;
  at::Tensor t = at::full({1}, value, at::TensorOptions().dtype(at::kDouble));
  if (device_.is_cuda()) t = t.to(device_);
  comm_->AllReduceSum(t);
  return t.item<double>();
}

std::pair<double, bool> Run::AllReduceLossAndStop(double loss_sum) {
  const bool asked = g_preempt_requested.load(std::memory_order_relaxed);
  if (!comm_) return {loss_sum, asked};
  at::Tensor t = at::tensor({loss_sum, asked ? 1.0 : 0.0}, at::TensorOptions().dtype(at::kDouble));
  if (device_.is_cuda()) t = t.to(device_);
  comm_->AllReduceSum(t);
  t = t.cpu();
  return {t[0].item<double>(), t[1].item<double>() > 0};
}

Status Run::Setup() {
  rank_ = spec_.rank;
  world_ = spec_.ranks;
  // The ranks of a gang share the machine's cores.
  const int cores = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  at::set_num_threads(spec_.threads > 0 ? spec_.threads : std::max(1, cores / world_));
  FUJI_ASSIGN_OR_RETURN(dtype_, engine::ParsePrecision(spec_.precision));
  std::string device_name = spec_.device;
  if (device_name == "cuda") {
    const int count = engine::CudaDeviceCount();
    if (count <= 0) return FailedPrecondition("no CUDA device is visible to rank " + std::to_string(rank_));
    device_name = "cuda:" + std::to_string(rank_ % count);
  }
  FUJI_ASSIGN_OR_RETURN(device_, engine::ParseDevice(device_name));
  FUJI_RETURN_IF_ERROR(engine::CheckPrecisionOnDevice(dtype_, device_));
  engine::ResetDevicePeak(device_);

  // One rank needs no collectives unless a backend is named (the GPU check runs NCCL on one).
  if (world_ > 1 || spec_.backend != "auto") {
    dist::CommOptions options;
    options.rank = rank_;
    options.world_size = world_;
    options.rendezvous = spec_.rendezvous;
    options.backend = spec_.backend != "auto" ? spec_.backend : device_.is_cuda() ? "nccl" : "gloo";
    options.timeout = std::chrono::milliseconds(spec_.collective_timeout_ms);
    options.device_index = device_.is_cuda() ? device_.index() : -1;
    options.bind_addr = spec_.bind_addr;
    FUJI_ASSIGN_OR_RETURN(comm_, dist::Communicator::Create(options));
    if (world_ > 1 && !spec_.save_to.empty()) {
      FUJI_RETURN_IF_ERROR(CheckSaveDirShared(*comm_, spec_.save_to, spec_.node.empty() ? "this node" : spec_.node));
    }
  }

  // Data: the launcher tokenized and checked it; this rank maps the cache.
  auto start = Clock::now();
  FUJI_ASSIGN_OR_RETURN(data::TokenCache cache, data::TokenCache::Load(spec_.token_cache));
  tokens_ = std::make_shared<const data::TokenCache>(std::move(cache));

  // The model: a checkpoint is read unit by unit straight into this rank's share
  // (ZeroModel::Load); a random init is made whole on the CPU, then each rank keeps its share.
  auto load_start = Clock::now();
  ZeroOptions options;
  options.stage = spec_.zero;
  FUJI_ASSIGN_OR_RETURN(options.offload, ParseOffload(spec_.offload));
  options.dtype = dtype_;
  options.device = device_;
  options.activation_checkpointing = spec_.activation_checkpointing;
  options.optimizer_threads = at::get_num_threads();
  std::unique_ptr<engine::Gpt2Model> source;
  if (spec_.random_init.empty()) {
    FUJI_ASSIGN_OR_RETURN(model_, ZeroModel::Load(spec_.model, options, comm_.get()));
  } else {
    FUJI_ASSIGN_OR_RETURN(engine::ModelConfig random_config, engine::ArchitectureConfig(spec_.random_init));
    const std::vector<engine::ParamInfo> layout = engine::ParameterLayout(random_config);
    std::vector<at::Tensor> params;
    for (size_t i = 0; i < layout.size(); ++i) {
      params.push_back(engine::RandomParameter(layout[i], spec_.seed, i).to(dtype_));
    }
    source = std::make_unique<engine::Gpt2Model>(random_config, std::move(params));
  }
  const engine::ModelConfig config = source ? source->config() : model_->config();
  model_config_json_ = config.ToJson();
  layout_ = ckpt::UnitsOf(config);

  data::PackingOptions packing;
  packing.seq_len = spec_.seq_len;
  packing.n_positions = config.n_positions;
  packing.holdout_fraction = spec_.holdout;
  FUJI_ASSIGN_OR_RETURN(data::PackedDataset dataset, data::PackedDataset::Create(tokens_, packing));
  dataset_ = std::make_unique<data::PackedDataset>(std::move(dataset));
  if (static_cast<int64_t>(tokens_->vocab_size()) > config.vocab_size) {
    return InvalidArgument("the data's tokenizer has " + std::to_string(tokens_->vocab_size()) +
                           " ids, the model " + std::to_string(config.vocab_size));
  }
  data::SamplerOptions sampling;
  sampling.num_train_blocks = dataset_->num_train_blocks();
  sampling.rank = rank_;
  sampling.world_size = world_;
  sampling.micro_batch = spec_.micro_batch;
  sampling.grad_accum = spec_.grad_accum;
  sampling.seed = spec_.seed;
  FUJI_ASSIGN_OR_RETURN(data::BatchSampler sampler, data::BatchSampler::Create(sampling));
  sampler_ = std::make_unique<data::BatchSampler>(std::move(sampler));
  data_ms_ = MsSince(start) - MsSince(load_start);

  if (source) {
    std::vector<at::Tensor> weights = std::move(source->parameters());
    source.reset();
    FUJI_ASSIGN_OR_RETURN(model_, ZeroModel::Create(config, std::move(weights), options, comm_.get()));
  }
  loss_scale_ = dtype_ == at::kHalf ? spec_.initial_loss_scale : 1.0;
  FUJI_RETURN_IF_ERROR(Resume());
  if (const char* token = std::getenv("FUJI_ATTEMPT"); token != nullptr && *token != '\0') {
    FUJI_ASSIGN_OR_RETURN(ckpt::AttemptToken parsed, ckpt::AttemptToken::Parse(token));
    attempt_ = parsed;
  }
  // This attempt becomes the save directory's writer before it trains (ranks check the claim
  // before each save: a stale attempt stops instead of writing beside a newer one).
  if (attempt_ && !spec_.save_to.empty() && rank_ == 0) {
    FUJI_RETURN_IF_ERROR(ckpt::ClaimSaveDir(spec_.save_to, *attempt_));
  }
  if (comm_) comm_->Barrier();
  engine::SynchronizeDevice(device_);
  load_ms_ = MsSince(load_start);
  load_peak_rss_ = PeakRssBytes();
  Timing("data", start, data_ms_);
  Timing("load", load_start, load_ms_);
  return Status::Ok();
}

Status Run::Resume() {
  if (spec_.save_to.empty() || spec_.resume == "never") return Status::Ok();
  if (::access((spec_.save_to + "/latest").c_str(), F_OK) != 0) return Status::Ok();
  FUJI_ASSIGN_OR_RETURN(ckpt::CheckpointReader reader, ckpt::CheckpointReader::Open(spec_.save_to));
  const ckpt::CheckpointMeta& meta = reader.meta();
  if (meta.model_config.ToJson() != model_->config().ToJson()) {
    return InvalidArgument(meta.step_dir + ": a checkpoint of another model shape than " + spec_.model);
  }
  if (meta.step > spec_.steps) {
    return InvalidArgument(meta.step_dir + ": already at step " + std::to_string(meta.step) + " of " +
                           std::to_string(spec_.steps) + " (resume never, or more steps)");
  }
  // At the last step: the training is done (an attempt that finished but whose end never reached
  // fujid, retried); the run loads it, trains nothing and reports that checkpoint.
  if (meta.step == spec_.steps) last_checkpoint_ = meta.step_dir;
  for (int u = 0; u < model_->num_units(); ++u) {
    const auto [begin, end] = model_->LoadRange(u);
    const size_t n = static_cast<size_t>(end - begin);
    std::vector<float> master(n), m(n), v(n);
    FUJI_RETURN_IF_ERROR(reader.Read(static_cast<size_t>(u), begin, end, master.data(), m.data(), v.data()));
    model_->LoadState(u, master.data(), m.data(), v.data());
  }
  model_->FinishLoad();
  start_step_ = meta.step;
  if (dtype_ == at::kHalf && meta.loss_scale > 0) loss_scale_ = meta.loss_scale;
  good_steps_ = meta.good_steps;
  return Status::Ok();
}

// Mean held-out loss over eval_batches * micro_batch blocks (fewer when the split is smaller),
// spread over the ranks; every rank runs the same number of batches because stage 3 gathers.
double Run::Evaluate() {
  const int64_t total = std::min(spec_.eval_batches * spec_.micro_batch, dataset_->num_heldout_blocks());
  std::vector<int64_t> mine;
  for (int64_t j = rank_; j < total; j += world_) mine.push_back(dataset_->HeldoutBlock(j));
  const int64_t per_rank = (total + world_ - 1) / world_;
  const int64_t batches = std::max<int64_t>(1, (per_rank + spec_.micro_batch - 1) / spec_.micro_batch);
  double sum = 0, count = 0;
  for (int64_t b = 0; b < batches; ++b) {
    std::vector<int64_t> blocks;
    for (int64_t i = b * spec_.micro_batch; i < std::min<int64_t>((b + 1) * spec_.micro_batch, mine.size()); ++i) {
      blocks.push_back(mine[static_cast<size_t>(i)]);
    }
    const bool dummy = blocks.empty();
    if (dummy) blocks.push_back(dataset_->num_heldout_blocks() > 0 ? dataset_->HeldoutBlock(0) : 0);
    Batch batch = MakeBatch(*dataset_, blocks);
    const double loss = model_->EvalLoss(batch.ids, batch.targets);
    if (!dummy) {
      sum += loss * static_cast<double>(blocks.size());
      count += static_cast<double>(blocks.size());
    }
  }
  sum = AllReduceSum(sum);
  count = AllReduceSum(count);
  return count > 0 ? sum / count : std::nan("");
}

Status Run::Save(int64_t step) {
  const auto start = Clock::now();
  const std::string dir = spec_.save_to + "/" + ckpt::StepDirName(step);
  const std::vector<UnitState> states = model_->SaveState();
  std::vector<ckpt::RankUnitState> views;
  for (const UnitState& s : states) {
    views.push_back({s.begin, s.end, s.master.data(), s.exp_avg.data(), s.exp_avg_sq.data()});
  }
  if (attempt_) FUJI_RETURN_IF_ERROR(ckpt::CheckSaveDirClaim(spec_.save_to, *attempt_));
  FUJI_RETURN_IF_ERROR(ckpt::WriteRankShard(dir, rank_, world_, step, layout_, views));
  if (comm_) comm_->Barrier();
  if (rank_ == 0) {
    ckpt::CheckpointMeta meta;
    meta.step = step;
    meta.world_size = world_;
    meta.zero = spec_.zero;
    meta.precision = spec_.precision;
    meta.loss_scale = loss_scale_;
    meta.good_steps = good_steps_;
    meta.model_dir = spec_.model;
    meta.config = model_config_json_;
    meta.spec = spec_.ToJson();
    meta.units = layout_;
    if (attempt_) meta.attempt = attempt_->ToString();
    FUJI_RETURN_IF_ERROR(ckpt::WriteMeta(dir, meta));
    if (attempt_) FUJI_RETURN_IF_ERROR(ckpt::CheckSaveDirClaim(spec_.save_to, *attempt_));
    FUJI_RETURN_IF_ERROR(ckpt::PublishLatest(spec_.save_to, ckpt::StepDirName(step), meta.attempt));
    emit_({{"event", "checkpoint"}, {"step", step}, {"path", dir}});
    // Retention (keep_last): with latest naming this complete step, older step directories beyond
    // the newest keep_last go. What stays in place, or a failure, costs disk and not the run: a
    // line in the job's log.
    if (spec_.keep_last > 0) {
      ckpt::PruneReport pruned;
      const Status pruning = ckpt::PruneCheckpoints(spec_.save_to, spec_.keep_last, &pruned);
      for (const std::string& left : pruned.skipped) std::fprintf(stderr, "keep_last: left %s\n", left.c_str());
      if (!pruning.ok()) std::fprintf(stderr, "keep_last: %s\n", pruning.message().c_str());
    }
  }
  if (comm_) comm_->Barrier();
  last_checkpoint_ = dir;
  const double ms = MsSince(start);
  save_ms_ += ms;
  Timing("save", start, ms);
  return Status::Ok();
}

Status Run::Go() {
  FUJI_RETURN_IF_ERROR(Setup());
  const int64_t B = spec_.micro_batch, T = spec_.seq_len, A = spec_.grad_accum;
  const double divisor = static_cast<double>(world_ * A);
  const int64_t last = spec_.stop_after > 0 ? std::min(spec_.steps, spec_.stop_after) : spec_.steps;
  nlohmann::json losses = nlohmann::json::array(), eval_losses = nlohmann::json::array();
  const auto train_start = Clock::now();
  double step_ms_total = 0;
  int64_t steps_run = 0;
  double tokens_per_s = 0;
  int64_t preempted_at = 0;  // the step after which RequestPreempt stopped the run; 0: not stopped
  auto evaluate = [&](int64_t step) {
    const auto eval_start = Clock::now();
    const double eval_loss = Evaluate();
    const double ms = MsSince(eval_start);
    eval_ms_ += ms;
    Timing("eval", eval_start, ms);
    if (rank_ == 0) {
      eval_losses.push_back({{"step", step}, {"loss", eval_loss}});
      emit_({{"event", "loss"}, {"step", step}, {"loss", eval_loss}, {"split", "eval"}});
    }
  };
  // With periodic evaluation, the curve starts from the untrained model.
  if (spec_.eval_every > 0 && start_step_ == 0) evaluate(0);
  for (int64_t step = start_step_ + 1; step <= last; ++step) {
    const auto step_start = Clock::now();
    double loss_sum = 0;
    for (int64_t a = 0; a < A; ++a) {
      Batch batch = MakeBatch(*dataset_, sampler_->Blocks(step - 1, a));
      loss_sum += model_->ForwardBackward(batch.ids, batch.targets, loss_scale_, a + 1 == A);
    }
    optim::AdamWConfig adamw;
    adamw.lr = LearningRate(spec_, step);
    adamw.beta1 = spec_.beta1;
    adamw.beta2 = spec_.beta2;
    adamw.eps = spec_.eps;
    adamw.weight_decay = spec_.weight_decay;
    const StepStats stats = model_->Step(adamw, step, divisor, loss_scale_, spec_.clip);
    if (dtype_ == at::kHalf) {
      if (stats.skipped) {
        loss_scale_ = std::max(1.0, loss_scale_ / 2);
        good_steps_ = 0;
      } else if (++good_steps_ >= spec_.loss_scale_window) {
        loss_scale_ *= 2;
        good_steps_ = 0;
      }
    }
    const auto [loss_total, stop_asked] = AllReduceLossAndStop(loss_sum);
    const double loss = loss_total / divisor;
    const double step_ms = MsSince(step_start);
    step_ms_total += step_ms;
    ++steps_run;
    tokens_per_s = static_cast<double>(world_ * A * B * T) / (step_ms / 1000.0);
    if (rank_ == 0) {
      losses.push_back({{"step", step}, {"loss", loss}, {"ms", step_ms}});
      emit_({{"event", "loss"}, {"step", step}, {"loss", loss}, {"split", "train"}, {"lr", adamw.lr},
             {"tokens_per_s", tokens_per_s}, {"grad_norm", stats.grad_norm}, {"skipped", stats.skipped},
             {"loss_scale", loss_scale_}});
      emit_({{"event", "progress"}, {"phase", "train"}, {"done", step}, {"total", spec_.steps},
             {"loss", loss}, {"tokens_per_s", tokens_per_s}});
    }
    const bool final_step = step == last;
    // Preempted (not at the last step, which ends anyway): this step is saved and the run stops.
    const bool preempt = stop_asked && !final_step;
    if ((spec_.eval_every > 0 && step % spec_.eval_every == 0) || (final_step && step == spec_.steps)) {
      evaluate(step);
    }
    if (!spec_.save_to.empty() &&
        (final_step || preempt || (spec_.save_every > 0 && step % spec_.save_every == 0))) {
      FUJI_RETURN_IF_ERROR(Save(step));
    }
    if (preempt) {
      preempted_at = step;
      emit_({{"event", "preempted"}, {"step", step}, {"checkpoint_step", spec_.save_to.empty() ? 0 : step}});
      break;
    }
  }
  const double train_ms = MsSince(train_start);
  Timing("train", train_start, train_ms);
  if (steps_run > 0) {
    tokens_per_s = static_cast<double>(world_ * A * B * T * steps_run) / (step_ms_total / 1000.0);
  }

  const MemoryAccount m = model_->memory();
  int64_t peak_device = m.peak_device_states;
  if (device_.is_cuda()) peak_device = engine::ReadDeviceMemory(device_).peak_allocated_bytes;
  const PhaseTimes times = model_->times();
  nlohmann::json result = {
      {"rank", rank_},
      {"ranks", world_},
      {"start_step", start_step_},
      {"steps_done", start_step_ + steps_run},
      {"steps", spec_.steps},
      {"losses", losses},
      {"eval_losses", eval_losses},
      {"tokens_per_s", tokens_per_s},
      {"tokens", world_ * A * B * T * steps_run},
      {"timings",
       {{"load_ms", load_ms_},
        {"data_ms", data_ms_},
        {"train_ms", train_ms},
        {"forward_ms", times.forward_ms},
        {"backward_ms", times.backward_ms},
        {"optimizer_ms", times.optimizer_ms},
        {"comm_wait_ms", times.comm_wait_ms},
        {"eval_ms", eval_ms_},
        {"save_ms", save_ms_}}},
      {"memory",
       {{"params_device_bytes", m.params_device},
        {"params_host_bytes", m.params_host},
        {"grads_device_bytes", m.grads_device},
        {"grads_host_bytes", m.grads_host},
        {"optimizer_device_bytes", m.optimizer_device},
        {"optimizer_host_bytes", m.optimizer_host},
        {"peak_device_bytes", peak_device},
        {"peak_device_states_bytes", m.peak_device_states},
        {"peak_rss_bytes", PeakRssBytes()},
        {"load_peak_rss_bytes", load_peak_rss_}}},
      {"comm",
       {{"bytes_sent", comm_ ? comm_->bytes_sent() : 0},
        {"bytes_sent_per_step", comm_ && steps_run > 0 ? static_cast<double>(comm_->bytes_sent()) / static_cast<double>(steps_run) : 0.0}}},
      {"checkpoint", last_checkpoint_},
      {"device", device_.str()},
      {"zero", spec_.zero},
      {"offload", spec_.offload},
      {"precision", spec_.precision},
      {"loss_scale", loss_scale_},
      {"threads", at::get_num_threads()},
      {"preempted", preempted_at > 0},
  };
  emit_({{"event", "result"}, {"result", std::move(result)}});
  return Status::Ok();
}

}  // namespace

void RequestPreempt() { g_preempt_requested.store(true, std::memory_order_relaxed); }

Status RunFinetune(const FinetuneSpec& spec, const EventSink& emit) {
  Run run(spec, emit);
  return run.Go();
}

}  // namespace fuji::train
