// OpenAI's wire format; see openai_protocol.h.
#include "daemon/http/openai_protocol.h"

#include <algorithm>
#include <cmath>

#include "lib/common/json_bounds.h"
#include "lib/common/limits.h"
#include "lib/text/bpe_tokenizer.h"

namespace fuji::http {
namespace {

using nlohmann::json;

// nlohmann's dump throws on invalid UTF-8 unless told otherwise; nothing here may throw.
std::string Dump(const json& j) {
  return j.dump(-1, ' ', false, json::error_handler_t::replace);
}

bool Present(const json& j, const char* name) {
  return j.contains(name) && !j[name].is_null();
}

// A string field's text, or its error.
std::optional<ApiError> String(const json& j, const char* name, size_t max_bytes,
                               std::string* out) {
  const json& v = j[name];
  if (!v.is_string()) return BadRequest(std::string("'") + name + "' must be a string", name);
  const auto& s = v.get_ref<const std::string&>();
  if (s.size() > max_bytes) {
    return BadRequest(std::string("'") + name + "' is over " + std::to_string(max_bytes) + " bytes",
                      name);
  }
  if (!text::IsValidUtf8(s))
    return BadRequest(std::string("'") + name + "' is not valid UTF-8", name);
  *out = s;
  return std::nullopt;
}

std::optional<ApiError> Number(const json& j, const char* name, double min, double max,
                               double* out) {
  const json& v = j[name];
  if (!v.is_number()) return BadRequest(std::string("'") + name + "' must be a number", name);
  const double d = v.get<double>();
  if (!std::isfinite(d) || d < min || d > max) {
    char text[128];
    std::snprintf(text, sizeof text, "'%s' must be between %g and %g", name, min, max);
    return BadRequest(text, name);
  }
  *out = d;
  return std::nullopt;
}

std::optional<ApiError> Integer(const json& j, const char* name, int64_t min, int64_t max,
                                int64_t* out) {
  const json& v = j[name];
  if (!v.is_number_integer() ||
      (v.is_number_unsigned() && v.get<uint64_t>() > static_cast<uint64_t>(INT64_MAX))) {
    return BadRequest(std::string("'") + name + "' must be an integer", name);
  }
  const int64_t i = v.get<int64_t>();
  if (i < min || i > max) {
    return BadRequest(std::string("'") + name + "' must be between " + std::to_string(min) +
                          " and " + std::to_string(max) + " (got " + std::to_string(i) + ")",
                      name);
  }
  *out = i;
  return std::nullopt;
}

// Token ids: non-negative, 32-bit, at most the prompt limit.
std::optional<ApiError> Ids(const json& list, std::vector<int32_t>* out) {
  if (list.empty()) return BadRequest("'prompt' is empty", "prompt");
  if (list.size() > limits::kMaxPromptIds) {
    return BadRequest("'prompt' has over " + std::to_string(limits::kMaxPromptIds) + " token ids",
                      "prompt");
  }
  for (const json& id : list) {
    if (!id.is_number_integer() || id.get<int64_t>() < 0 || id.get<int64_t>() > INT32_MAX) {
      return BadRequest("'prompt' token ids must be non-negative integers", "prompt");
    }
    out->push_back(static_cast<int32_t>(id.get<int64_t>()));
  }
  return std::nullopt;
}

// A string, a list of one string, a list of ids, or a list of one list of ids.
std::optional<ApiError> Prompt(const json& v, CompletionRequest* out) {
  if (v.is_string()) {
    std::string text;
    if (auto e = String(json{{"prompt", v}}, "prompt", limits::kMaxPromptBytes, &text)) return e;
    if (text.empty()) return BadRequest("'prompt' is empty", "prompt");
    out->prompt = std::move(text);
    return std::nullopt;
  }
  if (!v.is_array())
    return BadRequest("'prompt' must be a string, a list of one string or token ids", "prompt");
  if (v.empty()) return BadRequest("'prompt' is empty", "prompt");
  if (v[0].is_number()) return Ids(v, &out->prompt_ids);
  if (v.size() > 1)
    return BadRequest(
        "fuji serves one prompt per request: 'prompt' has " + std::to_string(v.size()), "prompt");
  if (v[0].is_array()) return Ids(v[0], &out->prompt_ids);
  if (v[0].is_string()) return Prompt(v[0], out);
  return BadRequest("'prompt' must be a string, a list of one string or token ids", "prompt");
}

std::optional<ApiError> Messages(const json& v, std::vector<ChatMessage>* out) {
  if (!v.is_array() || v.empty())
    return BadRequest("'messages' must be a non-empty list", "messages");
  if (v.size() > kMaxMessages) {
    return BadRequest("'messages' has over " + std::to_string(kMaxMessages) + " messages",
                      "messages");
  }
  size_t bytes = 0;
  for (const json& m : v) {
    if (!m.is_object() || !m.contains("role") || !m["role"].is_string()) {
      return BadRequest("each message needs a 'role' string", "messages");
    }
    ChatMessage message;
    message.role = m["role"].get<std::string>();
    if (message.role.size() > 64)
      return BadRequest("a message's 'role' is over 64 bytes", "messages");
    const json content = m.value("content", json());
    if (content.is_string()) {
      message.content = content.get<std::string>();
    } else if (content.is_array()) {
      // Content parts: fuji models read text only.
      for (const json& part : content) {
        if (!part.is_object() || part.value("type", "") != "text" || !part.contains("text") ||
            !part["text"].is_string()) {
          return BadRequest(
              "fuji reads text content parts only ({\"type\": \"text\", \"text\": ...})",
              "messages");
        }
        message.content += part["text"].get<std::string>();
      }
    } else if (!content.is_null()) {
      return BadRequest("a message's 'content' must be a string or a list of text parts",
                        "messages");
    }
    if (!text::IsValidUtf8(message.content))
      return BadRequest("a message's content is not valid UTF-8", "messages");
    bytes += message.content.size();
    if (bytes > limits::kMaxPromptBytes) {
      return BadRequest(
          "'messages' hold over " + std::to_string(limits::kMaxPromptBytes) + " bytes", "messages");
    }
    out->push_back(std::move(message));
  }
  return std::nullopt;
}

std::optional<ApiError> Stops(const json& v, std::vector<std::string>* out) {
  json list = v.is_string() ? json::array({v}) : v;
  if (!list.is_array()) return BadRequest("'stop' must be a string or a list of strings", "stop");
  if (list.size() > kMaxStops)
    return BadRequest("'stop' has more than " + std::to_string(kMaxStops) + " strings", "stop");
  for (const json& s : list) {
    if (!s.is_string()) return BadRequest("'stop' must be a string or a list of strings", "stop");
    const auto& text = s.get_ref<const std::string&>();
    if (text.empty()) return BadRequest("'stop' strings must not be empty", "stop");
    if (text.size() > kMaxStopBytes)
      return BadRequest("'stop' strings are at most 256 bytes", "stop");
    if (!text::IsValidUtf8(text)) return BadRequest("'stop' is not valid UTF-8", "stop");
    out->push_back(text);
  }
  return std::nullopt;
}

// An optional field fuji cannot honour: refused unless absent or at its neutral value.
std::optional<ApiError> Unsupported(const json& j, const char* name, const json& neutral,
                                    const std::string& why) {
  if (!Present(j, name) || j[name] == neutral) return std::nullopt;
  return BadRequest(std::string("'") + name + "' is not supported: " + why, name);
}

json Choice(Endpoint endpoint, const std::string& text, const std::string& finish_reason) {
  json choice = {{"index", 0}};
  if (endpoint == Endpoint::kChat) {
    choice["message"] = {{"role", "assistant"}, {"content", text}};
    choice["logprobs"] = nullptr;
  } else {
    choice["text"] = text;
    choice["logprobs"] = nullptr;
  }
  choice["finish_reason"] = finish_reason.empty() ? json() : json(finish_reason);
  return choice;
}

}  // namespace

ApiError BadRequest(std::string message, std::string param) {
  return ApiError{400, std::move(message), "invalid_request_error", std::move(param), ""};
}

std::string ErrorJson(const ApiError& error) {
  return Dump({{"error",
                {{"message", error.message},
                 {"type", error.type},
                 {"param", error.param.empty() ? json() : json(error.param)},
                 {"code", error.code.empty() ? json() : json(error.code)}}}});
}

std::optional<ApiError> ParseCompletionRequest(std::string_view body, Endpoint endpoint,
                                               CompletionRequest* out) {
  if (Status depth = CheckJsonDepth(body, "the request body"); !depth.ok())
    return BadRequest(depth.message());
  const json j = json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return BadRequest("the request body is not valid JSON");
  if (!j.is_object()) return BadRequest("the request body must be a JSON object");
  CompletionRequest r;
  if (!Present(j, "model")) return BadRequest("'model' is required", "model");
  if (auto e = String(j, "model", kMaxModelBytes, &r.model)) return e;
  if (r.model.empty()) return BadRequest("'model' is empty", "model");
  if (endpoint == Endpoint::kCompletions) {
    if (!Present(j, "prompt")) return BadRequest("'prompt' is required", "prompt");
    if (auto e = Prompt(j["prompt"], &r)) return e;
  } else {
    if (!Present(j, "messages")) return BadRequest("'messages' is required", "messages");
    if (auto e = Messages(j["messages"], &r.messages)) return e;
  }
  // Chat's newer name for max_tokens wins when both are given.
  const char* max_name = endpoint == Endpoint::kChat && Present(j, "max_completion_tokens")
                             ? "max_completion_tokens"
                             : "max_tokens";
  if (Present(j, max_name)) {
    if (auto e = Integer(j, max_name, 1, limits::kMaxNewTokens, &r.max_tokens)) return e;
  }
  if (Present(j, "temperature")) {
    if (auto e = Number(j, "temperature", 0.0, 2.0, &r.temperature)) return e;
  }
  if (Present(j, "top_p")) {
    double top_p = 1.0;
    if (auto e = Number(j, "top_p", 0.0, 1.0, &top_p)) return e;
    if (top_p <= 0.0) return BadRequest("'top_p' must be above 0", "top_p");
    r.top_p = top_p;
  }
  if (Present(j, "n")) {
    int64_t n = 1;
    if (Integer(j, "n", 1, 1, &n))
      return BadRequest("fuji generates one choice per request: 'n' must be 1", "n");
  }
  if (Present(j, "seed")) {
    int64_t seed = 0;
    if (auto e = Integer(j, "seed", 0, INT64_MAX, &seed)) return e;
    r.seed = static_cast<uint64_t>(seed);
  }
  if (Present(j, "stop")) {
    if (auto e = Stops(j["stop"], &r.stop)) return e;
  }
  if (Present(j, "stream")) {
    if (!j["stream"].is_boolean()) return BadRequest("'stream' must be true or false", "stream");
    r.stream = j["stream"].get<bool>();
  }
  if (Present(j, "stream_options")) {
    const json& options = j["stream_options"];
    if (!options.is_object())
      return BadRequest("'stream_options' must be an object", "stream_options");
    if (Present(options, "include_usage")) {
      if (!options["include_usage"].is_boolean()) {
        return BadRequest("'stream_options.include_usage' must be true or false", "stream_options");
      }
      r.include_usage = options["include_usage"].get<bool>();
    }
  }
  if (Present(j, "precision")) {
    if (auto e = String(j, "precision", 16, &r.precision)) return e;
    if (r.precision != "fp32" && r.precision != "bf16" && r.precision != "fp16") {
      return BadRequest("'precision' must be fp32, bf16 or fp16", "precision");
    }
  }
  if (Present(j, "device")) {
    if (auto e = String(j, "device", 16, &r.device)) return e;
  }
  if (Present(j, "ignore_eos")) {
    if (!j["ignore_eos"].is_boolean())
      return BadRequest("'ignore_eos' must be true or false", "ignore_eos");
    r.ignore_eos = j["ignore_eos"].get<bool>();
  }
  const std::string alone = "fuji returns the generated text only";
  for (auto e : {Unsupported(j, "echo", false, alone), Unsupported(j, "suffix", json(), alone),
                 Unsupported(j, "logprobs", endpoint == Endpoint::kChat ? json(false) : json(),
                             "fuji gives no logprobs"),
                 Unsupported(j, "top_logprobs", json(), "fuji gives no logprobs"),
                 Unsupported(j, "best_of", 1, "fuji generates one choice per request"),
                 Unsupported(j, "presence_penalty", 0, "fuji samples without penalties"),
                 Unsupported(j, "frequency_penalty", 0, "fuji samples without penalties"),
                 Unsupported(j, "tools", json(), "fuji models call no tools")}) {
    if (e) return e;
  }
  *out = std::move(r);
  return std::nullopt;
}

nlohmann::json InferSpecJson(const CompletionRequest& request, const std::string& model_path,
                             const std::string& device, uint64_t default_seed) {
  json spec = {{"model", model_path},
               {"max_new_tokens", request.max_tokens},
               {"device", device},
               {"precision", request.precision},
               {"ignore_eos", request.ignore_eos}};
  if (!request.prompt_ids.empty()) {
    spec["prompt_ids"] = request.prompt_ids;
  } else {
    spec["prompt"] = request.prompt.value_or("");
  }
  if (request.temperature == 0.0) {
    spec["greedy"] = true;
  } else {
    spec["greedy"] = false;
    spec["temperature"] = request.temperature;
    if (request.top_p) spec["top_p"] = *request.top_p;
    spec["seed"] = request.seed.value_or(default_seed);
  }
  if (!request.stop.empty()) spec["stop"] = request.stop;
  return spec;
}

std::string FinishReason(const nlohmann::json& result, int64_t max_tokens, bool stopped_here) {
  if (stopped_here) return "stop";
  const std::string said =
      result.is_object() && result.contains("finish_reason") && result["finish_reason"].is_string()
          ? result["finish_reason"].get<std::string>()
          : "";
  if (said == "length") return "length";
  if (said == "stop" || said == "eos") return "stop";
  const size_t generated =
      result.is_object() && result.contains("output_ids") && result["output_ids"].is_array()
          ? result["output_ids"].size()
          : 0;
  return static_cast<int64_t>(generated) < max_tokens ? "stop" : "length";
}

nlohmann::json UsageJson(int64_t prompt_tokens, int64_t completion_tokens) {
  return {{"prompt_tokens", prompt_tokens},
          {"completion_tokens", completion_tokens},
          {"total_tokens", prompt_tokens + completion_tokens}};
}

nlohmann::json ResponseJson(Endpoint endpoint, const std::string& id, int64_t created,
                            const std::string& model, const std::string& text,
                            const std::string& finish_reason, const nlohmann::json& usage) {
  return {{"id", id},
          {"object", endpoint == Endpoint::kChat ? "chat.completion" : "text_completion"},
          {"created", created},
          {"model", model},
          {"choices", json::array({Choice(endpoint, text, finish_reason)})},
          {"usage", usage}};
}

nlohmann::json ChunkJson(Endpoint endpoint, const std::string& id, int64_t created,
                         const std::string& model, const std::string& text,
                         const std::string& finish_reason, bool first) {
  json choice = {{"index", 0},
                 {"finish_reason", finish_reason.empty() ? json() : json(finish_reason)}};
  if (endpoint == Endpoint::kChat) {
    json delta = json::object();
    if (first) delta["role"] = "assistant";
    if (!text.empty() || finish_reason.empty()) delta["content"] = text;
    choice["delta"] = delta;
  } else {
    choice["text"] = text;
  }
  choice["logprobs"] = nullptr;
  return {{"id", id},
          {"object", endpoint == Endpoint::kChat ? "chat.completion.chunk" : "text_completion"},
          {"created", created},
          {"model", model},
          {"choices", json::array({choice})}};
}

nlohmann::json UsageChunkJson(Endpoint endpoint, const std::string& id, int64_t created,
                              const std::string& model, const nlohmann::json& usage) {
  return {{"id", id},
          {"object", endpoint == Endpoint::kChat ? "chat.completion.chunk" : "text_completion"},
          {"created", created},
          {"model", model},
          {"choices", json::array()},
          {"usage", usage}};
}

std::string StopCutter::Feed(std::string_view text) {
  if (stopped_) return "";
  pending_ += text;
  size_t first = std::string::npos;
  for (const std::string& stop : stops_) first = std::min(first, pending_.find(stop));
  if (first != std::string::npos) {
    stopped_ = true;
    std::string out = pending_.substr(0, first);
    pending_.clear();
    return out;
  }
  // Hold back the longest tail that is the start of a stop string (it may complete later).
  size_t hold = 0;
  for (const std::string& stop : stops_) {
    for (size_t k = std::min(stop.size() - 1, pending_.size()); k > hold; --k) {
      if (pending_.compare(pending_.size() - k, k, stop, 0, k) == 0) {
        hold = k;
        break;
      }
    }
  }
  std::string out = pending_.substr(0, pending_.size() - hold);
  pending_.erase(0, pending_.size() - hold);
  return out;
}

std::string StopCutter::Flush() {
  std::string out = stopped_ ? "" : pending_;
  pending_.clear();
  return out;
}

}  // namespace fuji::http
