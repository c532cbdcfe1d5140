// `fuji model init` and `fuji model convert`: checkpoint directories, run by fuji-rank.
#include <unistd.h>

#include <cstdint>
#include <cstdio>

#include <nlohmann/json.hpp>

#include "client/cli.h"
#include "client/local_runner.h"
#include "worker/spec/job_spec.h"

namespace fuji::client {
namespace {

std::string AbsolutePath(const std::string& path) {
  if (path.empty() || path[0] == '/') return path;
  char cwd[4096];
  return ::getcwd(cwd, sizeof cwd) ? std::string(cwd) + "/" + path : path;
}

}  // namespace

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
}

}  // namespace fuji::client
