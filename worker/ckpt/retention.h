// Checkpoint retention (a fine-tune's keep_last, `--keep-last N`): removing the step directories
// of a save directory that are older than its newest N complete ones (torch-free).
//
// A save directory as the trainer leaves it (zero_checkpoint.h):
//
//   <save_to>/step-00000010/   complete: meta.json and every rank file it names   removed (N = 2)
//   <save_to>/step-00000020/   complete                                            kept
//   <save_to>/step-00000030/   complete, named by latest                           kept
//   <save_to>/step-00000040/   rank files, no meta.json (a save under way)         never touched
//   <save_to>/latest           "step-00000030"
//
// The rules, in order:
//  1. keep_last <= 0 keeps everything.
//  2. `latest` must be a regular file naming a complete step directory; otherwise nothing is
//     removed (a crash between a save and its publish, or a broken directory, is never made worse).
//  3. Kept: the newest keep_last complete step directories at or below latest's step, so latest's
//     target always. Step directories above it (a save not yet published) are never touched.
//  4. Removed: the step directories below the oldest kept one, complete or not (a crash during a
//     save or a removal leaves incomplete ones behind), each only when its name is exactly
//     StepDirName(step), it is a directory of its own (not a symbolic link) and it holds nothing
//     but what the writer puts there: meta.json, rank files and their temporary files. Anything
//     else (a file or directory of someone else's, a link) keeps the whole directory and is
//     reported; nothing outside save_to is ever reached (every removal is relative to a
//     descriptor of save_to and of the step directory, opened without following links).
//
// Called by the rank that publishes `latest` (rank 0), after publishing it; one caller per save
// directory at a time (the attempt that holds its claim, ClaimSaveDir).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "lib/common/status.h"

namespace fuji::ckpt {

struct PruneReport {
  std::vector<std::string> kept;     // step directory names, oldest first
  std::vector<std::string> removed;  // step directory names, oldest first
  std::vector<std::string> skipped;  // "<name>: why" for an old directory left in place
};

// Applies the rules above. OK also when rule 2 removes nothing (report->kept then empty);
// RESOURCE_EXHAUSTED when save_to cannot be listed or a removal fails for another reason than
// the directory's contents.
Status PruneCheckpoints(const std::string& save_to, int64_t keep_last, PruneReport* report = nullptr);

// "step-00000010" -> 10: exactly StepDirName's form; -1 for any other name.
int64_t StepOfName(const std::string& name);

// The names in save_to of StepOfName's form, oldest step first; RESOURCE_EXHAUSTED when save_to
// cannot be listed.
Result<std::vector<std::string>> StepDirNames(const std::string& save_to);

}  // namespace fuji::ckpt
