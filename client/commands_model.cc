// `fuji model init` and `fuji model convert`: checkpoint directories, run by fuji-rank;
// `fuji model export`: a ZeRO training checkpoint to an HF-layout directory, in this process.
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdio>

#include <nlohmann/json.hpp>

#include "client/cli.h"
#include "client/local_runner.h"
#include "worker/ckpt/zero_checkpoint.h"
#include "lib/common/file_util.h"
#include "lib/spec/job_spec.h"

namespace fuji::client {
void RegisterModelCommands(CLI::App& app, CliState* state) {
  CLI::App* model = app.add_subcommand("model", "Create and convert checkpoint directories");
  model->require_subcommand(1);

  auto init = std::make_shared<InitSpec>();
  CLI::App* init_cmd = model->add_subcommand("init", "Write a checkpoint with random weights");
  init_cmd->add_option("--arch", init->arch,
                       "tiny, cerebras-gpt-111m, -256m, -590m, -1.3b, -2.7b, -6.7b or -13b")
      ->required();
  init_cmd->add_option("--out", init->out, "Directory to write")->required();
  init_cmd->add_option("--seed", init->seed, "Random seed");
  init_cmd->add_option("--dtype", init->dtype, "fp32, bf16 or fp16")->check(CLI::IsMember({"fp32", "bf16", "fp16"}));
  init_cmd->add_option("--layers", init->layers, "Override n_layer");
  init_cmd->add_option("--width", init->width, "Override n_embd");
  init_cmd->add_option("--heads", init->heads, "Override n_head");
  init_cmd->add_option("--ffn", init->ffn, "Override n_inner");
  init_cmd->add_option("--vocab", init->vocab, "Override vocab_size");
  init_cmd->add_option("--positions", init->positions, "Override n_positions");
  init_cmd->add_option("--vocab-dir", init->vocab_dir, "Where vocab.json and merges.txt are");
  auto init_json = std::make_shared<bool>(false);
  init_cmd->add_flag("--json", *init_json, "Print the result as JSON");
  init_cmd->callback([state, init, init_json] {
    InitSpec spec = *init;
    spec.out = AbsolutePath(spec.out);
    if (spec.vocab_dir.empty()) spec.vocab_dir = DefaultVocabDir();
    nlohmann::json request = spec.ToJson();
    request["op"] = "init";
    auto result = RunLocal(request, {});
    if (!result.ok()) {
      state->exit_code = ReportStatus(result.status());
      return;
    }
    if (*init_json) {
      std::printf("%s\n", result->dump(2).c_str());
    } else {
      std::printf("wrote %s: %lld parameters (%s) in %.0f ms\n", spec.out.c_str(),
                  (*result)["parameters"].get<long long>(), spec.dtype.c_str(), (*result)["ms"].get<double>());
    }
  });

  auto in = std::make_shared<std::string>(), out = std::make_shared<std::string>(),
       dtype = std::make_shared<std::string>();
  CLI::App* convert = model->add_subcommand("convert", "Rewrite a checkpoint as model.safetensors");
  convert->add_option("--in", *in, "Checkpoint directory to read")->required();
  convert->add_option("--out", *out, "Directory to write")->required();
  convert->add_option("--dtype", *dtype, "fp32, bf16 or fp16 (default: the file's)")
      ->check(CLI::IsMember({"fp32", "bf16", "fp16"}));
  convert->callback([state, in, out, dtype] {
    nlohmann::json request = {{"op", "convert"}, {"in", AbsolutePath(*in)}, {"out", AbsolutePath(*out)}};
    if (!dtype->empty()) request["dtype"] = *dtype;
    auto result = RunLocal(request, {});
    if (!result.ok()) {
      state->exit_code = ReportStatus(result.status());
      return;
    }
    std::printf("wrote %s/model.safetensors in %.0f ms\n", out->c_str(), (*result)["ms"].get<double>());
  });

  auto from = std::make_shared<std::string>(), export_out = std::make_shared<std::string>(),
       export_dtype = std::make_shared<std::string>("fp32");
  auto export_json = std::make_shared<bool>(false);
  CLI::App* export_cmd =
      model->add_subcommand("export", "Write a fine-tuning checkpoint's weights as an HF-layout directory");
  export_cmd->add_option("--from", *from, "A checkpoint step directory, or a --save-to directory (its latest)")
      ->required();
  export_cmd->add_option("--out", *export_out, "Directory to write (new or empty)")->required();
  export_cmd->add_option("--dtype", *export_dtype, "fp32 (default), bf16 or fp16")
      ->check(CLI::IsMember({"fp32", "bf16", "fp16"}));
  export_cmd->add_flag("--json", *export_json, "Print the result as JSON");
  export_cmd->callback([state, from, export_out, export_dtype, export_json] {
    const format::DType dtype = *export_dtype == "bf16"   ? format::DType::kBF16
                                : *export_dtype == "fp16" ? format::DType::kF16
                                                          : format::DType::kF32;
    const auto start = std::chrono::steady_clock::now();
    ckpt::ExportReport report;
    const std::string out = AbsolutePath(*export_out);
    const Status s = ckpt::ExportCheckpoint(AbsolutePath(*from), out, dtype, &report);
    if (!s.ok()) {
      state->exit_code = ReportStatus(s);
      return;
    }
    const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
    if (*export_json) {
      const nlohmann::json j = {{"out", out}, {"from", report.step_dir}, {"step", report.step},
                                {"parameters", report.parameters}, {"bytes", report.bytes},
                                {"dtype", *export_dtype}, {"tokenizer_files", report.copied}, {"ms", ms}};
      std::printf("%s\n", j.dump(2).c_str());
    } else {
      std::printf("wrote %s: %lld parameters (%s) from %s (step %lld) in %.0f ms\n", out.c_str(),
                  static_cast<long long>(report.parameters), export_dtype->c_str(), report.step_dir.c_str(),
                  static_cast<long long>(report.step), ms);
      if (report.copied.empty()) std::fprintf(stderr, "note: the model directory has no tokenizer files; none copied\n");
    }
  });
}

}  // namespace fuji::client
