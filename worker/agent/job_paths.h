// Every path a job spec names, checked against the agent's roots (--allow-read, --allow-write)
// before anything reads or creates it, and replaced by its real path, so that what the ranks open
// is what was checked (a link swapped in later is not followed from the spec's own words).
//
// What each kind names: an inference its model (read); a fine-tuning job its model and data
// (read), save_to and cache_dir (write). What the launcher sets (token_cache, rendezvous, and a
// gang's node and bind_addr) is cleared: a job never chooses it. A model directory's entries are checked too (a link in it
// that leads out of the roots, a FIFO) since the ranks read files of it by name.
#pragma once

#include <nlohmann/json.hpp>

#include "lib/common/path_policy.h"
#include "lib/common/status.h"
#include "lib/spec/finetune_spec.h"

namespace fuji::agent {

// Where a fine-tuning job's token cache goes when its spec names no cache_dir: this directory in
// the write root that holds save_to, else in the first write root.
inline constexpr const char kDefaultCacheDirName[] = ".fuji-tokens";

// An inference request: its fields as InferSpec reads them, the model checked and made real.
// INVALID_ARGUMENT (or NOT_FOUND inside the roots) in one line naming the field and the roots.
Status ConfineInferPaths(const PathPolicy& paths, nlohmann::json* request);

// A fine-tuning spec: model and data checked for reading, save_to and cache_dir (or the default
// cache directory) for writing, each made real.
Status ConfineFinetunePaths(const PathPolicy& paths, FinetuneSpec* spec);

}  // namespace fuji::agent
