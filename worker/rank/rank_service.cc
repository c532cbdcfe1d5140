// Request handling in fuji-rank: infer, init and convert, with the resident-model cache.
// This file is the one place where engine exceptions (c10::Error, std::bad_alloc) become events.
#include "worker/rank/rank_service.h"

#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <new>
#include <optional>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include "lib/common/proc_stats.h"
#include "lib/common/wall_clock.h"
#include "worker/dist/communicator.h"
#include "worker/engine/checkpoint.h"
#include "worker/engine/device.h"
#include "worker/engine/generate.h"
#include "worker/engine/random_init.h"
#include "lib/spec/finetune_spec.h"
#include "lib/spec/job_spec.h"
#include "worker/train/trainer.h"
#include "worker/rank/calibrate.h"
#include "worker/train/zero_model.h"
#include "lib/text/bpe_tokenizer.h"

namespace fuji::rank {
namespace {

using Clock = std::chrono::steady_clock;

double MsSince(Clock::time_point start) {
  return std::chrono::duration<double, std::milli>(Clock::now() - start).count();
}

double Mib(int64_t bytes) { return static_cast<double>(bytes) / (1024.0 * 1024.0); }

// Why a request failed, in the words the agent and the daemon use for a job's reason.
const char* ReasonFor(const Status& s) {
  switch (s.code()) {
    case StatusCode::kInvalidArgument:
    case StatusCode::kNotFound:
    case StatusCode::kDataLoss:
    case StatusCode::kFailedPrecondition: return "bad_input";
    case StatusCode::kResourceExhausted: return "host_oom";
    default: return "internal";
  }
}

std::string RealPath(const std::string& path) {
  char* resolved = ::realpath(path.c_str(), nullptr);
  if (resolved == nullptr) return path;
  std::string out(resolved);
  std::free(resolved);
  return out;
}

}  // namespace

struct RankService::Impl {
  JsonLineWriter* events;
  std::string id;  // of the request being handled

  // The model kept resident between requests.
  struct Resident {
    std::string key;
    std::unique_ptr<engine::Gpt2Model> model;
    std::unique_ptr<train::ZeroModel> streamed;  // offload params: the weights in host memory
    const engine::Gpt2Model* net = nullptr;      // what generates: model, or streamed's network
    std::optional<text::BpeTokenizer> tokenizer;
    engine::LoadReport report;
  };
  std::optional<Resident> resident;

  void Emit(nlohmann::json event) {
    event["id"] = id;
    (void)events->Write(event);  // a closed event pipe means the supervisor is gone: nothing to do
  }
  // A phase that began at `start` (steady clock) and lasted `ms`; its wall-clock span is derived
  // from now, so phases reported late still land where they happened.
  void Timing(const char* phase, Clock::time_point start, double ms) {
    const int64_t start_ms =
        WallClockMs() - std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start).count();
    Emit({{"event", "timing"}, {"phase", phase}, {"ms", ms}, {"start_ms", start_ms},
          {"end_ms", start_ms + static_cast<int64_t>(ms + 0.5)}});
  }
  void Fail(const Status& s, const char* reason) {
    Emit({{"event", "error"}, {"code", StatusCodeName(s.code())}, {"reason", reason}, {"message", s.message()}});
  }

  Status Infer(const nlohmann::json& request);
  Status Init(const nlohmann::json& request);
  Status Convert(const nlohmann::json& request);
  Status Finetune(const nlohmann::json& request);
  Result<Resident*> Load(const InferSpec& spec, const c10::Device& device, at::ScalarType dtype,
                         bool* cached);
};

Result<RankService::Impl::Resident*> RankService::Impl::Load(const InferSpec& spec,
                                                             const c10::Device& device,
                                                             at::ScalarType dtype, bool* cached) {
  const std::string key = RealPath(spec.model) + "|" + spec.precision + "|" + device.str() + "|" + spec.offload;
  *cached = resident && resident->key == key;
  if (*cached) return &*resident;
  resident.reset();  // free the old model before loading the next
  Resident r;
  r.key = key;
  if (spec.offload == "params") {
    // The weights load into host memory; the ZeRO-3 engine streams them unit by unit.
    FUJI_ASSIGN_OR_RETURN(std::unique_ptr<engine::Gpt2Model> host,
                          engine::LoadModel(spec.model, {dtype, at::kCPU}, &r.report));
    train::ZeroOptions options;
    options.stage = 3;
    options.offload = train::Offload::kParams;
    options.dtype = dtype;
    options.device = device;
    options.inference_only = true;
    const engine::ModelConfig config = host->config();
    std::vector<at::Tensor> weights = std::move(host->parameters());
    host.reset();
    FUJI_ASSIGN_OR_RETURN(r.streamed, train::ZeroModel::Create(config, std::move(weights), options, nullptr));
    r.net = &r.streamed->InferenceModel();
  } else {
    FUJI_ASSIGN_OR_RETURN(r.model, engine::LoadModel(spec.model, {dtype, device}, &r.report));
    r.net = r.model.get();
  }
  auto tokenizer = text::BpeTokenizer::LoadFromDir(spec.model);
  if (tokenizer.ok()) r.tokenizer = std::move(tokenizer).value();
  resident = std::move(r);
  return &*resident;
}

Status RankService::Impl::Infer(const nlohmann::json& request) {
  const auto total_start = Clock::now();
  FUJI_ASSIGN_OR_RETURN(InferSpec spec, InferSpec::FromJson(request));
  FUJI_ASSIGN_OR_RETURN(c10::Device device, engine::ParseDevice(spec.device));
  FUJI_ASSIGN_OR_RETURN(at::ScalarType dtype, engine::ParsePrecision(spec.precision));
  FUJI_RETURN_IF_ERROR(engine::CheckPrecisionOnDevice(dtype, device));
  engine::ResetDevicePeak(device);

  auto start = Clock::now();
  bool cached = false;
  FUJI_ASSIGN_OR_RETURN(Resident* r, Load(spec, device, dtype, &cached));
  engine::SynchronizeDevice(device);
  const double load_ms = MsSince(start);
  Timing("load", start, load_ms);

  start = Clock::now();
  std::vector<int32_t> prompt_ids = spec.prompt_ids;
  if (spec.prompt) {
    if (!r->tokenizer) return InvalidArgument(spec.model + ": no vocab.json and merges.txt to tokenize the prompt");
    FUJI_ASSIGN_OR_RETURN(prompt_ids, r->tokenizer->Encode(*spec.prompt));
    if (prompt_ids.empty()) return InvalidArgument("the prompt has no tokens");
  }
  const double tokenize_ms = MsSince(start);
  Timing("tokenize", start, tokenize_ms);

  engine::GenerateOptions options;
  options.max_new_tokens = spec.max_new_tokens;
  options.ignore_eos = spec.ignore_eos;
  options.sampling = {spec.greedy, spec.temperature, spec.top_k, spec.top_p, spec.seed};
  FUJI_RETURN_IF_ERROR(engine::ValidateGeneration(r->net->config(), prompt_ids, options));

  const auto generate_start = Clock::now();
  auto last_progress = generate_start;
  engine::GenerateTimings timings;
  FUJI_ASSIGN_OR_RETURN(
      std::vector<int32_t> output_ids,
      engine::Generate(*r->net, prompt_ids, options, &timings, [&](int32_t, int64_t index) {
        if (MsSince(last_progress) < 250) return;
        last_progress = Clock::now();
        Emit({{"event", "progress"}, {"phase", "generate"}, {"done", index + 1}, {"total", options.max_new_tokens}});
      }));
  Timing("prefill", generate_start, timings.prefill_ms);
  Timing("decode", generate_start + std::chrono::microseconds(static_cast<int64_t>(timings.prefill_ms * 1000)),
         timings.decode_ms);

  std::string text;
  if (r->tokenizer) {
    FUJI_ASSIGN_OR_RETURN(text, r->tokenizer->Decode(output_ids));
  }
  const engine::ModelConfig& config = r->net->config();
  nlohmann::json memory = {{"peak_rss_mib", Mib(PeakRssBytes())}};
  if (device.is_cuda()) {
    const engine::DeviceMemory dm = engine::ReadDeviceMemory(device);
    memory["device_peak_mib"] = Mib(dm.peak_allocated_bytes);
    memory["device_reserved_peak_mib"] = Mib(dm.peak_reserved_bytes);
  }
  nlohmann::json result = {
      {"prompt_ids", prompt_ids},
      {"output_ids", output_ids},
      {"text", text},
      {"timings",
       {{"load_ms", load_ms},
        {"tokenize_ms", tokenize_ms},
        {"prefill_ms", timings.prefill_ms},
        {"decode_ms", timings.decode_ms},
        {"decode_tokens", timings.decode_steps},
        {"decode_tokens_per_s", timings.DecodeTokensPerSecond()},
        {"total_ms", MsSince(total_start)}}},
      {"memory", memory},
      {"model",
       {{"path", spec.model},
        {"format", r->report.format},
        {"parameters", config.NumParameters()},
        {"parameter_bytes", config.NumParameters() * static_cast<int64_t>(at::elementSize(dtype))},
        {"n_layer", config.n_layer},
        {"n_embd", config.n_embd},
        {"n_head", config.n_head},
        {"resident", cached}}},
      {"device", device.str()},
      {"precision", spec.precision},
      {"offload", spec.offload},
      {"threads", at::get_num_threads()},
  };
  Emit({{"event", "result"}, {"result", std::move(result)}});
  return Status::Ok();
}

Status RankService::Impl::Init(const nlohmann::json& request) {
  FUJI_ASSIGN_OR_RETURN(InitSpec spec, InitSpec::FromJson(request));
  FUJI_ASSIGN_OR_RETURN(engine::ModelConfig config, engine::ArchitectureConfig(spec.arch));
  auto override_field = [](int64_t value, int64_t* field) {
    if (value > 0) *field = value;
  };
  override_field(spec.layers, &config.n_layer);
  override_field(spec.width, &config.n_embd);
  override_field(spec.heads, &config.n_head);
  override_field(spec.vocab, &config.vocab_size);
  override_field(spec.positions, &config.n_positions);
  if (spec.ffn > 0) {
    config.n_inner = spec.ffn;
  } else if (spec.width > 0) {
    config.n_inner = 4 * spec.width;
  }
  FUJI_RETURN_IF_ERROR(config.Validate());
  FUJI_ASSIGN_OR_RETURN(at::ScalarType dtype, engine::ParsePrecision(spec.dtype));
  FUJI_ASSIGN_OR_RETURN(format::DType file_dtype, engine::ToFormatDType(dtype));
  const auto start = Clock::now();
  FUJI_RETURN_IF_ERROR(engine::WriteRandomCheckpoint(config, spec.out, spec.seed, file_dtype, spec.vocab_dir));
  const double ms = MsSince(start);
  Timing("init", start, ms);
  Emit({{"event", "result"},
        {"result",
         {{"out", spec.out},
          {"config", config.ToJson()},
          {"parameters", config.NumParameters()},
          {"dtype", spec.dtype},
          {"ms", ms}}}});
  return Status::Ok();
}

Status RankService::Impl::Convert(const nlohmann::json& request) {
  const std::string in = request.value("in", std::string());
  const std::string out = request.value("out", std::string());
  if (in.empty() || out.empty()) return InvalidArgument("convert needs 'in' and 'out' directories");
  std::optional<format::DType> dtype;
  if (request.contains("dtype") && request["dtype"].is_string()) {
    FUJI_ASSIGN_OR_RETURN(at::ScalarType t, engine::ParsePrecision(request["dtype"].get<std::string>()));
    FUJI_ASSIGN_OR_RETURN(dtype, engine::ToFormatDType(t));
  }
  const auto start = Clock::now();
  FUJI_RETURN_IF_ERROR(engine::ConvertCheckpoint(in, out, dtype));
  const double ms = MsSince(start);
  Timing("convert", start, ms);
  Emit({{"event", "result"}, {"result", {{"in", in}, {"out", out}, {"ms", ms}}}});
  return Status::Ok();
}

Status RankService::Impl::Finetune(const nlohmann::json& request) {
  FUJI_ASSIGN_OR_RETURN(FinetuneSpec spec, FinetuneSpec::FromJson(request));
  if (spec.token_cache.empty()) return InvalidArgument("finetune needs 'token_cache' (the launcher prepares it)");
  if (spec.ranks > 1 && spec.rendezvous.empty()) return InvalidArgument("finetune of several ranks needs 'rendezvous'");
  resident.reset();  // training needs the memory
  return train::RunFinetune(spec, [this](nlohmann::json event) { Emit(std::move(event)); });
}

RankService::RankService(JsonLineWriter* events) : impl_(std::make_unique<Impl>()) {
  impl_->events = events;
}

RankService::~RankService() = default;

bool RankService::Handle(const nlohmann::json& request) {
  impl_->id = request.contains("id") && request["id"].is_string() ? request["id"].get<std::string>() : "";
  const std::string op = request.contains("op") && request["op"].is_string() ? request["op"].get<std::string>() : "";
  impl_->Emit({{"event", "started"}, {"op", op}, {"pid", ::getpid()}});
  Status status;
  try {
    if (op == "infer") {
      status = impl_->Infer(request);
    } else if (op == "init") {
      status = impl_->Init(request);
    } else if (op == "convert") {
      status = impl_->Convert(request);
    } else if (op == "finetune") {
      status = impl_->Finetune(request);
    } else if (op == "calibrate") {
      impl_->Emit({{"event", "result"}, {"result", MeasureRates()}});
    } else {
      status = InvalidArgument("unknown op '" + op + "' (infer, init, convert, finetune, calibrate)");
    }
  } catch (const dist::CollectiveError& e) {
    // A peer died or a collective timed out: the launcher names the dead peer when there is one.
    impl_->Fail(Unavailable(e.what()), "collective_timeout");
    return false;
  } catch (const std::bad_alloc&) {
    impl_->resident.reset();
    status = ResourceExhausted("out of host memory");
  } catch (const std::exception& e) {
    const std::string what = e.what();
    // libtorch's CUDA allocator: "CUDA out of memory. Tried to allocate ..."
    if (what.find("CUDA out of memory") != std::string::npos) {
      impl_->resident.reset();
      impl_->Fail(ResourceExhausted(what.substr(0, what.find('\n'))), "cuda_oom");
      return false;
    }
    status = Internal(what.substr(0, what.find("\nException raised from")));
  }
  if (!status.ok()) impl_->Fail(status, ReasonFor(status));
  return status.ok();
}

}  // namespace fuji::rank
