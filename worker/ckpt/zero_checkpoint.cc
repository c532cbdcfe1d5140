// ZeRO checkpoints: sharded writing, validating reading and assembly, export to HF layout.
#include "worker/ckpt/zero_checkpoint.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <charconv>
#include <cstdio>
#include <cstring>
#include <limits>
#include <optional>
#include <dirent.h>

#include "lib/common/file_util.h"
#include "lib/common/half.h"
#include "lib/common/json_bounds.h"
#include "lib/format/safetensors.h"
#include "lib/text/vocab_files.h"

namespace fuji::ckpt {
namespace {

constexpr const char* kMomentNames[] = {"master", "exp_avg", "exp_avg_sq"};

bool PathExists(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0;
}

Status FsyncPath(const std::string& path, int flags) {
  const int fd = ::open(path.c_str(), flags | O_CLOEXEC);
  if (fd < 0) return ResourceExhausted(path + ": " + ErrnoMessage());
  const int rc = ::fsync(fd);
  ::close(fd);
  if (rc != 0) return ResourceExhausted(path + ": fsync failed: " + ErrnoMessage());
  return Status::Ok();
}

// WriteFileAtomically, made durable: the temp file (of an unpredictable name, 0600) is fsynced
// before the rename and the directory after it, so that `latest` never names a step whose files a
// crash could still lose.
Status WriteFileDurably(const std::string& dir, const std::string& name, const std::string& text) {
  const std::string path = dir + "/" + name;
  const std::string tmp = path + ".tmp-" + RandomHex64();
  FUJI_RETURN_IF_ERROR(WriteFileAtomically(tmp, text, 0600));
  if (Status s = FsyncPath(tmp, O_RDONLY); !s.ok()) {
    ::unlink(tmp.c_str());
    return s;
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    Status s = ResourceExhausted(path + ": " + ErrnoMessage());
    ::unlink(tmp.c_str());
    return s;
  }
  return FsyncPath(dir, O_RDONLY | O_DIRECTORY);
}

// The step directory, made when missing (0700, under the umask). A symbolic link planted at its
// name is refused, so no checkpoint file is written through one.
Status MakeStepDir(const std::string& step_dir) {
  FUJI_RETURN_IF_ERROR(MakeDirectories(step_dir));
  struct stat st {};
  if (::lstat(step_dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
    return InvalidArgument(step_dir + ": not a directory of its own (a symbolic link?)");
  }
  return Status::Ok();
}

std::string ShapeString(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

// A whole non-negative decimal number, nothing else.
bool ParseDecimal(const std::string& text, int64_t* out) {
  if (text.empty()) return false;
  const char* end = text.data() + text.size();
  auto [ptr, ec] = std::from_chars(text.data(), end, *out);
  return ec == std::errc() && ptr == end && *out >= 0;
}

std::string TensorName(size_t unit, int moment) {
  return "u" + std::to_string(unit) + "." + kMomentNames[moment];
}

// ---- meta.json ---------------------------------------------------------------------------------

// Typed field access that reports, rather than throws, for a missing or mistyped field.
class Fields {
 public:
  Fields(const nlohmann::json& j, std::string origin) : j_(j), origin_(std::move(origin)) {}

  Status Int(const char* key, int64_t* out) const {
    FUJI_ASSIGN_OR_RETURN(const nlohmann::json* v, Get(key));
    if (!v->is_number_integer()) return Bad(key, "is not an integer");
    *out = v->get<int64_t>();
    return Status::Ok();
  }
  Status Number(const char* key, double* out) const {
    FUJI_ASSIGN_OR_RETURN(const nlohmann::json* v, Get(key));
    if (!v->is_number()) return Bad(key, "is not a number");
    *out = v->get<double>();
    return Status::Ok();
  }
  Status String(const char* key, std::string* out) const {
    FUJI_ASSIGN_OR_RETURN(const nlohmann::json* v, Get(key));
    if (!v->is_string()) return Bad(key, "is not a string");
    *out = v->get<std::string>();
    return Status::Ok();
  }
  Result<const nlohmann::json*> Get(const char* key) const {
    auto it = j_.find(key);
    if (it == j_.end()) return DataLoss(origin_ + ": field '" + key + "' is missing");
    return &*it;
  }
  Status Bad(const char* key, const std::string& what) const {
    return DataLoss(origin_ + ": field '" + key + "' " + what);
  }

 private:
  const nlohmann::json& j_;
  std::string origin_;
};

Result<std::vector<int64_t>> ParseShape(const nlohmann::json& j, const std::string& origin) {
  if (!j.is_array()) return DataLoss(origin + ": 'shape' is not an array");
  std::vector<int64_t> shape;
  for (const auto& d : j) {
    if (!d.is_number_integer() || d.get<int64_t>() < 0) {
      return DataLoss(origin + ": 'shape' holds something other than non-negative integers");
    }
    shape.push_back(d.get<int64_t>());
  }
  return shape;
}

Result<std::vector<UnitLayout>> ParseUnits(const nlohmann::json& j, const std::string& origin) {
  if (!j.is_array()) return DataLoss(origin + ": field 'units' is not an array");
  std::vector<UnitLayout> units;
  for (size_t u = 0; u < j.size(); ++u) {
    const std::string where = origin + ": units[" + std::to_string(u) + "]";
    if (!j[u].is_object()) return DataLoss(where + " is not an object");
    Fields f(j[u], where);
    UnitLayout unit;
    FUJI_RETURN_IF_ERROR(f.String("name", &unit.name));
    FUJI_RETURN_IF_ERROR(f.Int("numel", &unit.numel));
    FUJI_ASSIGN_OR_RETURN(const nlohmann::json* params, f.Get("params"));
    if (!params->is_array()) return f.Bad("params", "is not an array");
    for (size_t p = 0; p < params->size(); ++p) {
      const std::string pwhere = where + ".params[" + std::to_string(p) + "]";
      if (!(*params)[p].is_object()) return DataLoss(pwhere + " is not an object");
      Fields pf((*params)[p], pwhere);
      zero::UnitParam param;
      FUJI_RETURN_IF_ERROR(pf.String("name", &param.name));
      FUJI_RETURN_IF_ERROR(pf.Int("offset", &param.offset));
      FUJI_ASSIGN_OR_RETURN(const nlohmann::json* shape, pf.Get("shape"));
      FUJI_ASSIGN_OR_RETURN(param.shape, ParseShape(*shape, pwhere));
      unit.params.push_back(std::move(param));
    }
    units.push_back(std::move(unit));
  }
  return units;
}

// The units a meta.json lists must be exactly those of its model config.
Status CheckUnits(const std::vector<UnitLayout>& got, const std::vector<UnitLayout>& want,
                  const std::string& origin) {
  if (got.size() != want.size()) {
    return DataLoss(origin + ": " + std::to_string(got.size()) + " units, but the model config has " +
                    std::to_string(want.size()));
  }
  for (size_t u = 0; u < want.size(); ++u) {
    const UnitLayout& g = got[u];
    const UnitLayout& w = want[u];
    const std::string where = origin + ": unit " + std::to_string(u) + " ('" + g.name + "')";
    if (g.name != w.name) return DataLoss(where + " should be '" + w.name + "' for the model config");
    if (g.numel != w.numel) {
      return DataLoss(where + " has numel " + std::to_string(g.numel) + ", the model config gives " +
                      std::to_string(w.numel));
    }
    if (g.params.size() != w.params.size()) {
      return DataLoss(where + " has " + std::to_string(g.params.size()) + " parameters, the model config " +
                      std::to_string(w.params.size()));
    }
    for (size_t p = 0; p < w.params.size(); ++p) {
      const auto& gp = g.params[p];
      const auto& wp = w.params[p];
      if (gp.name != wp.name) {
        return DataLoss(where + ": parameter " + std::to_string(p) + " is '" + gp.name + "', expected '" +
                        wp.name + "'");
      }
      if (gp.shape != wp.shape) {
        return DataLoss(where + ": parameter '" + gp.name + "' has shape " + ShapeString(gp.shape) +
                        ", the model config gives " + ShapeString(wp.shape));
      }
      if (gp.offset != wp.offset) {
        return DataLoss(where + ": parameter '" + gp.name + "' at offset " + std::to_string(gp.offset) +
                        ", expected " + std::to_string(wp.offset));
      }
    }
  }
  return Status::Ok();
}

// Parses and validates a meta.json object. Every failure is DATA_LOSS naming origin, except a
// version this reader does not know (INVALID_ARGUMENT).
Result<CheckpointMeta> ParseMeta(const nlohmann::json& j, const std::string& origin) {
  if (!j.is_object()) return DataLoss(origin + ": not a JSON object");
  Fields f(j, origin);
  std::string format;
  FUJI_RETURN_IF_ERROR(f.String("format", &format));
  if (format != kFormatName) {
    return DataLoss(origin + ": format '" + format + "' is not '" + kFormatName + "'");
  }
  int64_t version = 0;
  FUJI_RETURN_IF_ERROR(f.Int("version", &version));
  if (version != kFormatVersion) {
    return InvalidArgument(origin + ": checkpoint version " + std::to_string(version) +
                           " is not supported (this fuji reads version " +
                           std::to_string(kFormatVersion) + ")");
  }
  CheckpointMeta meta;
  FUJI_RETURN_IF_ERROR(f.Int("step", &meta.step));
  if (meta.step < 0) return f.Bad("step", "is negative");
  int64_t world = 0, zero = 0;
  FUJI_RETURN_IF_ERROR(f.Int("world_size", &world));
  if (world < 1 || world > kMaxWorldSize) {
    return f.Bad("world_size", "= " + std::to_string(world) + " is outside 1.." + std::to_string(kMaxWorldSize));
  }
  meta.world_size = static_cast<int>(world);
  FUJI_RETURN_IF_ERROR(f.Int("zero", &zero));
  if (zero < 0 || zero > 3) return f.Bad("zero", "= " + std::to_string(zero) + " is not 0, 1, 2 or 3");
  meta.zero = static_cast<int>(zero);
  FUJI_RETURN_IF_ERROR(f.String("precision", &meta.precision));
  if (meta.precision != "fp32" && meta.precision != "bf16" && meta.precision != "fp16") {
    return f.Bad("precision", "'" + meta.precision + "' is not fp32, bf16 or fp16");
  }
  FUJI_RETURN_IF_ERROR(f.Number("loss_scale", &meta.loss_scale));
  if (!(meta.loss_scale > 0)) return f.Bad("loss_scale", "is not positive");
  FUJI_RETURN_IF_ERROR(f.Int("good_steps", &meta.good_steps));
  if (meta.good_steps < 0) return f.Bad("good_steps", "is negative");
  FUJI_RETURN_IF_ERROR(f.String("model_dir", &meta.model_dir));
  FUJI_ASSIGN_OR_RETURN(const nlohmann::json* config, f.Get("config"));
  if (!config->is_object()) return f.Bad("config", "is not an object");
  meta.config = *config;
  auto parsed = engine::ParseModelConfig(meta.config, origin + ": config");
  if (!parsed.ok()) return DataLoss(parsed.status().message());
  meta.model_config = *parsed;
  FUJI_ASSIGN_OR_RETURN(const nlohmann::json* spec, f.Get("spec"));
  if (!spec->is_object()) return f.Bad("spec", "is not an object");
  meta.spec = *spec;
  FUJI_ASSIGN_OR_RETURN(const nlohmann::json* units, f.Get("units"));
  FUJI_ASSIGN_OR_RETURN(meta.units, ParseUnits(*units, origin));
  std::vector<UnitLayout> want = UnitsOf(meta.model_config);
  FUJI_RETURN_IF_ERROR(CheckUnits(meta.units, want, origin));
  meta.units = std::move(want);  // equal in what meta.json says, complete in the rest
  if (j.contains("attempt")) {
    FUJI_RETURN_IF_ERROR(f.String("attempt", &meta.attempt));
    if (!AttemptToken::Parse(meta.attempt).ok()) return f.Bad("attempt", "is not an attempt token");
  }
  return meta;
}

// "step-00000010" -> 10; -1 for anything else.
int64_t StepOfDirName(const std::string& name) {
  static const std::string kPrefix = "step-";
  int64_t step = -1;
  if (name.compare(0, kPrefix.size(), kPrefix) != 0 || name.size() < kPrefix.size() + 8) return -1;
  return ParseDecimal(name.substr(kPrefix.size()), &step) ? step : -1;
}

std::string BaseName(std::string path) {
  while (path.size() > 1 && path.back() == '/') path.pop_back();
  const size_t slash = path.rfind('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

}  // namespace

// ---- layout ------------------------------------------------------------------------------------

std::vector<UnitLayout> UnitsOf(const engine::ModelConfig& config) { return zero::Layout(config).units(); }

std::string StepDirName(int64_t step) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "step-%08lld", static_cast<long long>(step));
  return buf;
}

std::string RankFileName(int rank, int world_size) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "rank-%05d-of-%05d.safetensors", rank, world_size);
  return buf;
}

nlohmann::json CheckpointMeta::ToJson() const {
  nlohmann::json jt = nlohmann::json::array();
  for (const UnitLayout& u : units) {
    nlohmann::json params = nlohmann::json::array();
    for (const auto& p : u.params) params.push_back({{"name", p.name}, {"shape", p.shape}, {"offset", p.offset}});
    jt.push_back({{"name", u.name}, {"numel", u.numel}, {"params", std::move(params)}});
  }
  nlohmann::json j = {{"format", kFormatName},  {"version", kFormatVersion}, {"step", step},
                      {"world_size", world_size}, {"zero", zero},              {"precision", precision},
                      {"loss_scale", loss_scale}, {"good_steps", good_steps},  {"model_dir", model_dir},
                      {"config", config},         {"spec", spec},              {"units", std::move(jt)}};
  if (!attempt.empty()) j["attempt"] = attempt;
  return j;
}

// ---- fencing -----------------------------------------------------------------------------------

std::string AttemptToken::ToString() const {
  return "job " + std::to_string(job_id) + " attempt " + std::to_string(attempt) + " epoch " +
         std::to_string(lease_epoch);
}

Result<AttemptToken> AttemptToken::Parse(const std::string& text) {
  auto bad = [&] { return InvalidArgument("'" + text.substr(0, 64) + "' is not an attempt token (job J attempt A epoch E)"); };
  if (text.size() > 128) return bad();
  AttemptToken token;
  int64_t values[3] = {0, 0, 0};
  const char* words[3] = {"job ", " attempt ", " epoch "};
  size_t at = 0;
  for (int i = 0; i < 3; ++i) {
    const size_t n = std::strlen(words[i]);
    if (text.compare(at, n, words[i]) != 0) return bad();
    at += n;
    size_t end = at;
    while (end < text.size() && text[end] >= '0' && text[end] <= '9') ++end;
    if (end == at || end - at > 18 || !ParseDecimal(text.substr(at, end - at), &values[i])) return bad();
    at = end;
  }
  if (at != text.size() || values[1] > std::numeric_limits<int>::max()) return bad();
  token.job_id = values[0];
  token.attempt = static_cast<int>(values[1]);
  token.lease_epoch = values[2];
  return token;
}

namespace {

// The token in save_to/attempt; nullopt when there is none. Anything but a regular file there (a
// link planted at the name) is no claim, and is never read through: ClaimSaveDir replaces it.
Result<std::optional<AttemptToken>> ReadClaim(const std::string& save_to) {
  const std::string path = save_to + "/attempt";
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) return std::optional<AttemptToken>();
  FUJI_ASSIGN_OR_RETURN(std::string text, ReadFile(path, 4096));
  while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.pop_back();
  Result<AttemptToken> token = AttemptToken::Parse(text);
  if (!token.ok()) return DataLoss(path + ": " + token.status().message());
  return std::optional<AttemptToken>(*token);
}

Status Fenced(const std::string& save_to, const AttemptToken& mine, const std::string& owner) {
  return FailedPrecondition("fenced: " + save_to + " is written by " + owner + " now; this attempt (" +
                            mine.ToString() + ") stops without writing it");
}

}  // namespace

Status ClaimSaveDir(const std::string& save_to, const AttemptToken& token) {
  FUJI_ASSIGN_OR_RETURN(std::optional<AttemptToken> owner, ReadClaim(save_to));
  if (owner && owner->job_id == token.job_id && owner->lease_epoch > token.lease_epoch) {
    return Fenced(save_to, token, owner->ToString());
  }
  return WriteFileDurably(save_to, "attempt", token.ToString() + "\n");
}

Status CheckSaveDirClaim(const std::string& save_to, const AttemptToken& token) {
  FUJI_ASSIGN_OR_RETURN(std::optional<AttemptToken> owner, ReadClaim(save_to));
  if (!owner) return Fenced(save_to, token, "no attempt (its claim is gone)");
  if (owner->ToString() != token.ToString()) return Fenced(save_to, token, owner->ToString());
  return Status::Ok();
}

// ---- writing -----------------------------------------------------------------------------------

Status WriteRankShard(const std::string& step_dir, int rank, int world_size, int64_t step,
                      const std::vector<UnitLayout>& units, const std::vector<RankUnitState>& states) {
  if (world_size < 1 || world_size > kMaxWorldSize || rank < 0 || rank >= world_size) {
    return InvalidArgument("rank " + std::to_string(rank) + " of world size " + std::to_string(world_size) +
                           " is out of range");
  }
  if (states.size() != units.size()) {
    return InvalidArgument(std::to_string(states.size()) + " unit states for " + std::to_string(units.size()) +
                           " units");
  }
  std::vector<format::TensorSpec> specs;
  std::map<std::string, std::string> metadata = {
      {"rank", std::to_string(rank)}, {"world_size", std::to_string(world_size)}, {"step", std::to_string(step)}};
  for (size_t u = 0; u < units.size(); ++u) {
    const RankUnitState& s = states[u];
    const auto [begin, end] = PartitionRange(units[u].numel, world_size, rank);
    if (s.begin != begin || s.end != end) {
      return InvalidArgument("unit '" + units[u].name + "': rank " + std::to_string(rank) + " of " +
                             std::to_string(world_size) + " owns [" + std::to_string(begin) + ", " +
                             std::to_string(end) + "), not [" + std::to_string(s.begin) + ", " +
                             std::to_string(s.end) + ")");
    }
    metadata["u" + std::to_string(u) + ".begin"] = std::to_string(begin);
    metadata["u" + std::to_string(u) + ".end"] = std::to_string(end);
    if (end == begin) continue;
    if (!s.master || !s.exp_avg || !s.exp_avg_sq) {
      return InvalidArgument("unit '" + units[u].name + "': a null buffer for a non-empty slice");
    }
    for (int m = 0; m < 3; ++m) specs.push_back({TensorName(u, m), format::DType::kF32, {end - begin}});
  }
  FUJI_RETURN_IF_ERROR(MakeStepDir(step_dir));
  FUJI_ASSIGN_OR_RETURN(auto writer, format::SafetensorsWriter::Create(
                                         step_dir + "/" + RankFileName(rank, world_size), std::move(specs),
                                         std::move(metadata)));
  for (const RankUnitState& s : states) {
    const size_t bytes = static_cast<size_t>(s.end - s.begin) * sizeof(float);
    if (bytes == 0) continue;
    FUJI_RETURN_IF_ERROR(writer.Write(s.master, bytes));
    FUJI_RETURN_IF_ERROR(writer.Write(s.exp_avg, bytes));
    FUJI_RETURN_IF_ERROR(writer.Write(s.exp_avg_sq, bytes));
  }
  return writer.Finish();
}

Status WriteMeta(const std::string& step_dir, const CheckpointMeta& meta) {
  CheckpointMeta filled = meta;
  if (filled.units.empty() && filled.config.is_object()) {
    auto config = engine::ParseModelConfig(filled.config, "config");
    if (!config.ok()) return InvalidArgument(config.status().message());
    filled.units = UnitsOf(*config);
  }
  const nlohmann::json j = filled.ToJson();
  // What ReadMeta would refuse is refused here, before anything is written.
  auto check = ParseMeta(j, step_dir + "/meta.json");
  if (!check.ok()) return InvalidArgument(check.status().message());
  FUJI_RETURN_IF_ERROR(MakeStepDir(step_dir));
  return WriteFileDurably(step_dir, "meta.json", j.dump(1) + "\n");
}

Status PublishLatest(const std::string& save_to, const std::string& step_dir_name, const std::string& attempt) {
  if (step_dir_name.empty() || step_dir_name.find('/') != std::string::npos || step_dir_name[0] == '.') {
    return InvalidArgument("'" + step_dir_name + "' is not a step directory name");
  }
  if (!IsRegularFile(save_to + "/" + step_dir_name + "/meta.json")) {
    return FailedPrecondition(save_to + "/" + step_dir_name + ": no meta.json; not publishing it as latest");
  }
  return WriteFileDurably(save_to, "latest", step_dir_name + "\n" + (attempt.empty() ? "" : "attempt " + attempt + "\n"));
}

// ---- reading -----------------------------------------------------------------------------------

Result<std::string> ResolveStepDir(const std::string& given) {
  std::string path = given;
  while (path.size() > 1 && path.back() == '/') path.pop_back();
  if (IsRegularFile(path + "/meta.json")) return path;
  const std::string latest = path + "/latest";
  if (!PathExists(latest)) {
    if (!IsDirectory(path)) return NotFound(path + ": no such checkpoint directory");
    return NotFound(path + ": not a checkpoint: neither meta.json (a step directory) nor latest (a save directory)");
  }
  FUJI_ASSIGN_OR_RETURN(std::string name, ReadFile(latest, 4096));
  // The first line names the step; a second, if any, the attempt that wrote it.
  if (const size_t eol = name.find('\n'); eol != std::string::npos) name.resize(eol);
  while (!name.empty() && (name.back() == '\r' || name.back() == ' ')) name.pop_back();
  if (name.empty() || name.find('/') != std::string::npos || name[0] == '.' ||
      name.find('\n') != std::string::npos) {
    return DataLoss(latest + ": does not name a step directory");
  }
  const std::string step_dir = path + "/" + name;
  if (!IsRegularFile(step_dir + "/meta.json")) {
    return DataLoss(latest + ": names '" + name + "', but " + step_dir + "/meta.json does not exist");
  }
  return step_dir;
}

Result<CheckpointMeta> ReadMeta(const std::string& path) {
  FUJI_ASSIGN_OR_RETURN(std::string step_dir, ResolveStepDir(path));
  const std::string meta_path = step_dir + "/meta.json";
  FUJI_ASSIGN_OR_RETURN(std::string text, ReadFile(meta_path, 64u << 20));
  const nlohmann::json j = ParseJsonBounded(text);
  if (j.is_discarded()) return DataLoss(meta_path + ": malformed JSON (or nested deeper than 64 levels)");
  FUJI_ASSIGN_OR_RETURN(CheckpointMeta meta, ParseMeta(j, meta_path));
  const int64_t named_step = StepOfDirName(BaseName(step_dir));
  if (named_step >= 0 && named_step != meta.step) {
    return DataLoss(meta_path + ": step " + std::to_string(meta.step) + " in a directory named for step " +
                    std::to_string(named_step));
  }
  meta.step_dir = step_dir;
  return meta;
}

// One rank's file, validated against the meta; views per unit (null for an empty slice).
class CheckpointReader::RankFile {
 public:
  static Result<std::unique_ptr<RankFile>> Open(const CheckpointMeta& meta, int rank) {
    const std::string path = meta.step_dir + "/" + RankFileName(rank, meta.world_size);
    if (!PathExists(path)) {
      return DataLoss(path + ": missing; the checkpoint of " + std::to_string(meta.world_size) +
                      " ranks is incomplete");
    }
    FUJI_ASSIGN_OR_RETURN(auto file, format::SafetensorsFile::Open(path));
    auto rf = std::unique_ptr<RankFile>(new RankFile(std::move(file)));
    const auto& md = rf->file_.metadata();
    auto expect = [&](const std::string& key, int64_t want) -> Status {
      auto it = md.find(key);
      int64_t got = 0;
      if (it == md.end()) return DataLoss(path + ": metadata '" + key + "' is missing");
      if (!ParseDecimal(it->second, &got)) {
        return DataLoss(path + ": metadata '" + key + "' = '" + it->second + "' is not a number");
      }
      if (got != want) {
        return DataLoss(path + ": metadata '" + key + "' is " + std::to_string(got) + ", expected " +
                        std::to_string(want) + " (meta.json: step " + std::to_string(meta.step) +
                        ", world_size " + std::to_string(meta.world_size) + ")");
      }
      return Status::Ok();
    };
    FUJI_RETURN_IF_ERROR(expect("rank", rank));
    FUJI_RETURN_IF_ERROR(expect("world_size", meta.world_size));
    FUJI_RETURN_IF_ERROR(expect("step", meta.step));
    for (size_t u = 0; u < meta.units.size(); ++u) {
      const auto [begin, end] = PartitionRange(meta.units[u].numel, meta.world_size, rank);
      const std::string prefix = "u" + std::to_string(u);
      FUJI_RETURN_IF_ERROR(expect(prefix + ".begin", begin));
      FUJI_RETURN_IF_ERROR(expect(prefix + ".end", end));
      std::array<const format::TensorView*, 3> views{};
      for (int m = 0; m < 3 && end > begin; ++m) {
        const std::string name = TensorName(u, m);
        const format::TensorView* v = rf->file_.Find(name);
        if (!v) return DataLoss(path + ": tensor '" + name + "' is missing");
        if (v->dtype != format::DType::kF32) {
          return DataLoss(path + ": tensor '" + name + "' is " + format::DTypeName(v->dtype) + ", expected F32");
        }
        if (v->shape != std::vector<int64_t>{end - begin}) {
          return DataLoss(path + ": tensor '" + name + "' has shape " + ShapeString(v->shape) + ", expected [" +
                          std::to_string(end - begin) + "]");
        }
        views[static_cast<size_t>(m)] = v;
      }
      rf->units_.push_back(views);
    }
    return rf;
  }

  // Copies [lo, hi) of unit u, in the unit's numbering, from this rank's slice starting at `first`.
  void Copy(size_t u, int64_t first, int64_t lo, int64_t hi, float* const out[3]) const {
    for (size_t m = 0; m < 3; ++m) {
      if (!out[m]) continue;
      const uint8_t* src = units_[u][m]->data + static_cast<size_t>(lo - first) * sizeof(float);
      std::memcpy(out[m], src, static_cast<size_t>(hi - lo) * sizeof(float));
    }
  }

 private:
  explicit RankFile(format::SafetensorsFile file) : file_(std::move(file)) {}
  format::SafetensorsFile file_;
  std::vector<std::array<const format::TensorView*, 3>> units_;
};

CheckpointReader::CheckpointReader(CheckpointMeta meta) : meta_(std::move(meta)) {}
CheckpointReader::~CheckpointReader() = default;
CheckpointReader::CheckpointReader(CheckpointReader&&) noexcept = default;
CheckpointReader& CheckpointReader::operator=(CheckpointReader&&) noexcept = default;

Result<CheckpointReader> CheckpointReader::Open(const std::string& path) {
  FUJI_ASSIGN_OR_RETURN(CheckpointMeta meta, ReadMeta(path));
  return CheckpointReader(std::move(meta));
}

Result<const CheckpointReader::RankFile*> CheckpointReader::File(int rank) {
  auto it = files_.find(rank);
  if (it == files_.end()) {
    FUJI_ASSIGN_OR_RETURN(auto file, RankFile::Open(meta_, rank));
    it = files_.emplace(rank, std::move(file)).first;
  }
  return it->second.get();
}

Status CheckpointReader::Read(size_t unit_index, int64_t begin, int64_t end, float* master,
                              float* exp_avg, float* exp_avg_sq) {
  if (unit_index >= meta_.units.size()) {
    return InvalidArgument("unit " + std::to_string(unit_index) + " is out of range (" +
                           std::to_string(meta_.units.size()) + " units)");
  }
  const int64_t numel = meta_.units[unit_index].numel;
  if (begin < 0 || begin > end || end > numel) {
    return InvalidArgument("range [" + std::to_string(begin) + ", " + std::to_string(end) + ") is outside unit '" +
                           meta_.units[unit_index].name + "' of " + std::to_string(numel) + " elements");
  }
  if (begin == end) return Status::Ok();
  const int64_t shard = zero::ShardUnit(numel, meta_.world_size).shard;
  for (int64_t r = begin / shard; r <= (end - 1) / shard; ++r) {
    const int rank = static_cast<int>(r);
    const auto [first, last] = PartitionRange(numel, meta_.world_size, rank);
    const int64_t lo = std::max(begin, first), hi = std::min(end, last);
    if (lo >= hi) continue;
    FUJI_ASSIGN_OR_RETURN(const RankFile* file, File(rank));
    const size_t skip = static_cast<size_t>(lo - begin);
    float* const out[3] = {master ? master + skip : nullptr, exp_avg ? exp_avg + skip : nullptr,
                           exp_avg_sq ? exp_avg_sq + skip : nullptr};
    file->Copy(unit_index, first, lo, hi, out);
  }
  return Status::Ok();
}

Status CheckpointReader::VerifyAll() {
  for (int r = 0; r < meta_.world_size; ++r) FUJI_RETURN_IF_ERROR(File(r).status());
  return Status::Ok();
}

Status ReadRankRange(const std::string& step_dir, const CheckpointMeta& meta, size_t unit_index,
                     int64_t begin, int64_t end, float* master, float* exp_avg, float* exp_avg_sq) {
  CheckpointMeta located = meta;
  located.step_dir = step_dir;
  CheckpointReader reader(std::move(located));
  return reader.Read(unit_index, begin, end, master, exp_avg, exp_avg_sq);
}

// ---- export ------------------------------------------------------------------------------------

namespace {

Status CheckOutDir(const std::string& out_dir) {
  if (!PathExists(out_dir)) return MakeDirectories(out_dir, 0755);
  if (!IsDirectory(out_dir)) return InvalidArgument(out_dir + ": exists and is not a directory");
  DIR* d = ::opendir(out_dir.c_str());
  if (!d) return InvalidArgument(out_dir + ": " + ErrnoMessage());
  bool empty = true;
  while (const dirent* e = ::readdir(d)) {
    if (std::strcmp(e->d_name, ".") != 0 && std::strcmp(e->d_name, "..") != 0) empty = false;
  }
  ::closedir(d);
  if (!empty) return InvalidArgument(out_dir + ": exists and is not empty");
  return Status::Ok();
}

const char* TorchDTypeName(format::DType dtype) {
  switch (dtype) {
    case format::DType::kBF16: return "bfloat16";
    case format::DType::kF16: return "float16";
    default: return "float32";
  }
}

// Tokenizer files of the model directory, as WriteCheckpoint names them.
Status CopyTokenizer(const std::string& model_dir, const std::string& out_dir, std::vector<std::string>* copied) {
  if (model_dir.empty() || !IsDirectory(model_dir)) return Status::Ok();
  std::vector<std::pair<std::string, std::string>> files;  // from, name in out_dir
  if (Result<text::TokenizerFiles> gpt2 = text::FindTokenizerFiles(model_dir); gpt2.ok()) {
    files = {{gpt2->vocab, text::kVocabFile}, {gpt2->merges, text::kMergesFile}};
  }
  for (const char* name : {"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"}) {
    if (IsRegularFile(model_dir + "/" + name)) files.emplace_back(model_dir + "/" + name, name);
  }
  for (const auto& [from, name] : files) {
    FUJI_ASSIGN_OR_RETURN(std::string text, ReadFile(from, 256u << 20));
    FUJI_RETURN_IF_ERROR(WriteFileAtomically(out_dir + "/" + name, text));
    copied->push_back(name);
  }
  return Status::Ok();
}

}  // namespace

Status ExportCheckpoint(const std::string& from, const std::string& out_dir, format::DType dtype,
                        ExportReport* report) {
  if (dtype != format::DType::kF32 && dtype != format::DType::kBF16 && dtype != format::DType::kF16) {
    return InvalidArgument(std::string("cannot export as ") + format::DTypeName(dtype) + ": use fp32, bf16 or fp16");
  }
  FUJI_ASSIGN_OR_RETURN(CheckpointReader reader, CheckpointReader::Open(from));
  FUJI_RETURN_IF_ERROR(reader.VerifyAll());
  const CheckpointMeta& meta = reader.meta();
  FUJI_RETURN_IF_ERROR(CheckOutDir(out_dir));

  ExportReport local;
  ExportReport& rep = report ? *report : local;
  rep = ExportReport{};
  rep.step_dir = meta.step_dir;
  rep.step = meta.step;
  std::vector<format::TensorSpec> specs;
  for (const UnitLayout& unit : meta.units) {
    for (const auto& p : unit.params) {
      specs.push_back({p.name == "lm_head.weight" ? p.name : "transformer." + p.name, dtype, p.shape});
    }
  }
  // An exported model is made for others to load: 0644 like the rest of the export.
  FUJI_ASSIGN_OR_RETURN(auto writer, format::SafetensorsWriter::Create(out_dir + "/model.safetensors",
                                                                       std::move(specs), {{"format", "pt"}}, 0644));
  // Parameters in layout order, a bounded chunk at a time.
  constexpr int64_t kChunk = int64_t{1} << 20;
  std::vector<float> buf;
  std::vector<uint16_t> half;
  for (size_t u = 0; u < meta.units.size(); ++u) {
    const UnitLayout& unit = meta.units[u];
    for (const auto& p : unit.params) {
      const int64_t n = p.numel;
      for (int64_t done = 0; done < n; done += kChunk) {
        const int64_t len = std::min(kChunk, n - done);
        buf.resize(static_cast<size_t>(len));
        FUJI_RETURN_IF_ERROR(reader.Read(u, p.offset + done, p.offset + done + len, buf.data(), nullptr, nullptr));
        if (dtype == format::DType::kF32) {
          FUJI_RETURN_IF_ERROR(writer.Write(buf.data(), buf.size() * sizeof(float)));
          continue;
        }
        half.resize(buf.size());
        for (size_t i = 0; i < buf.size(); ++i) {
          half[i] = dtype == format::DType::kBF16 ? FloatToBf16(buf[i]) : FloatToF16(buf[i]);
        }
        FUJI_RETURN_IF_ERROR(writer.Write(half.data(), half.size() * sizeof(uint16_t)));
      }
      rep.parameters += n;
      rep.bytes += n * static_cast<int64_t>(format::DTypeSize(dtype));
    }
  }
  FUJI_RETURN_IF_ERROR(writer.Finish());
  FUJI_RETURN_IF_ERROR(CopyTokenizer(meta.model_dir, out_dir, &rep.copied));
  nlohmann::json config = meta.config;
  config["torch_dtype"] = TorchDTypeName(dtype);
  return WriteFileAtomically(out_dir + "/config.json", config.dump(2) + "\n");
}

}  // namespace fuji::ckpt
