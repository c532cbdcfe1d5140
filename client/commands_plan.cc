// `fuji plan` (the memory planner: every ZeRO stage and offload choice, bytes per GPU and host,
// fits or why not, step time, the recommended plan) and `fuji estimate` (time to train), in
// process: the planner is torch-free arithmetic. `fuji estimate --job` asks fujid for the rate and
// corpus a fine-tuning job measured.
#include <algorithm>
#include <cstdio>
#include <memory>
#include <optional>
#include <vector>

#include <nlohmann/json.hpp>

#include "client/cli.h"
#include "client/daemon_client.h"
#include "client/daemon_commands.h"
#include "client/format_jobs.h"
#include "client/local_plan.h"
#include "worker/data/token_cache.h"
#include "worker/launcher/finetune_prepare.h"
#include "lib/plan/plan.h"
#include "lib/spec/finetune_spec.h"
#include "lib/text/bpe_tokenizer.h"

namespace fuji::client {
namespace {

struct PlanFlags {
  std::string model, mode = "finetune", gpu_memory, host_memory, precision = "bf16", device = "cuda";
  std::string output = "table";
  int gpus = 1;
  int64_t seq_len = 0, micro_batch = 1;
  bool activation_checkpointing = false;
  bool measure = false;  // this machine's rates (a fuji-rank measures them) instead of plan.h's
};

struct EstimateFlags {
  double tokens_per_s = 0, corpus_tokens = 0, epochs = 1;
  std::string corpus, output = "text";
  ServerFlags server;
  int gpus = 1, measured_gpus = 1;
  int64_t job = 0;
  bool has_job = false, has_rate = false, has_gpus = false;  // which flags were given
};

// What a fine-tuning job measured, and how.
struct JobMeasure {
  double tokens_per_s = 0;  // global, on `gpus` devices
  int gpus = 1;
  double corpus_tokens = 0;
  std::string rate_from;    // "its latest progress" | "the median of 6 train steps"
  std::string corpus_from;  // "progress" | "result"
};

double GiB(int64_t bytes) { return static_cast<double>(bytes) / (1024.0 * 1024 * 1024); }

std::string Describe(const plan::Plan& p) { return "zero " + std::to_string(p.zero) + ", offload " + p.offload; }

std::string FormatTable(const plan::PlanRequest& r, const std::string& model, const std::vector<plan::Plan>& plans,
                        const std::optional<plan::Plan>& best) {
  std::string out;
  char line[512];
  const bool cuda = r.device == plan::DeviceKind::kCuda;
  std::snprintf(line, sizeof line, "%s %s on %d x %s, %s, seq-len %lld, micro-batch %lld%s: %.2fB parameters\n",
                model.c_str(), r.mode.c_str(), r.gpus,
                cuda ? (plan::FormatGiB(r.gpu_memory_bytes) + " GPUs").c_str() : "CPU ranks", r.precision.c_str(),
                static_cast<long long>(r.seq_len), static_cast<long long>(r.micro_batch),
                r.activation_checkpointing ? ", activation checkpointing" : "",
                static_cast<double>(r.config.NumParameters()) / 1e9);
  out += line;
  std::snprintf(line, sizeof line, "  %-4s %-9s %9s %8s %8s %8s %8s %9s %-4s %9s\n", "zero", "offload",
                cuda ? "GPU GiB" : "dev GiB", "params", "grads", "optim", "activ", "host GiB", "fits", "step s");
  out += line;
  for (const plan::Plan& p : plans) {
    const plan::Breakdown& b = p.breakdown;
    const bool chosen = best && best->zero == p.zero && best->offload == p.offload;
    std::snprintf(line, sizeof line, "%s %-4d %-9s %9.1f %8.1f %8.1f %8.1f %8.1f %9.1f %-4s %9.3g\n", chosen ? "*" : " ",
                  p.zero, p.offload.c_str(), GiB(p.gpu_bytes), GiB(b.params_device), GiB(b.grads_device),
                  GiB(b.optimizer_device), GiB(b.activations + b.kv_cache), GiB(p.host_bytes), p.fits ? "yes" : "no",
                  p.step_seconds);
    out += line;
  }
  if (best) {
    out += "* recommended: " + Describe(*best) + " (the fastest plan that fits)\n";
  } else {
    out += "no plan fits\n";
  }
  bool header = false;
  for (const plan::Plan& p : plans) {
    if (p.fits) continue;
    if (!header) out += "why the others do not fit:\n";
    header = true;
    out += "  " + Describe(p) + ": " + p.why_not + "\n";
  }
  return out;
}

Status RunPlan(const PlanFlags& f) {
  plan::PlanRequest r;
  FUJI_ASSIGN_OR_RETURN(r.config, plan::ResolveModel(f.model, &r.checkpoint_bytes));
  r.mode = f.mode;
  r.gpus = f.gpus;
  r.precision = f.precision;
  r.device = f.device == "cpu" ? plan::DeviceKind::kCpu : plan::DeviceKind::kCuda;
  if (!f.gpu_memory.empty()) {
    FUJI_ASSIGN_OR_RETURN(r.gpu_memory_bytes, plan::ParseSize(f.gpu_memory));
  } else if (r.device == plan::DeviceKind::kCuda) {
    return InvalidArgument("--gpu-memory is required (the memory of one GPU, e.g. 40GiB or 80GB)");
  }
  if (!f.host_memory.empty()) {
    FUJI_ASSIGN_OR_RETURN(r.host_memory_bytes, plan::ParseSize(f.host_memory));
  }
  r.seq_len = f.seq_len != 0 ? f.seq_len : std::min<int64_t>(2048, r.config.n_positions);
  r.micro_batch = f.micro_batch;
  r.activation_checkpointing = f.activation_checkpointing;
  if (f.measure) r.rates = MeasuredRates();
  FUJI_ASSIGN_OR_RETURN(std::vector<plan::Plan> plans, plan::PlanAll(r));
  const std::optional<plan::Plan> best = plan::Recommend(plans);
  if (f.output == "json") {
    nlohmann::json j = {{"model", f.model},
                        {"parameters", r.config.NumParameters()},
                        {"mode", r.mode},
                        {"gpus", r.gpus},
                        {"gpu_memory_bytes", r.gpu_memory_bytes},
                        {"host_memory_bytes", r.host_memory_bytes},
                        {"precision", r.precision},
                        {"seq_len", r.seq_len},
                        {"micro_batch", r.micro_batch},
                        {"device", f.device},
                        {"plans", nlohmann::json::array()},
                        {"recommended", nullptr}};
    for (const plan::Plan& p : plans) j["plans"].push_back(plan::PlanToJson(p));
    if (best) j["recommended"] = plan::PlanToJson(*best);
    std::printf("%s\n", j.dump(2).c_str());
  } else {
    std::printf("%s", FormatTable(r, f.model, plans, best).c_str());
  }
  return Status::Ok();
}

Result<double> CorpusTokens(const std::string& path) {
  const std::string vocab = launch::DefaultVocabDir();
  FUJI_ASSIGN_OR_RETURN(text::BpeTokenizer tokenizer, text::BpeTokenizer::LoadFromDir(vocab));
  FUJI_ASSIGN_OR_RETURN(data::TokenCache cache,
                        data::TokenCache::Open(path, vocab, tokenizer, DefaultTokenCacheDir()));
  return static_cast<double>(cache.num_tokens());
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 == 1 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

// A running job's rate is its latest progress's; a finished one's the median of its stored train
// steps' rates. The corpus size comes from the progress, else from the job's latest result.
Result<JobMeasure> MeasureJob(DaemonClient& client, int64_t id) {
  FUJI_ASSIGN_OR_RETURN(const v1::Job job, client.GetJob(id));
  const std::string name = "job " + std::to_string(id);
  if (job.kind() != "finetune") return InvalidArgument(name + " is an " + job.kind() + " job: --job takes a fine-tuning job");
  JobMeasure m;
  m.gpus = std::max(1, job.devices());
  const v1::Progress& p = job.progress();
  if (job.state() == v1::RUNNING && p.phase() == "train" && p.tokens_per_s() > 0) {
    m.tokens_per_s = p.tokens_per_s();
    m.rate_from = "its latest progress";
  } else {
    FUJI_ASSIGN_OR_RETURN(const std::vector<v1::LossPoint> points, client.GetLosses(id, "train"));
    std::vector<double> rates;
    for (const v1::LossPoint& point : points) {
      if (point.tokens_per_s() > 0) rates.push_back(point.tokens_per_s());
    }
    if (rates.empty()) return FailedPrecondition(name + " has no measured tokens/s yet (it has not finished a step)");
    m.tokens_per_s = Median(rates);
    m.rate_from = "the median of " + std::to_string(rates.size()) + " train steps";
  }
  if (p.corpus_tokens() > 0) {
    m.corpus_tokens = static_cast<double>(p.corpus_tokens());
    m.corpus_from = "progress";
  } else {
    Result<nlohmann::json> result = FetchJobResult(client, id);
    if (!result.ok() && result.status().code() != StatusCode::kNotFound) return result.status();
    const nlohmann::json corpus = result.ok() ? result->value("corpus_tokens", nlohmann::json()) : nlohmann::json();
    if (corpus.is_number() && corpus.get<double>() > 0) {
      m.corpus_tokens = corpus.get<double>();
      m.corpus_from = "result";
    }
  }
  if (m.corpus_tokens <= 0) {
    return FailedPrecondition(name + " (" + JobStateName(job.state()) +
                              "): neither its progress nor a result says the size of its corpus; give "
                              "--tokens-per-s and --corpus instead");
  }
  return m;
}

Status RunEstimate(const EstimateFlags& f) {
  if (f.gpus < 1 || f.measured_gpus < 1) return InvalidArgument("--gpus and --measured-gpus must be at least 1");
  std::optional<JobMeasure> job;
  double tokens = f.corpus_tokens, measured_rate = f.tokens_per_s;
  int gpus = f.gpus, measured_gpus = f.measured_gpus;
  if (f.has_job) {
    if (f.has_rate || f.corpus_tokens > 0 || !f.corpus.empty()) {
      return InvalidArgument("--job takes the rate and corpus from the job: give no --tokens-per-s, --corpus-tokens or --corpus with it");
    }
    DaemonClient client(f.server);
    FUJI_ASSIGN_OR_RETURN(job, MeasureJob(client, f.job));
    tokens = job->corpus_tokens;
    measured_rate = job->tokens_per_s;
    measured_gpus = job->gpus;
    if (!f.has_gpus) gpus = job->gpus;
  } else {
    if (!f.has_rate) return InvalidArgument("give --tokens-per-s (a measured rate) or --job ID (a fine-tuning job's)");
    if ((f.corpus_tokens > 0) == !f.corpus.empty()) return InvalidArgument("give one of --corpus-tokens and --corpus");
    if (!f.corpus.empty()) {
      FUJI_ASSIGN_OR_RETURN(tokens, CorpusTokens(f.corpus));
    }
  }
  // Data parallelism scales the rate with the GPUs (linear: an assumption; communication grows).
  const double rate = measured_rate * static_cast<double>(gpus) / static_cast<double>(measured_gpus);
  FUJI_ASSIGN_OR_RETURN(plan::TrainingEstimate e, plan::EstimateTraining(rate, tokens, f.epochs));
  if (f.output == "json") {
    nlohmann::json j = {{"corpus_tokens", tokens}, {"epochs", f.epochs},       {"gpus", gpus},
                        {"tokens_per_s", rate},    {"tokens", e.tokens},       {"seconds", e.seconds},
                        {"duration", plan::FormatDuration(e.seconds)}};
    if (job) {
      j["job"] = {{"id", f.job},           {"tokens_per_s", job->tokens_per_s}, {"gpus", job->gpus},
                  {"rate_from", job->rate_from}, {"corpus_from", job->corpus_from}};
    }
    std::printf("%s\n", j.dump(2).c_str());
  } else {
    if (job) {
      std::printf("job %lld: %.0f tokens/s on %d devices (%s), a corpus of %.0f tokens (from its %s)\n",
                  static_cast<long long>(f.job), job->tokens_per_s, job->gpus, job->rate_from.c_str(), tokens,
                  job->corpus_from.c_str());
    }
    std::printf("%.0f tokens (%g %s of %.0f) at %.0f tokens/s on %d GPUs: %s\n", e.tokens, f.epochs,
                f.epochs == 1 ? "epoch" : "epochs", tokens, rate, gpus, plan::FormatDuration(e.seconds).c_str());
  }
  return Status::Ok();
}

}  // namespace

void RegisterPlanCommands(CLI::App& app, CliState* state) {
  auto f = std::make_shared<PlanFlags>();
  CLI::App* cmd = app.add_subcommand("plan", "Predict memory per GPU and host and step time for every ZeRO stage and offload");
  cmd->add_option("--model", f->model, "a named architecture (13b, cerebras-gpt-2.7b, ...) or a checkpoint directory")
      ->required();
  cmd->add_option("--mode", f->mode, "finetune or infer")->check(CLI::IsMember({"finetune", "infer"}));
  cmd->add_option("--gpus", f->gpus, "GPUs (data-parallel ranks)");
  cmd->add_option("--gpu-memory", f->gpu_memory,
                  "memory of one GPU: 40GiB, 40G, 512MiB, 512M are binary (2^30, 2^20); 40GB, 512MB decimal");
  cmd->add_option("--host-memory", f->host_memory, "host memory, same units (default: unlimited)");
  cmd->add_option("--precision", f->precision, "fp32, bf16 or fp16")->check(CLI::IsMember({"fp32", "bf16", "fp16"}));
  cmd->add_option("--seq-len", f->seq_len, "tokens per sequence (default: n_positions, at most 2048)");
  cmd->add_option("--micro-batch", f->micro_batch, "sequences per GPU per step");
  cmd->add_flag("--activation-checkpointing", f->activation_checkpointing, "recompute each block in backward");
  cmd->add_option("--device", f->device, "cuda or cpu (CPU ranks)")->check(CLI::IsMember({"cuda", "cpu"}));
  cmd->add_option("--output", f->output, "table or json")->check(CLI::IsMember({"table", "json"}));
  cmd->add_flag("--measure", f->measure,
                "step times with this machine's measured rates (a fuji-rank measures them) instead of the defaults");
  cmd->callback([state, f] { state->exit_code = ReportStatus(RunPlan(*f)); });

  auto e = std::make_shared<EstimateFlags>();
  CLI::App* est = app.add_subcommand("estimate", "Wall time to train E epochs of a corpus at a measured tokens/s");
  est->add_option("--tokens-per-s", e->tokens_per_s, "measured training tokens/s (or --job)");
  est->add_option("--job", e->job, "a fine-tuning job of fujid: its measured tokens/s, devices and corpus");
  AddServerOption(est, &e->server);
  est->add_option("--measured-gpus", e->measured_gpus, "GPUs the rate was measured on (default 1)");
  est->add_option("--corpus-tokens", e->corpus_tokens, "tokens in the corpus");
  est->add_option("--corpus", e->corpus, "a text file, JSONL or directory, tokenized (and cached) to count its tokens");
  est->add_option("--epochs", e->epochs, "epochs (default 1)");
  est->add_option("--gpus", e->gpus, "GPUs to train on (default 1; with --job the job's devices)");
  est->add_option("--output", e->output, "text or json")->check(CLI::IsMember({"text", "json"}));
  est->callback([state, e, est] {
    e->has_job = est->count("--job") > 0;
    e->has_rate = est->count("--tokens-per-s") > 0;
    e->has_gpus = est->count("--gpus") > 0;
    state->exit_code = ReportStatus(RunEstimate(*e));
  });
}

}  // namespace fuji::client
