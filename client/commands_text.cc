// `fuji tokenize` and `fuji detokenize`: the model directory's GPT-2 BPE, in process (the tokenizer
// is torch-free, so these start in milliseconds).
#include <unistd.h>

#include <cstdio>
#include <iostream>
#include <iterator>

#include <nlohmann/json.hpp>

#include "client/cli.h"
#include "lib/common/file_util.h"
#include "lib/spec/job_spec.h"
#include "lib/text/bpe_tokenizer.h"

namespace fuji::client {
namespace {

constexpr size_t kMaxInputBytes = 256u << 20;

Result<std::string> ReadInput(const std::string& file) {
  if (file != "-") return ReadFile(file, kMaxInputBytes);
  std::string data((std::istreambuf_iterator<char>(std::cin)), std::istreambuf_iterator<char>());
  if (data.size() > kMaxInputBytes) return ResourceExhausted("standard input is over the limit");
  return data;
}

// {"ids": [...]}, a bare JSON list, or "1,2,3".
Result<std::vector<int32_t>> ParseIds(const std::string& text) {
  nlohmann::json j = nlohmann::json::parse(text, nullptr, false);
  if (!j.is_discarded()) {
    if (j.is_object() && j.contains("ids")) j = j["ids"];
    if (!j.is_array()) return InvalidArgument("expected {\"ids\": [...]} or a list of token ids");
    std::vector<int32_t> ids;
    for (const auto& v : j) {
      if (!v.is_number_integer() || v.get<int64_t>() < 0 || v.get<int64_t>() > INT32_MAX) {
        return InvalidArgument("token ids must be non-negative integers");
      }
      ids.push_back(static_cast<int32_t>(v.get<int64_t>()));
    }
    return ids;
  }
  std::string trimmed = text;
  while (!trimmed.empty() && (trimmed.back() == '\n' || trimmed.back() == ' ')) trimmed.pop_back();
  return ParseIdList(trimmed);
}

Status Tokenize(const std::string& model, const std::string& file, const std::string& text_arg,
                const std::string& output) {
  FUJI_ASSIGN_OR_RETURN(auto tokenizer, text::BpeTokenizer::LoadFromDir(model));
  std::string input = text_arg;
  if (!file.empty()) {
    FUJI_ASSIGN_OR_RETURN(input, ReadInput(file));
  }
  auto ids = tokenizer.Encode(input);
  if (!ids.ok()) return ids.status().WithContext(file.empty() ? "--text" : file);
  if (output == "json") {
    std::printf("%s\n", nlohmann::json({{"ids", *ids}}).dump().c_str());
  } else {
    for (size_t i = 0; i < ids->size(); ++i) std::printf(i ? " %d" : "%d", (*ids)[i]);
    std::printf("\n");
  }
  return Status::Ok();
}

Status Detokenize(const std::string& model, const std::string& file, const std::string& ids_arg) {
  FUJI_ASSIGN_OR_RETURN(auto tokenizer, text::BpeTokenizer::LoadFromDir(model));
  std::string source = ids_arg;
  if (!file.empty()) {
    FUJI_ASSIGN_OR_RETURN(source, ReadInput(file));
  }
  FUJI_ASSIGN_OR_RETURN(std::vector<int32_t> ids, ParseIds(source));
  FUJI_ASSIGN_OR_RETURN(std::string bytes, tokenizer.Decode(ids));
  std::fwrite(bytes.data(), 1, bytes.size(), stdout);
  return Status::Ok();
}

}  // namespace

void RegisterTextCommands(CLI::App& app, CliState* state) {
  struct Args {
    std::string model, file, text, ids, output = "json";
  };
  auto a = std::make_shared<Args>();
  CLI::App* tok = app.add_subcommand("tokenize", "Text to GPT-2 token ids");
  tok->add_option("--model", a->model, "Checkpoint directory with vocab.json and merges.txt")->required();
  auto* file_opt = tok->add_option("--file", a->file, "UTF-8 text file ('-': standard input)");
  tok->add_option("--text", a->text, "Text to tokenize")->excludes(file_opt);
  tok->add_option("--output", a->output, "json or text")->check(CLI::IsMember({"json", "text"}));
  tok->callback([state, a] {
    if (a->file.empty() && a->text.empty()) {
      state->exit_code = ReportStatus(InvalidArgument("give --file or --text"));
      return;
    }
    state->exit_code = ReportStatus(Tokenize(a->model, a->file, a->text, a->output));
  });

  auto d = std::make_shared<Args>();
  CLI::App* detok = app.add_subcommand("detokenize", "GPT-2 token ids to text");
  detok->add_option("--model", d->model, "Checkpoint directory with vocab.json and merges.txt")->required();
  auto* dfile = detok->add_option("--file", d->file, "{\"ids\": [...]}, a JSON list or 1,2,3 ('-': stdin)");
  detok->add_option("--ids", d->ids, "Comma-separated token ids")->excludes(dfile);
  detok->callback([state, d] {
    if (d->file.empty() && d->ids.empty()) {
      state->exit_code = ReportStatus(InvalidArgument("give --file or --ids"));
      return;
    }
    state->exit_code = ReportStatus(Detokenize(d->model, d->file, d->ids));
  });
}

}  // namespace fuji::client
