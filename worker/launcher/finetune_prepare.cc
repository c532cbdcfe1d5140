// Preparing a fine-tuning job: checks in the order of their cost, then the token cache.
#include "worker/launcher/finetune_prepare.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <system_error>

#include "lib/common/file_util.h"
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
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return InvalidArgument(what + " " + dir + " cannot be created: " + ec.message());
  if (!fs::is_directory(dir, ec)) return InvalidArgument(what + " " + dir + " is not a directory");
  const std::string probe = dir + "/.fuji-write-probe-" + std::to_string(::getpid());
  const int fd = ::open(probe.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return InvalidArgument(what + " " + dir + " is not writable: " + std::strerror(errno));
  const bool wrote = ::write(fd, "x", 1) == 1;
  ::close(fd);
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

}  // namespace fuji::launch
