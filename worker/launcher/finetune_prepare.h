// The checks and preparation of a fine-tuning job before any rank starts, shared by `fuji run
// finetune` and the agent (torch-free): the model's config against seq_len, the ranks against the
// devices, the save directory, and the data tokenized once into the token cache. `fuji run` prepares
// in its own process; the agent in a child confined as its ranks are, so that the data is read and
// the cache written as the ranks' user, never the agent's.
#pragma once

#include <cstdint>
#include <string>

#include "lib/common/status.h"
#include "lib/model/model_config.h"
#include "lib/spec/finetune_spec.h"
#include "worker/launcher/child_process.h"

namespace fuji::launch {

struct PrepareOptions {
  // The most ranks this launch may start, and what that number counts, for the message
  // ("more ranks (3) than devices (2 GPUs)").
  int max_ranks = kMaxFinetuneRanks;
  std::string devices_what = "devices";
  // Where the GPT-2 vocabulary is when the model directory has none; "" = DefaultVocabDir().
  std::string fallback_vocab_dir;
  int tokenizer_threads = 0;  // 0: the token cache's default
};

struct PreparedFinetune {
  FinetuneSpec spec;  // paths absolute, cache_dir resolved, token_cache set
  engine::ModelConfig config;
  std::string tokenizer_dir;
  uint64_t num_tokens = 0;
  bool tokenized = false;  // false: an existing token cache was reused
};

// Everything that can be refused before a rank starts, with one clear line each:
// INVALID_ARGUMENT for more ranks than devices, seq_len above n_positions, an empty dataset or one
// shorter than one block, invalid UTF-8 (from the token cache), a save directory that cannot be
// created or written; NOT_FOUND for a missing model or data path.
Result<PreparedFinetune> PrepareFinetune(FinetuneSpec spec, const PrepareOptions& options);

// The argument that makes a program serve one preparation (ServePreparation) instead of running as
// itself. fuji-agent takes it.
inline constexpr const char kServePreparationArg[] = "--serve-finetune-preparation";

// PrepareFinetune in a child: `program` run with kServePreparationArg, confined as `confinement`
// says. The same result and errors as PrepareFinetune; INTERNAL when the child cannot start or
// ends without an answer (with its last log line).
Result<PreparedFinetune> PrepareFinetuneConfined(const FinetuneSpec& spec, const PrepareOptions& options,
                                                 const std::string& program, const Confinement& confinement);

// The child's side of PrepareFinetuneConfined: reads one request on stdin, prepares, and writes
// {"event": "result", "result": ...} or {"event": "error", "code", "message"} on kEventFd. Returns
// the exit code: 0 when it answered.
int ServePreparation();

// The GPUs this machine shows (/proc/driver/nvidia/gpus, else /dev/nvidiaN), limited by
// CUDA_VISIBLE_DEVICES when it is set; 0 when there are none.
int CountCudaDevices();

// The directory of the GPT-2 vocab.json and merges.txt fuji ships: $FUJI_VOCAB_DIR, else
// share/fuji beside the executable's bin/.
std::string DefaultVocabDir();

// Creates dir (and parents, 0700 under the umask) when missing and checks that a file can be
// written there (a probe of an unpredictable name, created O_EXCL|O_NOFOLLOW, then removed).
Status CheckWritableDir(const std::string& dir, const std::string& what);

}  // namespace fuji::launch
