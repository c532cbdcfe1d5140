// The ZeRO checkpoint format (torch-free): each rank writes its slice of every unit's fp32 master
// weights and AdamW moments; rank 0 writes meta.json and then, atomically, <save_to>/latest.
//
//   <save_to>/step-00000010/meta.json
//   <save_to>/step-00000010/rank-00000-of-00002.safetensors   "u<U>.master", "u<U>.exp_avg",
//                                                            "u<U>.exp_avg_sq" (F32, 1-D)
//   <save_to>/latest                                         "step-00000010\n" and, when a fujid
//                                                            attempt wrote it, "attempt <token>\n"
//   <save_to>/attempt                                        the token of the attempt that writes
//                                                            the directory now (ClaimSaveDir)
//
// Fencing: a job attempt placed by fujid carries a token (job, attempt, lease epoch; the agent
// passes it to its ranks as FUJI_ATTEMPT). It claims the save directory before it trains, and
// every rank checks the claim before it writes a step: an attempt fujid gave up on (its agent cut
// off, a newer attempt started elsewhere) stops instead of writing beside the newer one. The step
// directory's meta.json and `latest` name the attempt that wrote them.
//
// The units ("embedding", "h.<l>", "final") are those of the ZeRO layout (lib/zero/layout.h):
// runs of engine::ParameterLayout, numbered flat and unpadded; rank r of N owns
// zero::PartitionRange(numel, N, r) of each, whatever the stage it trained with. The reader
// assembles any range from whichever rank files hold it, so a resume may use another world size,
// and every file is validated against meta.json before a byte is used.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "lib/common/status.h"
#include "lib/model/model_config.h"
#include "lib/format/tensor_view.h"
#include "lib/zero/layout.h"

namespace fuji::ckpt {

inline constexpr const char* kFormatName = "fuji-zero-checkpoint";
inline constexpr int kFormatVersion = 1;
inline constexpr int kMaxWorldSize = 4096;

// A unit as meta.json lists it: its name, numel and parameters (name, shape, offset).
using UnitLayout = zero::Unit;

// The units of the ZeRO layout, zero::Layout(config).units().
std::vector<UnitLayout> UnitsOf(const engine::ModelConfig& config);

using zero::PartitionRange;

// "step-00000010" and "rank-00000-of-00002.safetensors".
std::string StepDirName(int64_t step);
std::string RankFileName(int rank, int world_size);

// A job attempt's fencing token: "job 12 attempt 1 epoch 3".
struct AttemptToken {
  int64_t job_id = 0;
  int attempt = 0;
  int64_t lease_epoch = 0;
  std::string ToString() const;
  // INVALID_ARGUMENT for anything but ToString()'s form.
  static Result<AttemptToken> Parse(const std::string& text);
};

// Makes `token`'s attempt the writer of save_to (save_to/attempt, durably). FAILED_PRECONDITION
// ("fenced: ...") when a newer placement of the same job has claimed it: this attempt is stale.
Status ClaimSaveDir(const std::string& save_to, const AttemptToken& token);
// OK while save_to is still claimed by `token`; FAILED_PRECONDITION ("fenced: ...") otherwise.
Status CheckSaveDirClaim(const std::string& save_to, const AttemptToken& token);

// Every field of meta.json. ReadMeta also fills step_dir and model_config.
struct CheckpointMeta {
  int64_t step = 0;
  int world_size = 1;
  int zero = 0;
  std::string precision = "fp32";  // fp32 | bf16 | fp16
  double loss_scale = 1.0;
  int64_t good_steps = 0;
  std::string model_dir;
  nlohmann::json config = nlohmann::json::object();  // the model's HF config.json
  nlohmann::json spec = nlohmann::json::object();    // the FinetuneSpec JSON
  std::vector<UnitLayout> units;                     // UnitsOf(config)
  std::string attempt;                               // AttemptToken::ToString() of its writer; "" outside fujid

  std::string step_dir;              // set by ReadMeta: the directory meta.json was read from
  engine::ModelConfig model_config;  // set by ReadMeta: config, parsed and validated

  nlohmann::json ToJson() const;  // meta.json, with "format" and "version"
};

// One rank's slice [begin, end) of one unit, in host memory; the pointers hold end - begin floats
// (they may be null when the slice is empty).
struct RankUnitState {
  int64_t begin = 0;
  int64_t end = 0;
  const float* master = nullptr;
  const float* exp_avg = nullptr;
  const float* exp_avg_sq = nullptr;
};

// Writes step_dir/rank-<rank>-of-<world_size>.safetensors (creating step_dir and its parents),
// complete or not at all (temp file, fsync, rename). states[U] must cover exactly
// PartitionRange(units[U].numel, world_size, rank): INVALID_ARGUMENT otherwise.
Status WriteRankShard(const std::string& step_dir, int rank, int world_size, int64_t step,
                      const std::vector<UnitLayout>& units, const std::vector<RankUnitState>& states);

// Writes step_dir/meta.json atomically. INVALID_ARGUMENT for a meta that ReadMeta would refuse
// (world size, zero, precision, config, units not UnitsOf(config)).
Status WriteMeta(const std::string& step_dir, const CheckpointMeta& meta);

// Writes save_to/latest = "<step_dir_name>\n" (and "attempt <attempt>\n" when given) atomically and
// durably (after the shards and meta).
Status PublishLatest(const std::string& save_to, const std::string& step_dir_name, const std::string& attempt = "");

// path: a step directory (holding meta.json) or a save directory (then the step its latest names).
// NOT_FOUND when it is neither, DATA_LOSS for a meta.json or latest that is corrupt or
// inconsistent (messages name the file and the field).
Result<std::string> ResolveStepDir(const std::string& path);
Result<CheckpointMeta> ReadMeta(const std::string& path);

// Reads the rank files of a checkpoint lazily, validating each one on first use against the meta:
// rank, world_size and step metadata, every unit's begin/end equal to PartitionRange, tensors F32
// and 1-D of length end - begin. Not thread-safe.
class CheckpointReader {
 public:
  explicit CheckpointReader(CheckpointMeta meta);
  ~CheckpointReader();
  CheckpointReader(CheckpointReader&&) noexcept;
  CheckpointReader& operator=(CheckpointReader&&) noexcept;

  static Result<CheckpointReader> Open(const std::string& path);  // ReadMeta(path)
  const CheckpointMeta& meta() const { return meta_; }

  // Copies elements [begin, end) of unit `unit_index` into each non-null output (end - begin
  // floats each), from whichever rank files hold them.
  Status Read(size_t unit_index, int64_t begin, int64_t end, float* master, float* exp_avg,
              float* exp_avg_sq);
  // Opens and validates every rank file.
  Status VerifyAll();

 private:
  class RankFile;
  Result<const RankFile*> File(int rank);

  CheckpointMeta meta_;
  std::map<int, std::unique_ptr<RankFile>> files_;
};

// One-shot form of CheckpointReader::Read (opens the files it needs).
Status ReadRankRange(const std::string& step_dir, const CheckpointMeta& meta, size_t unit_index,
                     int64_t begin, int64_t end, float* master, float* exp_avg, float* exp_avg_sq);

struct ExportReport {
  std::string step_dir;
  int64_t step = 0;
  int64_t parameters = 0;  // elements written (the tied embedding once)
  int64_t bytes = 0;       // of model.safetensors' tensor data
  std::vector<std::string> copied;  // tokenizer files copied from the model directory
};

// Writes out_dir/model.safetensors (master weights in dtype, names as engine::WriteCheckpoint
// writes them: "transformer." + name, "lm_head.weight" bare), config.json (the checkpoint's
// config), and vocab.json / merges.txt (also from encoder.json / vocab.bpe), tokenizer.json,
// tokenizer_config.json, special_tokens_map.json when the model directory has them.
// from: as ReadMeta. INVALID_ARGUMENT when out_dir exists and is not empty.
Status ExportCheckpoint(const std::string& from, const std::string& out_dir, format::DType dtype,
                        ExportReport* report = nullptr);

}  // namespace fuji::ckpt
