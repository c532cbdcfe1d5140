// Preparing a fine-tuning job: checks in the order of their cost, then the token cache.
#include "worker/launcher/finetune_prepare.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <optional>
#include <system_error>

#include <nlohmann/json.hpp>

#include "lib/common/file_util.h"
#include "lib/common/json_lines.h"
#include "lib/text/bpe_tokenizer.h"
#include "lib/text/vocab_files.h"
#include "worker/data/packed_dataset.h"
#include "worker/data/token_cache.h"
#include "worker/launcher/child_process.h"

namespace fuji::launch {
namespace fs = std::filesystem;
namespace {

Status CheckRanks(const FinetuneSpec& spec, const PrepareOptions& options) {
  if (spec.ranks > options.max_ranks) {
    return InvalidArgument("more ranks (" + std::to_string(spec.ranks) + ") than devices (" +
                           std::to_string(options.max_ranks) + " " + options.devices_what + ")");
  }
  return Status::Ok();
}

Status CheckModel(const FinetuneSpec& spec, engine::ModelConfig* config) {
  std::error_code ec;
  if (!fs::is_directory(spec.model, ec)) return NotFound("model directory " + spec.model + " not found");
  FUJI_ASSIGN_OR_RETURN(*config, engine::LoadModelConfig(spec.model));
  if (spec.seq_len > config->n_positions) {
    return InvalidArgument("seq_len " + std::to_string(spec.seq_len) + " above the model's n_positions " +
                           std::to_string(config->n_positions));
  }
  return Status::Ok();
}

}  // namespace

std::string DefaultVocabDir() {
  if (const char* env = std::getenv("FUJI_VOCAB_DIR"); env != nullptr && *env != '\0') return env;
  return ExecutableDir() + "/../share/fuji";
}

int CountCudaDevices() {
  int count = 0;
  std::error_code ec;
  for (fs::directory_iterator it("/proc/driver/nvidia/gpus", ec), end; !ec && it != end; it.increment(ec)) ++count;
  if (count == 0) {
    while (fs::exists("/dev/nvidia" + std::to_string(count), ec)) ++count;
  }
  if (const char* visible = std::getenv("CUDA_VISIBLE_DEVICES"); visible != nullptr) {
    const std::string v = visible;
    int listed = v.empty() ? 0 : 1;
    for (char c : v) listed += c == ',';
    if (!v.empty() && v[0] == '-') listed = 0;  // "-1" hides every GPU
    if (listed < count) count = listed;
  }
  return count;
}

Status CheckWritableDir(const std::string& dir, const std::string& what) {
  if (Status made = MakeDirectories(dir); !made.ok()) {
    return InvalidArgument(what + " " + dir + " cannot be created: " + made.message());
  }
  const std::string probe = dir + "/.fuji-write-probe-" + RandomHex64();
  Result<int> fd = CreateExclusiveFile(probe, 0600);
  if (!fd.ok()) return InvalidArgument(what + " " + dir + " is not writable: " + fd.status().message());
  const bool wrote = ::write(*fd, "x", 1) == 1;
  ::close(*fd);
  ::unlink(probe.c_str());
  if (!wrote) return InvalidArgument(what + " " + dir + " is not writable (a write failed)");
  return Status::Ok();
}

Result<PreparedFinetune> PrepareFinetune(FinetuneSpec spec, const PrepareOptions& options) {
  PreparedFinetune out;
  spec.model = AbsolutePath(spec.model);
  spec.data = AbsolutePath(spec.data);
  spec.save_to = AbsolutePath(spec.save_to);
  spec.cache_dir = AbsolutePath(spec.cache_dir.empty() ? DefaultTokenCacheDir() : spec.cache_dir);
  FUJI_RETURN_IF_ERROR(CheckRanks(spec, options));
  FUJI_RETURN_IF_ERROR(CheckModel(spec, &out.config));
  std::error_code ec;
  if (!fs::exists(spec.data, ec)) return NotFound("data " + spec.data + " not found");
  if (!spec.save_to.empty()) FUJI_RETURN_IF_ERROR(CheckWritableDir(spec.save_to, "save directory"));

  out.tokenizer_dir = spec.model;
  if (!text::FindTokenizerFiles(spec.model).ok()) {
    out.tokenizer_dir = options.fallback_vocab_dir.empty() ? DefaultVocabDir() : options.fallback_vocab_dir;
  }
  auto tokenizer = text::BpeTokenizer::LoadFromDir(out.tokenizer_dir);
  if (!tokenizer.ok()) {
    return tokenizer.status().WithContext("no tokenizer in " + spec.model + " and none in " + out.tokenizer_dir);
  }
  if (tokenizer->vocab_size() > out.config.vocab_size) {
    return InvalidArgument("the tokenizer's " + std::to_string(tokenizer->vocab_size()) +
                           " tokens do not fit the model's vocab_size " + std::to_string(out.config.vocab_size));
  }
  data::TokenCacheOptions cache_options;
  cache_options.num_threads = options.tokenizer_threads;
  FUJI_ASSIGN_OR_RETURN(auto cache, data::TokenCache::Open(spec.data, out.tokenizer_dir, *tokenizer,
                                                           spec.cache_dir, cache_options));
  FUJI_RETURN_IF_ERROR(data::PackedDataset::Check(
      cache.num_tokens(), {spec.seq_len, out.config.n_positions, spec.holdout}));
  spec.token_cache = AbsolutePath(cache.path());
  out.num_tokens = cache.num_tokens();
  out.tokenized = cache.tokenized();
  out.spec = std::move(spec);
  return out;
}

// ---- preparing in a confined child ----------------------------------------------------------

namespace {

nlohmann::json PreparationRequest(const FinetuneSpec& spec, const PrepareOptions& options) {
  return {{"spec", spec.ToJson()},
          {"max_ranks", options.max_ranks},
          {"devices_what", options.devices_what},
          {"fallback_vocab_dir", options.fallback_vocab_dir},
          {"tokenizer_threads", options.tokenizer_threads}};
}

nlohmann::json PreparedToJson(const PreparedFinetune& prepared) {
  return {{"spec", prepared.spec.ToJson()},
          {"config", prepared.config.ToJson()},
          {"tokenizer_dir", prepared.tokenizer_dir},
          {"num_tokens", prepared.num_tokens},
          {"tokenized", prepared.tokenized}};
}

Result<PreparedFinetune> PreparedFromJson(const nlohmann::json& j) {
  if (!j.is_object()) return Internal("the preparation's result is not an object");
  PreparedFinetune out;
  FUJI_ASSIGN_OR_RETURN(out.spec, FinetuneSpec::FromJson(j.value("spec", nlohmann::json())));
  FUJI_ASSIGN_OR_RETURN(out.config, engine::ParseModelConfig(j.value("config", nlohmann::json()), "the preparation"));
  out.tokenizer_dir = j.value("tokenizer_dir", "");
  out.num_tokens = j.value("num_tokens", uint64_t{0});
  out.tokenized = j.value("tokenized", false);
  return out;
}

Result<PreparedFinetune> Serve(const std::string& line) {
  FUJI_ASSIGN_OR_RETURN(nlohmann::json request, ParseJsonObject(line));
  FUJI_ASSIGN_OR_RETURN(FinetuneSpec spec, FinetuneSpec::FromJson(request.value("spec", nlohmann::json())));
  PrepareOptions options;
  options.max_ranks = request.value("max_ranks", options.max_ranks);
  options.devices_what = request.value("devices_what", options.devices_what);
  options.fallback_vocab_dir = request.value("fallback_vocab_dir", options.fallback_vocab_dir);
  options.tokenizer_threads = request.value("tokenizer_threads", options.tokenizer_threads);
  return PrepareFinetune(std::move(spec), options);
}

}  // namespace

int ServePreparation() {
  JsonLineWriter events(kEventFd);
  LineReader requests(0);
  Result<std::optional<std::string>> line = requests.ReadLine();
  Result<PreparedFinetune> prepared =
      !line.ok() ? Result<PreparedFinetune>(line.status())
      : !line->has_value() ? Result<PreparedFinetune>(InvalidArgument("no preparation request"))
                           : Serve(**line);
  const nlohmann::json event =
      prepared.ok() ? nlohmann::json{{"event", "result"}, {"result", PreparedToJson(*prepared)}}
                    : nlohmann::json{{"event", "error"},
                                     {"code", StatusCodeName(prepared.status().code())},
                                     {"message", prepared.status().message()}};
  return events.Write(event).ok() ? 0 : 1;
}

Result<PreparedFinetune> PrepareFinetuneConfined(const FinetuneSpec& spec, const PrepareOptions& options,
                                                 const std::string& program, const Confinement& confinement) {
  Result<std::unique_ptr<ChildProcess>> started =
      ChildProcess::Spawn({program, {kServePreparationArg}, {}, confinement});
  if (!started.ok()) return Internal("cannot start the preparation: " + started.status().message());
  ChildProcess& child = **started;
  (void)child.Send(PreparationRequest(spec, options));  // a child that cannot read it shows by its exit
  child.CloseInput();
  std::optional<nlohmann::json> answer;
  std::string last_log;
  for (;;) {
    Result<std::optional<ChildOutput>> next = child.Next(std::chrono::seconds(60));
    if (!next.ok()) {
      if (next.status().code() == StatusCode::kUnavailable) continue;  // still preparing
      return Internal("the preparation: " + next.status().message());
    }
    if (!next->has_value()) break;
    const ChildOutput& out = **next;
    if (out.kind == ChildOutput::Kind::kLog) {
      if (!out.line.empty()) last_log = out.line;
    } else if (!answer) {
      answer = out.event;
    }
  }
  const ExitInfo exit = child.Wait();
  if (answer && answer->value("event", "") == "result") return PreparedFromJson(answer->value("result", nlohmann::json()));
  if (answer && answer->value("event", "") == "error") {
    return Status(StatusCodeFromName(answer->value("code", "INTERNAL")), answer->value("message", ""));
  }
  return Internal("the preparation ended without an answer (" + exit.Describe() +
                  (last_log.empty() ? "" : ": " + last_log) + ")");
}

}  // namespace fuji::launch
