// Job specification parsing and checks.
#include "lib/spec/job_spec.h"

#include "lib/spec/field_reader.h"
#include "lib/text/bpe_tokenizer.h"

namespace fuji {
namespace {

using spec_internal::FieldReader;

Status CheckDevice(const std::string& device) {
  if (device == "cpu" || device == "cuda") return Status::Ok();
  if (device.rfind("cuda:", 0) == 0 && device.size() > 5 && device.size() <= 8 &&
      device.find_first_not_of("0123456789", 5) == std::string::npos) {
    return Status::Ok();
  }
  return InvalidArgument("field 'device' '" + device + "' is not cpu, cuda or cuda:N");
}

}  // namespace

nlohmann::json InferSpec::ToJson() const {
  nlohmann::json j = {{"model", model},     {"max_new_tokens", max_new_tokens},
                      {"greedy", greedy},   {"temperature", temperature},
                      {"top_k", top_k},     {"top_p", top_p},
                      {"seed", seed},       {"precision", precision},
                      {"device", device},   {"ignore_eos", ignore_eos},
                      {"offload", offload}};
  if (!stop.empty()) j["stop"] = stop;
  if (serve) {
    j["serve"] = true;
  } else if (prompt) {
    j["prompt"] = *prompt;
  } else {
    j["prompt_ids"] = prompt_ids;
  }
  return j;
}

Result<InferSpec> InferSpec::FromJson(const nlohmann::json& j) {
  if (!j.is_object()) return InvalidArgument("infer spec is not a JSON object");
  InferSpec s;
  FieldReader r(j);
  r.String("model", &s.model);
  if (j.contains("prompt") && !j["prompt"].is_null()) {
    std::string prompt;
    r.String("prompt", &prompt, kMaxPromptBytes);
    s.prompt = std::move(prompt);
  }
  if (auto it = j.find("prompt_ids"); it != j.end() && !it->is_null()) {
    if (!it->is_array()) {
      r.Fail("prompt_ids", "must be a list of token ids");
    } else if (it->size() > kMaxPromptIds) {
      r.Fail("prompt_ids", "has " + std::to_string(it->size()) + " ids, over the limit of " + std::to_string(kMaxPromptIds));
    } else {
      for (const auto& id : *it) {
        if (!id.is_number_integer() || id.get<int64_t>() < 0 || id.get<int64_t>() > INT32_MAX) {
          r.Fail("prompt_ids", "must hold non-negative integer token ids");
          break;
        }
        s.prompt_ids.push_back(static_cast<int32_t>(id.get<int64_t>()));
      }
    }
  }
  r.Int("max_new_tokens", &s.max_new_tokens, 1, kMaxNewTokens);
  r.Bool("greedy", &s.greedy);
  r.Double("temperature", &s.temperature, 1e-6, 100.0);
  r.Int("top_k", &s.top_k, 0, 1 << 24);
  r.Double("top_p", &s.top_p, 1e-9, 1.0);
  r.Uint("seed", &s.seed);
  r.OneOf("precision", &s.precision, {"fp32", "bf16", "fp16"});
  r.String("device", &s.device, 64);
  r.Bool("ignore_eos", &s.ignore_eos);
  r.OneOf("offload", &s.offload, {"none", "params"});
  r.Bool("serve", &s.serve);
  if (auto it = j.find("stop"); it != j.end() && !it->is_null()) {
    if (!it->is_array()) {
      r.Fail("stop", "must be a list of strings");
    } else if (it->size() > kMaxStopStrings) {
      r.Fail("stop", "has " + std::to_string(it->size()) + " strings, over the limit of " +
                         std::to_string(kMaxStopStrings));
    } else {
      for (const auto& item : *it) {
        if (!item.is_string()) {
          r.Fail("stop", "must hold only strings");
          break;
        }
        const auto& text = item.get_ref<const std::string&>();
        if (text.empty() || text.size() > kMaxStopBytes) {
          r.Fail("stop", "strings must be 1.." + std::to_string(kMaxStopBytes) + " bytes (one is " +
                             std::to_string(text.size()) + ")");
          break;
        }
        if (!text::IsValidUtf8(text)) {
          r.Fail("stop", "strings must be valid UTF-8");
          break;
        }
        s.stop.push_back(text);
      }
    }
  }
  FUJI_RETURN_IF_ERROR(r.status());
  if (s.model.empty()) return InvalidArgument("field 'model' is required: a checkpoint directory");
  if (s.serve) {
    if (s.prompt || !s.prompt_ids.empty()) {
      return InvalidArgument("a serving job ('serve': true) takes no prompt: it keeps the model loaded for requests");
    }
    FUJI_RETURN_IF_ERROR(CheckDevice(s.device));
    return s;
  }
  if (s.prompt && s.prompt->empty()) return InvalidArgument("empty prompt: give some text");
  if (s.prompt && !s.prompt_ids.empty()) return InvalidArgument("give 'prompt' or 'prompt_ids', not both");
  if (!s.prompt && s.prompt_ids.empty()) return InvalidArgument("empty prompt: give 'prompt' or 'prompt_ids'");
  if (s.prompt && !text::IsValidUtf8(*s.prompt)) return InvalidArgument("field 'prompt' is not valid UTF-8");
  FUJI_RETURN_IF_ERROR(CheckDevice(s.device));
  return s;
}

nlohmann::json InitSpec::ToJson() const {
  return {{"out", out},       {"arch", arch},     {"seed", seed},   {"dtype", dtype},
          {"vocab_dir", vocab_dir}, {"layers", layers}, {"width", width}, {"heads", heads},
          {"ffn", ffn},       {"vocab", vocab},   {"positions", positions}};
}

Result<InitSpec> InitSpec::FromJson(const nlohmann::json& j) {
  if (!j.is_object()) return InvalidArgument("init spec is not a JSON object");
  InitSpec s;
  FieldReader r(j);
  r.String("out", &s.out);
  r.String("arch", &s.arch, 64);
  r.Uint("seed", &s.seed);
  r.OneOf("dtype", &s.dtype, {"fp32", "bf16", "fp16"});
  r.String("vocab_dir", &s.vocab_dir);
  r.Int("layers", &s.layers, 0, 1024);
  r.Int("width", &s.width, 0, 1 << 16);
  r.Int("heads", &s.heads, 0, 1024);
  r.Int("ffn", &s.ffn, 0, 1 << 20);
  r.Int("vocab", &s.vocab, 0, 1 << 24);
  r.Int("positions", &s.positions, 0, 1 << 20);
  FUJI_RETURN_IF_ERROR(r.status());
  if (s.out.empty()) return InvalidArgument("field 'out' is required: the directory to write");
  return s;
}

Result<std::vector<int32_t>> ParseIdList(const std::string& text) {
  std::vector<int32_t> ids;
  size_t pos = 0;
  while (pos <= text.size()) {
    size_t comma = text.find(',', pos);
    if (comma == std::string::npos) comma = text.size();
    std::string item = text.substr(pos, comma - pos);
    while (!item.empty() && item.front() == ' ') item.erase(0, 1);
    while (!item.empty() && item.back() == ' ') item.pop_back();
    if (item.empty() || item.size() > 10 || item.find_first_not_of("0123456789") != std::string::npos ||
        std::stoll(item) > INT32_MAX) {
      return InvalidArgument("'" + item + "' in the id list is not a token id");
    }
    ids.push_back(static_cast<int32_t>(std::stoll(item)));
    if (ids.size() > kMaxPromptIds) return InvalidArgument("too many token ids");
    pos = comma + 1;
  }
  return ids;
}

}  // namespace fuji
