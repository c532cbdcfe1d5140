// Fine-tuning specification parsing and checks.
#include "lib/spec/finetune_spec.h"

#include <algorithm>
#include <cstdlib>

#include "lib/spec/field_reader.h"

namespace fuji {
namespace {

using spec_internal::FieldReader;

constexpr int64_t kMaxSteps = 10'000'000;
constexpr int64_t kMaxKeepLast = 1'000'000;

// An int field through the reader's int64_t range check.
void ReadInt(FieldReader& r, const char* key, int* out, int64_t min, int64_t max) {
  int64_t v = *out;
  r.Int(key, &v, min, max);
  *out = static_cast<int>(v);
}

// A path: a string without NUL bytes; a required one must be non-empty ("" means unset otherwise).
void ReadPath(FieldReader& r, const char* key, std::string* out, bool required) {
  r.String(key, out);
  if (!r.status().ok()) return;
  if (out->find('\0') != std::string::npos) return r.Fail(key, "holds a NUL byte");
  if (required && out->empty()) r.Fail(key, "is required and must be a non-empty path");
}

Status CheckRendezvous(const std::string& rv) {
  if (rv.empty()) return Status::Ok();
  if (rv.rfind("file:/", 0) == 0 && rv.size() > 6) return Status::Ok();
  if (rv.rfind("tcp:", 0) == 0) {
    const size_t colon = rv.rfind(':');
    const std::string port = rv.substr(colon + 1);
    if (colon > 4 && !port.empty() && port.size() <= 5 && port.find_first_not_of("0123456789") == std::string::npos &&
        std::stoi(port) > 0 && std::stoi(port) < 65536) {
      return Status::Ok();
    }
  }
  return InvalidArgument("field 'rendezvous' '" + rv + "' is not file:/ABS/PATH or tcp:HOST:PORT");
}

}  // namespace

nlohmann::json FinetuneSpec::ToJson() const {
  return {{"model", model},
          {"data", data},
          {"token_cache", token_cache},
          {"cache_dir", cache_dir},
          {"ranks", ranks},
          {"rank", rank},
          {"rendezvous", rendezvous},
          {"nodes", nodes},
          {"node", node},
          {"bind_addr", bind_addr},
          {"device", device},
          {"backend", backend},
          {"random_init", random_init},
          {"zero", zero},
          {"offload", offload},
          {"precision", precision},
          {"seq_len", seq_len},
          {"micro_batch", micro_batch},
          {"grad_accum", grad_accum},
          {"steps", steps},
          {"lr", lr},
          {"min_lr", min_lr},
          {"warmup_steps", warmup_steps},
          {"weight_decay", weight_decay},
          {"clip", clip},
          {"beta1", beta1},
          {"beta2", beta2},
          {"eps", eps},
          {"eval_every", eval_every},
          {"eval_batches", eval_batches},
          {"holdout", holdout},
          {"activation_checkpointing", activation_checkpointing},
          {"save_to", save_to},
          {"save_every", save_every},
          {"resume", resume},
          {"stop_after", stop_after},
          {"keep_last", keep_last},
          {"seed", seed},
          {"initial_loss_scale", initial_loss_scale},
          {"loss_scale_window", loss_scale_window},
          {"collective_timeout_ms", collective_timeout_ms},
          {"threads", threads}};
}

Result<FinetuneSpec> FinetuneSpec::FromJson(const nlohmann::json& j) {
  if (!j.is_object()) return InvalidArgument("finetune spec is not a JSON object");
  FinetuneSpec s;
  FieldReader r(j);
  ReadPath(r, "model", &s.model, true);
  ReadPath(r, "data", &s.data, true);
  ReadPath(r, "token_cache", &s.token_cache, false);
  ReadPath(r, "cache_dir", &s.cache_dir, false);
  ReadPath(r, "save_to", &s.save_to, false);
  ReadInt(r, "ranks", &s.ranks, 1, kMaxFinetuneRanks);
  ReadInt(r, "rank", &s.rank, 0, kMaxFinetuneRanks - 1);
  r.String("rendezvous", &s.rendezvous);
  ReadInt(r, "nodes", &s.nodes, 0, kMaxFinetuneRanks);
  r.String("node", &s.node);
  r.String("bind_addr", &s.bind_addr);
  if (s.node.size() > 256) r.Fail("node", "is longer than 256 bytes");
  if (s.bind_addr.size() > 256) r.Fail("bind_addr", "is longer than 256 bytes");
  r.OneOf("device", &s.device, {"cpu", "cuda"});
  r.OneOf("backend", &s.backend, {"auto", "gloo", "nccl"});
  r.String("random_init", &s.random_init);
  if (const auto it = j.find("zero"); it != j.end() && it->is_number_integer() &&
                                      (it->get<int64_t>() < 0 || it->get<int64_t>() > 3)) {
    r.Fail("zero", "must be 0, 1, 2 or 3, not " + std::to_string(it->get<int64_t>()));
  }
  ReadInt(r, "zero", &s.zero, 0, 3);
  r.OneOf("offload", &s.offload, {"none", "optimizer", "params"});
  r.OneOf("precision", &s.precision, {"fp32", "bf16", "fp16"});
  r.Int("seq_len", &s.seq_len, 1, 65536);
  if (const auto it = j.find("micro_batch"); it != j.end() && it->is_number_integer() && it->get<int64_t>() < 1) {
    r.Fail("micro_batch", "must be at least 1");
  }
  r.Int("micro_batch", &s.micro_batch, 1, 1 << 20);
  r.Int("grad_accum", &s.grad_accum, 1, 4096);
  r.Int("steps", &s.steps, 1, kMaxSteps);
  r.Double("lr", &s.lr, 0.0, 1.0);
  if (s.lr <= 0) r.Fail("lr", "must be above 0 and at most 1");
  r.Double("min_lr", &s.min_lr, -1.0, 1.0);
  r.Double("warmup_steps", &s.warmup_steps, -1.0, static_cast<double>(kMaxSteps));
  r.Double("weight_decay", &s.weight_decay, 0.0, 10.0);
  r.Double("clip", &s.clip, 0.0, 1e9);
  r.Double("beta1", &s.beta1, 0.0, 0.999999);
  r.Double("beta2", &s.beta2, 0.0, 0.999999999);
  r.Double("eps", &s.eps, 1e-30, 1.0);
  if (s.eps <= 0) r.Fail("eps", "must be above 0");
  r.Int("eval_every", &s.eval_every, 0, kMaxSteps);
  r.Int("eval_batches", &s.eval_batches, 1, 1 << 20);
  r.Double("holdout", &s.holdout, 0.0, 0.5);
  r.Bool("activation_checkpointing", &s.activation_checkpointing);
  r.Int("save_every", &s.save_every, 0, kMaxSteps);
  r.OneOf("resume", &s.resume, {"auto", "never"});
  r.Int("stop_after", &s.stop_after, 0, kMaxSteps);
  r.Int("keep_last", &s.keep_last, -1, kMaxKeepLast);
  r.Uint("seed", &s.seed);
  r.Double("initial_loss_scale", &s.initial_loss_scale, 1.0, 4294967296.0);
  r.Int("loss_scale_window", &s.loss_scale_window, 1, kMaxSteps);
  r.Int("collective_timeout_ms", &s.collective_timeout_ms, 1000, 3600000);
  ReadInt(r, "threads", &s.threads, 0, 4096);
  FUJI_RETURN_IF_ERROR(r.status());
  if (s.rank >= s.ranks) {
    return InvalidArgument("field 'rank' " + std::to_string(s.rank) + " is not below ranks " + std::to_string(s.ranks));
  }
  if (s.nodes > s.ranks || (s.nodes > 0 && s.ranks % s.nodes != 0)) {
    return InvalidArgument("field 'nodes' " + std::to_string(s.nodes) + " must divide ranks " +
                           std::to_string(s.ranks) + " evenly");
  }
  if (s.offload == "params" && s.zero != 3) {
    return InvalidArgument("field 'offload' params needs zero 3 (zero is " + std::to_string(s.zero) + ")");
  }
  if (s.min_lr > s.lr) return InvalidArgument("field 'min_lr' is above lr");
  FUJI_RETURN_IF_ERROR(CheckRendezvous(s.rendezvous));
  return s;
}

double FinetuneSpec::EffectiveMinLr() const { return min_lr < 0 ? lr / 10 : min_lr; }

int64_t FinetuneSpec::EffectiveWarmupSteps() const {
  return warmup_steps < 0 ? std::min<int64_t>(100, steps / 10) : static_cast<int64_t>(warmup_steps);
}

std::string DefaultTokenCacheDir() {
  if (const char* xdg = std::getenv("XDG_CACHE_HOME"); xdg != nullptr && xdg[0] == '/') {
    return std::string(xdg) + "/fuji/tokens";
  }
  if (const char* home = std::getenv("HOME"); home != nullptr && home[0] == '/') {
    return std::string(home) + "/.cache/fuji/tokens";
  }
  return "/tmp/fuji-tokens";
}

}  // namespace fuji
