// `fuji report JOB...` and `fuji study`: the seed study in one command. The study submits,
// through fujid, an inference job per model with the seed's prompt and a short fine-tune per
// model, waits for them, and writes the report (client/report.h) from what the daemon stored.
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <cstdio>
#include <memory>
#include <sstream>
#include <thread>

#include "client/cli.h"
#include "client/daemon_client.h"
#include "client/daemon_commands.h"
#include "client/local_runner.h"
#include "client/report.h"
#include "lib/common/file_util.h"
#include "lib/model/model_config.h"
#include "lib/spec/finetune_spec.h"
#include "lib/spec/job_spec.h"
#include "lib/spec/plan_fields.h"

namespace fuji::client {
namespace {

constexpr char kSeedPrompt[] =
    "There are famous mountain like Mt.Fuji in Japan. Please tell me highest mountain in the world.";
// Japanese Wikipedia, the seed study's corpus: its size is not in the study; this is the order of
// magnitude of a jawiki text dump in GPT-2 tokens, an assumption the report states.
constexpr double kSeedCorpusTokens = 1.5e9;

std::string ShellQuote(const std::string& s) {
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

std::vector<std::string> SplitList(const std::string& text) {
  std::vector<std::string> out;
  std::stringstream ss(text);
  for (std::string item; std::getline(ss, item, ',');) {
    if (!item.empty()) out.push_back(item);
  }
  return out;
}

Result<int64_t> SubmitSpec(DaemonClient& client, const std::string& kind, const nlohmann::json& spec) {
  v1::SubmitRequest request;
  request.set_kind(kind);
  request.set_spec_json(spec.dump());
  request.set_max_attempts(1);
  FUJI_ASSIGN_OR_RETURN(v1::Job job, client.Submit(request));
  return job.id();
}

// Polls until every job is terminal.
Status WaitAll(DaemonClient& client, const std::vector<int64_t>& ids) {
  for (int64_t id : ids) {
    for (;;) {
      FUJI_ASSIGN_OR_RETURN(v1::Job job, client.GetJob(id));
      const auto s = job.state();
      if (s == v1::SUCCEEDED || s == v1::FAILED || s == v1::CANCELLED) {
        std::fprintf(stderr, "job %lld (%s): %s%s%s\n", static_cast<long long>(id), job.kind().c_str(),
                     v1::JobState_Name(s).c_str(), job.reason().empty() ? "" : ": ", job.reason().c_str());
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(500));
    }
  }
  return Status::Ok();
}

struct ReportFlags {
  ServerFlags server;
  std::string out = "report";
  std::vector<int64_t> ids;
  double corpus_tokens = kSeedCorpusTokens, epochs = 1;
};

int RunReport(const ReportFlags& f) {
  DaemonClient client(f.server);
  std::vector<JobData> jobs;
  for (int64_t id : f.ids) {
    auto d = FetchJob(client, id);
    if (!d.ok()) return ReportStatus(d.status().WithContext("job " + std::to_string(id)));
    jobs.push_back(std::move(*d));
  }
  ReportOptions options;
  options.out_dir = AbsolutePath(f.out);
  options.corpus_tokens = f.corpus_tokens;
  options.epochs = f.epochs;
  auto path = WriteReport(jobs, options);
  if (!path.ok()) return ReportStatus(path.status());
  std::printf("%s\n", path->c_str());
  return 0;
}

struct StudyFlags {
  ServerFlags server;
  std::string models, device = "cpu", out = "study", precision;
  std::vector<std::string> weights;
  int64_t steps = 4, seq_len = 64, max_new_tokens = 32;
  int ranks = 1;
};

int RunStudy(const StudyFlags& f) {
  std::vector<std::string> models =
      SplitList(f.models.empty() ? (f.device == "cuda" ? "111m,256m,590m,1.3b,2.7b,6.7b,13b" : "111m") : f.models);
  if (models.empty()) return ReportStatus(InvalidArgument("--models: give at least one model"));
  if (!f.weights.empty() && f.weights.size() != models.size()) {
    return ReportStatus(InvalidArgument("--weights: one directory per model of --models (" +
                                        std::to_string(models.size()) + ")"));
  }
  if (f.steps < 1 || f.seq_len < 1 || f.ranks < 1) {
    return ReportStatus(InvalidArgument("--steps, --seq-len and --ranks must be at least 1"));
  }
  const std::string out = AbsolutePath(f.out);
  const std::string precision = !f.precision.empty() ? f.precision : f.device == "cuda" ? "bf16" : "fp32";
  DaemonClient client(f.server);
  std::vector<int64_t> ids;
  std::vector<std::pair<std::string, bool>> labels;  // per job: model label, random weights
  // The fine-tunes' data: Japanese text from manpages-ja, as the tests use.
  const std::string data = out + "/data/japanese.txt";
  for (size_t i = 0; i < models.size(); ++i) {
    if (auto config = engine::ArchitectureConfig(models[i]); !config.ok()) return ReportStatus(config.status());
    std::string dir;
    bool random = f.weights.empty();
    if (!random) {
      dir = AbsolutePath(f.weights[i]);
    } else {
      dir = out + "/models/" + models[i];
      if (::access((dir + "/config.json").c_str(), F_OK) != 0) {
        std::error_code ec;
        std::filesystem::create_directories(out + "/models", ec);
        if (ec) return ReportStatus(InvalidArgument("cannot create " + out + "/models: " + ec.message()));
        InitSpec init;
        init.arch = models[i];
        init.out = dir;
        init.seed = 1;
        init.dtype = precision;
        init.vocab_dir = DefaultVocabDir();
        nlohmann::json request = init.ToJson();
        request["op"] = "init";
        std::fprintf(stderr, "study: random weights for %s in %s\n", models[i].c_str(), dir.c_str());
        auto r = RunLocal(request, {});
        if (!r.ok()) return ReportStatus(r.status().WithContext("model init " + models[i]));
      }
    }
    InferSpec infer;
    infer.model = dir;
    infer.prompt = kSeedPrompt;
    infer.max_new_tokens = f.max_new_tokens;
    infer.ignore_eos = true;
    infer.precision = precision;
    infer.device = f.device;
    nlohmann::json infer_spec = infer.ToJson();
    infer_spec["offload"] = kAuto;  // the scheduler picks from the agent's free memory
    auto id = SubmitSpec(client, "infer", infer_spec);
    if (!id.ok()) return ReportStatus(id.status().WithContext(models[i] + " inference"));
    ids.push_back(*id);
    labels.push_back({models[i], random});
  }
  if (::access(data.c_str(), F_OK) != 0) {
    // The man pages in UTF-8 (a few are in legacy encodings: skipped), sorted, the first 200.
    const std::string cmd =
        "mkdir -p " + ShellQuote(out + "/data") + " && for f in $(ls /usr/share/man/ja/man1/*.gz | sort | head -200); "
        "do zcat \"$f\" | iconv -f UTF-8 -t UTF-8 >/dev/null 2>&1 && zcat \"$f\"; done > " + ShellQuote(data) +
        " && test -s " + ShellQuote(data);
    if (std::system(cmd.c_str()) != 0) {
      return ReportStatus(FailedPrecondition("no Japanese text for the fine-tunes: is manpages-ja installed? "
                                             "(scripts/bootstrap installs it)"));
    }
  }
  for (size_t i = 0; i < models.size(); ++i) {
    FinetuneSpec tune;
    tune.model = f.weights.empty() ? out + "/models/" + models[i] : AbsolutePath(f.weights[i]);
    tune.data = data;
    tune.ranks = f.ranks;
    tune.device = f.device;
    tune.precision = precision;
    tune.seq_len = f.seq_len;
    tune.steps = f.steps;
    tune.warmup_steps = 0;
    nlohmann::json tune_spec = tune.ToJson();
    tune_spec["zero"] = tune_spec["offload"] = kAuto;  // the scheduler picks the plan
    auto id = SubmitSpec(client, "finetune", tune_spec);
    if (!id.ok()) {
      // A fine-tune that cannot run on the connected agents is reported, not fatal.
      std::fprintf(stderr, "study: %s fine-tune not submitted: %s\n", models[i].c_str(), id.status().message().c_str());
      continue;
    }
    ids.push_back(*id);
    labels.push_back({models[i], f.weights.empty()});
  }
  std::fprintf(stderr, "study: waiting for %zu jobs\n", ids.size());
  if (Status s = WaitAll(client, ids); !s.ok()) return ReportStatus(s);
  std::vector<JobData> jobs;
  for (size_t i = 0; i < ids.size(); ++i) {
    auto d = FetchJob(client, ids[i]);
    if (!d.ok()) return ReportStatus(d.status());
    d->label = labels[i].first;
    d->random_weights = labels[i].second;
    jobs.push_back(std::move(*d));
  }
  ReportOptions options;
  options.out_dir = out;
  options.title = "The Cerebras-GPT study, by fuji";
  options.corpus_tokens = kSeedCorpusTokens;
  options.notes = {
      "Device: " + f.device + "; precision " + precision + "; prompt: \"" + std::string(kSeedPrompt) + "\".",
      f.weights.empty() ? "Weights: random (no checkpoint was given), so the text is not meaningful; "
                          "memory and times are those of the real shapes."
                        : "Weights: the given checkpoints.",
      "Fine-tunes: " + std::to_string(f.steps) + " steps of seq-len " + std::to_string(f.seq_len) + " on " +
          std::to_string(f.ranks) + " rank(s), on Japanese man pages (manpages-ja). Time to train assumes "
          "a corpus of 1.5e9 tokens (the order of Japanese Wikipedia, the seed's corpus; the study does "
          "not give its size).",
  };
  auto path = WriteReport(jobs, options);
  if (!path.ok()) return ReportStatus(path.status());
  std::printf("%s\n", path->c_str());
  return 0;
}

}  // namespace

void RegisterStudyCommands(CLI::App& app, CliState* state) {
  auto rf = std::make_shared<ReportFlags>();
  CLI::App* report = app.add_subcommand("report", "A Markdown report with charts of finished jobs");
  report->add_option("ids", rf->ids, "Job ids")->required();
  report->add_option("--out", rf->out, "Directory to write (default: report)");
  report->add_option("--corpus-tokens", rf->corpus_tokens, "Corpus size for the time-to-train column");
  report->add_option("--epochs", rf->epochs, "Epochs for the time-to-train column");
  AddServerOption(report, &rf->server);
  report->callback([state, rf] { state->exit_code = RunReport(*rf); });

  auto sf = std::make_shared<StudyFlags>();
  CLI::App* study = app.add_subcommand("study", "The seed study in one command, through fujid");
  study->add_option("--models", sf->models, "111m,256m,590m,1.3b,2.7b,6.7b,13b (default: 111m on cpu, all on cuda)");
  study->add_option("--device", sf->device, "cpu or cuda")->check(CLI::IsMember({"cpu", "cuda"}));
  study->add_option("--weights", sf->weights, "Checkpoint directories, one per model (default: random weights)");
  study->add_option("--steps", sf->steps, "Fine-tuning steps per model (default 4)");
  study->add_option("--seq-len", sf->seq_len, "Fine-tuning sequence length (default 64)");
  study->add_option("--ranks", sf->ranks, "Ranks per fine-tune (default 1; ZeRO-2 above 1)");
  study->add_option("--precision", sf->precision, "fp32, bf16 or fp16 (default: bf16 on cuda, fp32 on cpu)")
      ->check(CLI::IsMember({"fp32", "bf16", "fp16"}));
  study->add_option("--max-new-tokens", sf->max_new_tokens, "Tokens to generate per model (default 32)");
  study->add_option("--out", sf->out, "Directory for models, data and the report (default: study)");
  AddServerOption(study, &sf->server);
  study->callback([state, sf] { state->exit_code = RunStudy(*sf); });
}

}  // namespace fuji::client
