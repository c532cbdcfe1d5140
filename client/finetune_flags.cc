// Fine-tuning flags, spec building and formatting shared by `run finetune` and `submit finetune`.
#include "client/finetune_flags.h"

#include <unistd.h>

#include <cstdio>
#include <cstdlib>

#include "client/local_plan.h"
#include "lib/common/file_util.h"
#include "lib/spec/plan_fields.h"

namespace fuji::client {
namespace {

std::string Printf(const char* format, double a) {
  char buf[64];
  std::snprintf(buf, sizeof buf, format, a);
  return buf;
}

std::string Mib(const nlohmann::json& memory, const char* key) {
  const auto it = memory.find(key);
  if (it == memory.end() || !it->is_number()) return "-";
  return Printf("%.0f MiB", it->get<double>() / (1 << 20));
}

}  // namespace

void AddFinetuneFlags(CLI::App* cmd, FinetuneFlags* f) {
  FinetuneSpec& s = f->spec;
  cmd->add_option("--model", s.model, "Checkpoint directory to start from")->required();
  cmd->add_option("--data", s.data, "Text file, .jsonl with \"text\", or a directory of them")->required();
  cmd->add_option("--ranks", s.ranks, "Data-parallel ranks (1..64)");
  cmd->add_option("--nodes", s.nodes,
                  "Agents the ranks span (fuji submit): 0 = as few as hold them; K = exactly K, ranks / K on each");
  cmd->add_option("--device", s.device, "cpu or cuda (rank r uses GPU r % GPUs)");
  cmd->add_option("--zero", f->zero, "ZeRO stage 0, 1, 2 or 3, or auto (fujid's scheduler picks)")
      ->check(CLI::IsMember({"auto", "0", "1", "2", "3"}));
  cmd->add_option("--offload", f->offload,
                  "none, optimizer or params (params needs --zero 3), or auto (fujid's scheduler picks)")
      ->check(CLI::IsMember({"auto", "none", "optimizer", "params"}));
  cmd->add_option("--precision", s.precision, "fp32, bf16 or fp16");
  cmd->add_option("--seq-len", s.seq_len, "Tokens per block");
  cmd->add_option("--micro-batch", s.micro_batch, "Blocks per rank per forward");
  cmd->add_option("--grad-accum", s.grad_accum, "Micro-batches per step");
  cmd->add_option("--steps", s.steps, "Optimizer steps");
  cmd->add_option("--lr", s.lr, "Peak learning rate");
  cmd->add_option("--save-to", s.save_to, "Directory for sharded checkpoints");
  cmd->add_option("--warmup-steps", s.warmup_steps, "Warmup steps (default min(100, steps/10))");
  cmd->add_option("--min-lr", s.min_lr, "Learning rate at the end of the cosine (default lr/10)");
  cmd->add_option("--weight-decay", s.weight_decay, "AdamW weight decay (not on biases and LayerNorms)");
  cmd->add_option("--clip", s.clip, "Gradient norm clip (0: off)");
  cmd->add_option("--eval-every", s.eval_every, "Held-out loss every K steps (0: after the last)");
  cmd->add_option("--eval-batches", s.eval_batches, "Held-out micro-batches per evaluation");
  cmd->add_option("--holdout", s.holdout, "Fraction of blocks held out (0..0.5)");
  cmd->add_flag("--activation-checkpointing", s.activation_checkpointing, "Recompute each block in backward");
  cmd->add_option("--save-every", s.save_every, "Checkpoint every K steps (0: after the last)");
  cmd->add_option("--resume", s.resume, "auto (continue from --save-to's latest) or never");
  cmd->add_option("--stop-after", s.stop_after, "Stop after this step (the schedule still uses --steps)");
  cmd->add_option("--keep-last", s.keep_last,
                  "Keep the newest N complete checkpoints of --save-to, removing older ones (0: keep all; "
                  "default: the agent's --keep-last, else all)")
      ->check(CLI::Range(int64_t{0}, int64_t{1000000}));
  cmd->add_option("--seed", s.seed, "Seed of the data order");
  cmd->add_option("--threads", s.threads, "Intra-op threads per rank (0: cores / ranks)");
  cmd->add_option("--collective-timeout-ms", s.collective_timeout_ms, "Timeout of one collective");
  cmd->add_option("--cache-dir", s.cache_dir, "Token cache directory (default ~/.cache/fuji/tokens)");
  cmd->add_option("--output", f->output, "text or json")->check(CLI::IsMember({"text", "json"}));
}

namespace {

// The spec's JSON with absolute paths, and the plan fields as the flags give them.
nlohmann::json SpecJson(const FinetuneFlags& f) {
  FinetuneSpec spec = f.spec;
  spec.model = AbsolutePath(spec.model);
  spec.data = AbsolutePath(spec.data);
  spec.save_to = AbsolutePath(spec.save_to);
  spec.cache_dir = AbsolutePath(spec.cache_dir);
  nlohmann::json j = spec.ToJson();
  j["zero"] = f.zero == kAuto ? nlohmann::json(kAuto) : nlohmann::json(std::atoi(f.zero.c_str()));
  j["offload"] = f.offload;
  return j;
}

}  // namespace

Result<FinetuneSpec> FinetuneSpecFromFlags(const FinetuneFlags& f) {
  FUJI_ASSIGN_OR_RETURN(nlohmann::json spec, FinetuneSubmitSpec(f));
  FUJI_ASSIGN_OR_RETURN(spec, ResolveLocalPlan("finetune", ApplyCpuOffloadRule(std::move(spec), true)));
  return FinetuneSpec::FromJson(spec);
}

Result<nlohmann::json> FinetuneSubmitSpec(const FinetuneFlags& f) {
  nlohmann::json j = SpecJson(f);
  PlanFields fields;
  FUJI_RETURN_IF_ERROR(FinetuneSpecWithAuto(j, &fields).status());
  return j;
}

std::string FormatLossEvent(const nlohmann::json& e, int64_t total_steps) {
  if (e.value("event", "") != "loss") return "";
  const std::string step = "step " + std::to_string(e.value("step", int64_t{0})) + "/" + std::to_string(total_steps);
  if (e.value("split", "train") == "eval") return step + "  eval loss " + Printf("%.4f", e.value("loss", 0.0));
  std::string line = step + "  loss " + Printf("%.4f", e.value("loss", 0.0));
  if (e.contains("lr")) line += "  lr " + Printf("%.1e", e.value("lr", 0.0));
  if (e.contains("tokens_per_s")) line += "  " + Printf("%.0f", e.value("tokens_per_s", 0.0)) + " tok/s";
  if (e.value("skipped", false)) line += "  (skipped: overflow)";
  return line;
}

std::string FormatFinetuneSummary(const nlohmann::json& r) {
  std::string out;
  const nlohmann::json losses = r.value("losses", nlohmann::json::array());
  const nlohmann::json evals = r.value("eval_losses", nlohmann::json::array());
  out += "steps " + std::to_string(r.value("start_step", int64_t{0})) + ".." + std::to_string(r.value("steps", int64_t{0}));
  if (!losses.empty()) out += "  final loss " + Printf("%.4f", losses.back().value("loss", 0.0));
  if (!evals.empty()) out += "  eval loss " + Printf("%.4f", evals.back().value("loss", 0.0));
  out += "  " + Printf("%.0f", r.value("tokens_per_s", 0.0)) + " tok/s\n";
  const nlohmann::json ranks = r.value("memory", nlohmann::json::object()).value("ranks", nlohmann::json::array());
  for (size_t i = 0; i < ranks.size(); ++i) {
    out += "rank " + std::to_string(i) + ": peak device " + Mib(ranks[i], "peak_device_bytes") + ", peak RSS " +
           Mib(ranks[i], "peak_rss_bytes") + "\n";
  }
  if (!r.value("checkpoint", "").empty()) out += "checkpoint " + r.value("checkpoint", "") + "\n";
  return out;
}

}  // namespace fuji::client
