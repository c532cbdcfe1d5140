// Request handling in fuji-rank: infer and load on the engine thread (continuous batching over the
// resident model), init, convert, finetune and calibrate on the caller's thread.
// This file is the one place where engine exceptions (c10::Error, std::bad_alloc) become events.
#include "worker/rank/rank_service.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <deque>
#include <map>
#include <mutex>
#include <new>
#include <optional>
#include <set>
#include <thread>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include "lib/common/proc_stats.h"
#include "lib/common/wall_clock.h"
#include "worker/dist/communicator.h"
#include "worker/engine/batch_engine.h"
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

// Requests a rank holds at once (queued or generating); more are refused.
constexpr size_t kMaxInFlight = 1024;

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

// Bytes as valid UTF-8, streamed: appends to *out the characters of bytes[*pos, ...) and advances
// *pos past them; a byte that starts no valid character becomes U+FFFD. A trailing sequence that
// more bytes could still complete is left for the next call unless `final`.
void AppendUtf8(const std::string& bytes, size_t* pos, bool final, std::string* out) {
  static const std::string kReplacement = "\xEF\xBF\xBD";
  while (*pos < bytes.size()) {
    const auto b = [&](size_t i) { return static_cast<uint8_t>(bytes[*pos + i]); };
    const uint8_t lead = b(0);
    size_t n = 0;
    if (lead < 0x80) {
      n = 1;
    } else if (lead >= 0xC2 && lead <= 0xDF) {
      n = 2;
    } else if (lead >= 0xE0 && lead <= 0xEF) {
      n = 3;
    } else if (lead >= 0xF0 && lead <= 0xF4) {
      n = 4;
    }
    if (n == 0) {
      out->append(kReplacement);
      ++*pos;
      continue;
    }
    const size_t have = std::min(n, bytes.size() - *pos);
    // The bytes present must be a prefix of a valid sequence (RFC 3629's second-byte ranges).
    bool prefix_ok = true;
    for (size_t i = 1; i < have && prefix_ok; ++i) {
      uint8_t lo = 0x80, hi = 0xBF;
      if (i == 1) {
        if (lead == 0xE0) lo = 0xA0;
        if (lead == 0xED) hi = 0x9F;
        if (lead == 0xF0) lo = 0x90;
        if (lead == 0xF4) hi = 0x8F;
      }
      prefix_ok = b(i) >= lo && b(i) <= hi;
    }
    if (prefix_ok && have == n) {
      out->append(bytes, *pos, n);
      *pos += n;
    } else if (prefix_ok && !final) {
      return;  // wait for the rest of the character
    } else {
      out->append(kReplacement);
      ++*pos;
    }
  }
}

}  // namespace

struct RankService::Impl {
  JsonLineWriter* events;
  std::string id;  // of the request run on the caller's thread

  // The model kept resident between requests, and the batch engine that serves it.
  struct Resident {
    std::string key;
    std::unique_ptr<engine::Gpt2Model> model;
    std::unique_ptr<train::ZeroModel> streamed;  // offload params: the weights in host memory
    const engine::Gpt2Model* net = nullptr;      // what generates: model, or streamed's network
    std::optional<text::BpeTokenizer> tokenizer;
    engine::LoadReport report;
    int64_t weight_bytes = 0;
    int64_t load_peak_rss = 0;  // the process's peak resident set once the model was loaded
    std::unique_ptr<engine::BatchEngine> batch;  // declared last: destroyed before the model
  };
  std::optional<Resident> resident;

  // An infer or load request on its way to the engine thread.
  struct Item {
    std::string op, id;
    InferSpec spec;
    Clock::time_point arrival;
  };
  // The decoded text of one request's tokens, as valid UTF-8, and where a stop string cut it.
  struct TextStream {
    const text::BpeTokenizer* tokenizer = nullptr;
    std::vector<std::string> stops;
    std::string raw, clean;
    size_t consumed = 0, folded = 0, sent = 0;
    std::optional<size_t> stop_at;

    void Fold(const std::vector<int32_t>& ids) {
      if (tokenizer == nullptr) return;
      for (; folded < ids.size(); ++folded) {
        auto piece = tokenizer->Decode({ids[folded]});
        if (piece.ok()) raw += *piece;
      }
      const size_t before = clean.size();
      AppendUtf8(raw, &consumed, false, &clean);
      if (stop_at || stops.empty()) return;
      size_t longest = 0;
      for (const auto& stop : stops) longest = std::max(longest, stop.size());
      const size_t from = before >= longest ? before - longest + 1 : 0;
      for (const auto& stop : stops) {
        const size_t at = clean.find(stop, from);
        if (at != std::string::npos && (!stop_at || at < *stop_at)) stop_at = at;
      }
    }
    // The end of the text that is sure: before a suffix that could begin a stop string.
    size_t Settled() const {
      if (stop_at) return *stop_at;
      size_t hold = 0;
      for (const auto& stop : stops) {
        for (size_t k = std::min(stop.size() - 1, clean.size()); k > hold; --k) {
          if (clean.compare(clean.size() - k, k, stop, 0, k) == 0) {
            hold = k;
            break;
          }
        }
      }
      return clean.size() - hold;
    }
    const std::string& Final() {
      if (stop_at) {
        clean.resize(*stop_at);
      } else {
        AppendUtf8(raw, &consumed, true, &clean);
      }
      return clean;
    }
  };
  // An infer request in the batch engine.
  struct Active {
    Item item;
    c10::Device device = at::kCPU;
    std::vector<int32_t> prompt_ids, output_ids;
    double wait_ms = 0, load_ms = 0, tokenize_ms = 0;
    bool cached = false;
    TextStream text;
    std::vector<int32_t> unsent;  // ids not yet in a token event
    int64_t unsent_index = 0;
    Clock::time_point last_sent;
    Clock::time_point last_progress;  // "progress" events: at most every 250 ms
    int64_t max_batch_seen = 0;
  };

  // Shared between the caller's thread and the engine thread, under mu.
  std::mutex mu;
  std::condition_variable cv;
  std::deque<Item> incoming;
  std::vector<std::string> cancels;
  std::set<std::string> in_flight;  // infer and load ids taken and not yet ended
  bool engine_busy = false;         // the engine thread holds work
  bool sync_running = false;        // an op runs on the caller's thread: the engine thread waits
  bool stopping = false;
  std::thread thread;

  // The engine thread's own.
  std::deque<Item> pending;
  std::map<std::string, std::unique_ptr<Active>> active;

  void EmitFor(const std::string& request_id, nlohmann::json event) {
    event["id"] = request_id;
    (void)events->Write(event);  // a closed event pipe means the supervisor is gone: nothing to do
  }
  void Emit(nlohmann::json event) { EmitFor(id, std::move(event)); }
  // A phase that began at `start` (steady clock) and lasted `ms`; its wall-clock span is derived
  // from now, so phases reported late still land where they happened.
  void TimingFor(const std::string& request_id, const char* phase, Clock::time_point start, double ms) {
    const int64_t now_ms = WallClockMs();
    const int64_t start_ms =
        now_ms - std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start).count();
    // A phase never ends after now (rounding to whole milliseconds could say so).
    EmitFor(request_id, {{"event", "timing"}, {"phase", phase}, {"ms", ms}, {"start_ms", start_ms},
                         {"end_ms", std::min(now_ms, start_ms + static_cast<int64_t>(ms + 0.5))}});
  }
  void Timing(const char* phase, Clock::time_point start, double ms) { TimingFor(id, phase, start, ms); }
  void FailFor(const std::string& request_id, const Status& s, const char* reason) {
    EmitFor(request_id,
            {{"event", "error"}, {"code", StatusCodeName(s.code())}, {"reason", reason}, {"message", s.message()}});
  }
  void Fail(const Status& s, const char* reason) { FailFor(id, s, reason); }

  Status Init(const nlohmann::json& request);
  Status Convert(const nlohmann::json& request);
  Status Finetune(const nlohmann::json& request);
  Result<Resident*> Load(const InferSpec& spec, const c10::Device& device, at::ScalarType dtype, bool* cached);

  // The engine thread.
  void EngineLoop();
  bool HoldsWork() const { return !pending.empty() || !active.empty() || (resident && resident->batch && !resident->batch->Idle()); }
  void AdmitPending();
  void Start(Item item);
  Status StartInfer(Item item, Resident* r, const c10::Device& device, double wait_ms, double load_ms, bool cached);
  void Step();
  void Send(Active* a, bool final);
  void Finish(Active* a, const engine::BatchEvent& e);
  void End(const std::string& request_id);
  void Cancel(const std::string& request_id);
  void FailAll(const Status& s, const char* reason);
  nlohmann::json ModelJson(const Resident& r, const InferSpec& spec, at::ScalarType dtype, bool cached) const;
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
    // Each weight is freed once its unit is in the shards, and goes back to the system at once:
    // the load holds one copy of the model, not two.
    engine::ReturnFreedMemory one_copy;
    // The weights load into host memory; the ZeRO-3 engine streams them unit by unit.
    FUJI_ASSIGN_OR_RETURN(std::unique_ptr<engine::Gpt2Model> host,
                          engine::LoadModel(spec.model,
                                            {dtype, at::kCPU, /*host_allocation_per_param=*/true,
                                             /*release_file_pages=*/true},
                                            &r.report));
    train::ZeroOptions options;
    options.stage = 3;
    options.offload = train::Offload::kParams;
    options.dtype = dtype;
    options.device = device;
    options.inference_only = true;
    const engine::ModelConfig config = host->config();
    r.weight_bytes = host->ParameterBytes();
    std::vector<at::Tensor> weights = std::move(host->parameters());
    host.reset();
    FUJI_ASSIGN_OR_RETURN(r.streamed, train::ZeroModel::Create(config, std::move(weights), options, nullptr));
    r.net = &r.streamed->InferenceModel();
  } else {
    FUJI_ASSIGN_OR_RETURN(r.model, engine::LoadModel(spec.model, {dtype, device}, &r.report));
    r.net = r.model.get();
    r.weight_bytes = r.model->ParameterBytes();
  }
  auto tokenizer = text::BpeTokenizer::LoadFromDir(spec.model);
  if (tokenizer.ok()) r.tokenizer = std::move(tokenizer).value();
  // The KV cache: FUJI_KV_CACHE_MIB (default 1024 on the CPU, 4096 on a GPU), no more than
  // max_batch sequences of the model's full length need, and at least one of them.
  const engine::ModelConfig& config = r.net->config();
  int64_t budget_mib = device.is_cuda() ? 4096 : 1024;
  if (const char* env = std::getenv("FUJI_KV_CACHE_MIB"); env != nullptr && *env != '\0') {
    char* end = nullptr;
    const long long v = std::strtoll(env, &end, 10);
    if (*end != '\0' || v < 1 || v > (int64_t{1} << 24)) {
      return InvalidArgument("FUJI_KV_CACHE_MIB '" + std::string(env) + "' is not a number of MiB in 1..16777216");
    }
    budget_mib = v;
  }
  engine::BatchEngineOptions options;
  const int64_t per_sequence = (config.n_positions + options.block_size - 1) / options.block_size;
  options.num_blocks = engine::BlocksForBytes(config, dtype, budget_mib << 20, options.block_size);
  options.num_blocks = std::max(per_sequence, std::min(options.num_blocks, options.max_batch * per_sequence));
  FUJI_ASSIGN_OR_RETURN(r.batch, engine::BatchEngine::Create(*r.net, options));
  r.load_peak_rss = PeakRssBytes();
  resident = std::move(r);
  return &*resident;
}

nlohmann::json RankService::Impl::ModelJson(const Resident& r, const InferSpec& spec, at::ScalarType dtype,
                                            bool cached) const {
  const engine::ModelConfig& config = r.net->config();
  const int64_t kv_bytes = r.batch ? r.batch->pool().bytes() : 0;
  return {{"path", spec.model},
          {"format", r.report.format},
          {"parameters", config.NumParameters()},
          {"parameter_bytes", config.NumParameters() * static_cast<int64_t>(at::elementSize(dtype))},
          {"n_layer", config.n_layer},
          {"n_embd", config.n_embd},
          {"n_head", config.n_head},
          {"resident", cached},
          {"mib", Mib(r.weight_bytes + kv_bytes)},
          {"kv_cache_mib", Mib(kv_bytes)},
          {"load_peak_rss_mib", Mib(r.load_peak_rss)}};
}

void RankService::Impl::EngineLoop() {
  for (;;) {
    std::vector<std::string> cancelled;
    {
      std::unique_lock<std::mutex> lock(mu);
      cv.wait(lock, [&] { return !sync_running && (!incoming.empty() || !cancels.empty() || stopping || HoldsWork()); });
      if (stopping && incoming.empty() && cancels.empty() && !HoldsWork()) return;
      for (auto& item : incoming) pending.push_back(std::move(item));
      incoming.clear();
      cancelled.swap(cancels);
      engine_busy = HoldsWork();
    }
    for (const auto& c : cancelled) Cancel(c);
    AdmitPending();
    if (resident && resident->batch && !resident->batch->Idle()) Step();
    std::lock_guard<std::mutex> lock(mu);
    engine_busy = HoldsWork() || !incoming.empty();
    if (!engine_busy) cv.notify_all();
  }
}

void RankService::Impl::End(const std::string& request_id) {
  active.erase(request_id);
  std::lock_guard<std::mutex> lock(mu);
  in_flight.erase(request_id);
}

void RankService::Impl::Cancel(const std::string& request_id) {
  for (auto it = pending.begin(); it != pending.end(); ++it) {
    if (it->id != request_id) continue;
    pending.erase(it);
    FailFor(request_id, Cancelled("cancelled"), "cancelled");
    End(request_id);
    return;
  }
  // The engine reports it finished ("cancelled") at its next step.
  if (active.count(request_id) != 0 && resident && resident->batch) resident->batch->Cancel(request_id);
}

void RankService::Impl::AdmitPending() {
  while (!pending.empty()) {
    const Item& front = pending.front();
    auto device = engine::ParseDevice(front.spec.device);
    const std::string key = RealPath(front.spec.model) + "|" + front.spec.precision + "|" +
                            (device.ok() ? device->str() : front.spec.device) + "|" + front.spec.offload;
    // Another model waits until the batch drains.
    if (resident && resident->key != key && !active.empty()) return;
    Item item = std::move(pending.front());
    pending.pop_front();
    Start(std::move(item));
  }
}

void RankService::Impl::Start(Item item) {
  const std::string request_id = item.id;
  Status status;
  const char* reason = nullptr;
  try {
    status = [&]() -> Status {
      FUJI_ASSIGN_OR_RETURN(c10::Device device, engine::ParseDevice(item.spec.device));
      FUJI_ASSIGN_OR_RETURN(at::ScalarType dtype, engine::ParsePrecision(item.spec.precision));
      const double wait_ms = MsSince(item.arrival);
      const auto start = Clock::now();
      bool cached = false;
      FUJI_ASSIGN_OR_RETURN(Resident* r, Load(item.spec, device, dtype, &cached));
      engine::SynchronizeDevice(device);
      const double load_ms = MsSince(start);
      TimingFor(request_id, "load", start, load_ms);
      if (item.op == "load") {
        EmitFor(request_id, {{"event", "result"},
                             {"result",
                              {{"loaded", true},
                               {"load_ms", load_ms},
                               {"resident", cached},
                               {"mib", Mib(r->weight_bytes + r->batch->pool().bytes())},
                               {"model", ModelJson(*r, item.spec, dtype, cached)},
                               {"device", device.str()},
                               {"precision", item.spec.precision},
                               {"offload", item.spec.offload}}}});
        End(request_id);
        return Status::Ok();
      }
      return StartInfer(std::move(item), r, device, wait_ms, load_ms, cached);
    }();
  } catch (const std::bad_alloc&) {
    resident.reset();
    status = ResourceExhausted("out of host memory");
  } catch (const std::exception& e) {
    const std::string what = e.what();
    if (what.find("CUDA out of memory") != std::string::npos) {
      resident.reset();
      status = ResourceExhausted(what.substr(0, what.find('\n')));
      reason = "cuda_oom";
    } else {
      status = Internal(what.substr(0, what.find("\nException raised from")));
    }
  }
  if (!status.ok()) {
    FailFor(request_id, status, reason != nullptr ? reason : ReasonFor(status));
    End(request_id);
    if (!resident) FailAll(status, reason != nullptr ? reason : ReasonFor(status));
  }
}

Status RankService::Impl::StartInfer(Item item, Resident* r, const c10::Device& device, double wait_ms,
                                     double load_ms, bool cached) {
  auto a = std::make_unique<Active>();
  a->device = device;
  a->wait_ms = wait_ms;
  a->load_ms = load_ms;
  a->cached = cached;
  const auto start = Clock::now();
  a->prompt_ids = item.spec.prompt_ids;
  if (item.spec.prompt) {
    if (!r->tokenizer) return InvalidArgument(item.spec.model + ": no vocab.json and merges.txt to tokenize the prompt");
    FUJI_ASSIGN_OR_RETURN(a->prompt_ids, r->tokenizer->Encode(*item.spec.prompt));
    if (a->prompt_ids.empty()) return InvalidArgument("the prompt has no tokens");
  }
  if (!item.spec.stop.empty() && !r->tokenizer) {
    return InvalidArgument(item.spec.model + ": 'stop' needs the model's tokenizer (vocab.json and merges.txt)");
  }
  a->tokenize_ms = MsSince(start);
  TimingFor(item.id, "tokenize", start, a->tokenize_ms);
  a->text.tokenizer = r->tokenizer ? &*r->tokenizer : nullptr;
  a->text.stops = item.spec.stop;

  engine::BatchRequest request;
  request.id = item.id;
  request.prompt = a->prompt_ids;
  request.options.max_new_tokens = item.spec.max_new_tokens;
  request.options.ignore_eos = item.spec.ignore_eos;
  request.options.sampling = {item.spec.greedy, item.spec.temperature, item.spec.top_k, item.spec.top_p,
                              item.spec.seed};
  Active* raw = a.get();
  if (!item.spec.stop.empty()) {
    request.stop = [raw](const std::vector<int32_t>& generated) {
      raw->text.Fold(generated);
      return raw->text.stop_at.has_value();
    };
  }
  a->item = std::move(item);
  a->last_sent = a->last_progress = Clock::now();
  FUJI_RETURN_IF_ERROR(r->batch->Add(std::move(request)));
  active[raw->item.id] = std::move(a);
  return Status::Ok();
}

void RankService::Impl::Send(Active* a, bool final) {
  const size_t end = final ? a->text.clean.size() : a->text.Settled();
  if (a->unsent.empty() && end <= a->text.sent) return;
  std::string text = end > a->text.sent ? a->text.clean.substr(a->text.sent, end - a->text.sent) : std::string();
  a->text.sent = std::max(a->text.sent, end);
  EmitFor(a->item.id, {{"event", "token"}, {"index", a->unsent_index}, {"ids", a->unsent}, {"text", std::move(text)}});
  a->unsent_index += static_cast<int64_t>(a->unsent.size());
  a->unsent.clear();
  a->last_sent = Clock::now();
}

void RankService::Impl::FailAll(const Status& s, const char* reason) {
  std::vector<std::string> ids;
  for (const auto& [request_id, a] : active) ids.push_back(request_id);
  for (const auto& request_id : ids) {
    FailFor(request_id, s, reason);
    End(request_id);
  }
  if (resident) resident->batch.reset();
  resident.reset();
}

void RankService::Impl::Step() {
  Result<std::vector<engine::BatchEvent>> events = Internal("no step");
  try {
    events = resident->batch->Step();
  } catch (const std::exception& e) {
    events = Internal(e.what());
  }
  if (!events.ok()) {
    const bool oom = events.status().code() == StatusCode::kResourceExhausted;
    const bool cuda = resident->net->device().is_cuda();
    FailAll(events.status(), oom ? (cuda ? "cuda_oom" : "host_oom") : "internal");
    return;
  }
  const int64_t batch = resident->batch->last_step_batch();
  for (auto& [request_id, a] : active) a->max_batch_seen = std::max(a->max_batch_seen, batch);
  for (const engine::BatchEvent& e : *events) {
    auto it = active.find(e.id);
    if (it == active.end()) continue;
    Active* a = it->second.get();
    if (e.kind == engine::BatchEvent::Kind::kToken) {
      a->output_ids.push_back(e.token);
      a->unsent.push_back(e.token);
      a->text.Fold(a->output_ids);
    } else {
      Finish(a, e);
    }
  }
  for (auto& [request_id, a] : active) {
    if (a->unsent.size() >= 16 || (!a->unsent.empty() && MsSince(a->last_sent) >= 20)) Send(a.get(), false);
    if (!a->output_ids.empty() && MsSince(a->last_progress) >= 250) {
      a->last_progress = Clock::now();
      EmitFor(request_id, {{"event", "progress"}, {"phase", "generate"},
                           {"done", static_cast<int64_t>(a->output_ids.size())}, {"total", a->item.spec.max_new_tokens}});
    }
  }
}

void RankService::Impl::Finish(Active* a, const engine::BatchEvent& e) {
  const std::string request_id = a->item.id;
  if (e.finish_reason == "cancelled") {
    FailFor(request_id, Cancelled("cancelled"), "cancelled");
    End(request_id);
    return;
  }
  const std::string& text = a->text.Final();
  Send(a, true);
  const auto now = Clock::now();
  const engine::BatchTimings& t = e.timings;
  const double queue_ms = a->wait_ms + t.queue_ms;
  const double prefill_ms = std::max(0.0, t.prefill_ms - t.queue_ms);
  auto at = [&](double ms_before_now) {
    return now - std::chrono::microseconds(static_cast<int64_t>(ms_before_now * 1000));
  };
  TimingFor(request_id, "queue", at(t.decode_ms + t.prefill_ms), t.queue_ms);
  TimingFor(request_id, "prefill", at(t.decode_ms + prefill_ms), prefill_ms);
  TimingFor(request_id, "decode", at(t.decode_ms), t.decode_ms);
  const InferSpec& spec = a->item.spec;
  auto dtype = engine::ParsePrecision(spec.precision);
  nlohmann::json memory = {{"peak_rss_mib", Mib(PeakRssBytes())}};
  if (a->device.is_cuda()) {
    const engine::DeviceMemory dm = engine::ReadDeviceMemory(a->device);
    memory["device_peak_mib"] = Mib(dm.peak_allocated_bytes);
    memory["device_reserved_peak_mib"] = Mib(dm.peak_reserved_bytes);
  }
  const double decode_tokens_per_s = t.decode_ms > 0 ? t.decode_steps * 1000.0 / t.decode_ms : 0;
  nlohmann::json result = {
      {"prompt_ids", a->prompt_ids},
      {"output_ids", a->output_ids},
      {"text", text},
      {"finish_reason", e.finish_reason},
      {"timings",
       {{"load_ms", a->load_ms},
        {"tokenize_ms", a->tokenize_ms},
        {"queue_ms", queue_ms},
        {"prefill_ms", prefill_ms},
        {"decode_ms", t.decode_ms},
        {"decode_tokens", t.decode_steps},
        {"decode_tokens_per_s", decode_tokens_per_s},
        {"total_ms", MsSince(a->item.arrival)}}},
      {"batch", {{"max_batch_seen", a->max_batch_seen}}},
      {"memory", memory},
      {"model", ModelJson(*resident, spec, dtype.ok() ? *dtype : at::kFloat, a->cached)},
      {"device", a->device.str()},
      {"precision", spec.precision},
      {"offload", spec.offload},
      {"threads", at::get_num_threads()},
  };
  EmitFor(request_id, {{"event", "result"}, {"result", std::move(result)}});
  End(request_id);
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
  // OpenMP's thread count is per thread: the engine thread takes the one main() configured.
  const int threads = at::get_num_threads();
  impl_->thread = std::thread([this, threads] {
    at::set_num_threads(threads);
    impl_->EngineLoop();
  });
}

RankService::~RankService() {
  {
    std::lock_guard<std::mutex> lock(impl_->mu);
    impl_->stopping = true;
  }
  impl_->cv.notify_all();
  impl_->thread.join();
}

void RankService::Drain() {
  std::unique_lock<std::mutex> lock(impl_->mu);
  impl_->cv.wait(lock, [&] { return impl_->incoming.empty() && impl_->cancels.empty() && !impl_->engine_busy; });
}

bool RankService::Handle(const nlohmann::json& request) {
  const std::string id = request.contains("id") && request["id"].is_string() ? request["id"].get<std::string>() : "";
  const std::string op = request.contains("op") && request["op"].is_string() ? request["op"].get<std::string>() : "";
  if (op == "cancel") {
    if (id.empty()) {
      impl_->FailFor(id, InvalidArgument("cancel needs the 'id' of the request to end"), "bad_input");
      return true;
    }
    {
      std::lock_guard<std::mutex> lock(impl_->mu);
      impl_->cancels.push_back(id);
    }
    impl_->cv.notify_all();
    return true;
  }
  if (op == "infer" || op == "load") {
    impl_->EmitFor(id, {{"event", "started"}, {"op", op}, {"pid", ::getpid()}});
    Status status = [&]() -> Status {
      nlohmann::json fields = request;
      // A load names a model only: the prompt check does not apply.
      if (op == "load" && !fields.contains("prompt") && !fields.contains("prompt_ids")) fields["prompt_ids"] = {0};
      FUJI_ASSIGN_OR_RETURN(InferSpec spec, InferSpec::FromJson(fields));
      FUJI_ASSIGN_OR_RETURN(c10::Device device, engine::ParseDevice(spec.device));
      FUJI_ASSIGN_OR_RETURN(at::ScalarType dtype, engine::ParsePrecision(spec.precision));
      FUJI_RETURN_IF_ERROR(engine::CheckPrecisionOnDevice(dtype, device));
      {
        std::lock_guard<std::mutex> lock(impl_->mu);
        if (impl_->in_flight.count(id) != 0) return InvalidArgument("request id '" + id + "' is already in flight");
        if (impl_->in_flight.size() >= kMaxInFlight) {
          return ResourceExhausted("this rank already holds " + std::to_string(kMaxInFlight) +
                                   " requests; send more once some have ended");
        }
        impl_->in_flight.insert(id);
        impl_->incoming.push_back({op, id, std::move(spec), Clock::now()});
        impl_->engine_busy = true;
      }
      impl_->cv.notify_all();
      return Status::Ok();
    }();
    // Nothing here ran out of memory: a full rank is not a host_oom.
    if (!status.ok()) {
      impl_->FailFor(id, status, status.code() == StatusCode::kResourceExhausted ? "internal" : ReasonFor(status));
    }
    return true;
  }
  // Everything else runs here once the batch has drained, with the engine thread held.
  Drain();
  {
    std::lock_guard<std::mutex> lock(impl_->mu);
    impl_->sync_running = true;
  }
  impl_->id = id;
  impl_->Emit({{"event", "started"}, {"op", op}, {"pid", ::getpid()}});
  Status status;
  bool failed_hard = false;
  try {
    if (op == "init") {
      status = impl_->Init(request);
    } else if (op == "convert") {
      status = impl_->Convert(request);
    } else if (op == "finetune") {
      status = impl_->Finetune(request);
    } else if (op == "calibrate") {
      impl_->Emit({{"event", "result"}, {"result", MeasureRates()}});
    } else {
      status = InvalidArgument("unknown op '" + op + "' (infer, load, cancel, init, convert, finetune, calibrate)");
    }
  } catch (const dist::CollectiveError& e) {
    // A peer died or a collective timed out: the launcher names the dead peer when there is one.
    impl_->Fail(Unavailable(e.what()), "collective_timeout");
    failed_hard = true;
  } catch (const std::bad_alloc&) {
    impl_->resident.reset();
    status = ResourceExhausted("out of host memory");
  } catch (const std::exception& e) {
    const std::string what = e.what();
    // libtorch's CUDA allocator: "CUDA out of memory. Tried to allocate ..."
    if (what.find("CUDA out of memory") != std::string::npos) {
      impl_->resident.reset();
      impl_->Fail(ResourceExhausted(what.substr(0, what.find('\n'))), "cuda_oom");
      failed_hard = true;
    } else {
      status = Internal(what.substr(0, what.find("\nException raised from")));
    }
  }
  // A fine-tune's UNAVAILABLE is a gang that could not meet or connect (a peer or the store host
  // gone): the launcher treats it as a lost peer, as a collective that failed.
  const bool lost_peer = op == "finetune" && status.code() == StatusCode::kUnavailable;
  if (!status.ok()) impl_->Fail(status, lost_peer ? "collective_timeout" : ReasonFor(status));
  {
    std::lock_guard<std::mutex> lock(impl_->mu);
    impl_->sync_running = false;
  }
  impl_->cv.notify_all();
  return status.ok() && !failed_hard;
}

}  // namespace fuji::rank
