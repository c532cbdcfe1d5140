// OpenAI's wire format as fujid speaks it, without any I/O: a completion or chat request parsed
// and checked into one struct, the job spec it becomes, the response and stream-chunk bodies, the
// error body, and the cut of generated text at stop strings. Field names and shapes follow
// OpenAI's API reference for /v1/completions and /v1/chat/completions.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

namespace fuji::http {

enum class Endpoint { kCompletions, kChat };

// An error as OpenAI's clients read it: HTTP status and {"error": {message, type, param, code}}.
struct ApiError {
  int status = 500;
  std::string message;
  std::string type = "invalid_request_error";
  std::string param;  // "" -> null
  std::string code;   // "" -> null
};
std::string ErrorJson(const ApiError& error);
ApiError BadRequest(std::string message, std::string param = "");

struct ChatMessage {
  std::string role;
  std::string content;
};

// A request as checked; what OpenAI leaves to defaults is filled in.
struct CompletionRequest {
  std::string model;                  // a name (a model directory's base name) or a full path
  std::optional<std::string> prompt;  // completions: the text
  std::vector<int32_t> prompt_ids;    // completions: token ids instead
  std::vector<ChatMessage> messages;  // chat
  int64_t max_tokens = 16;
  double temperature = 1.0;  // 0: greedy
  std::optional<double> top_p;
  std::optional<uint64_t> seed;
  std::vector<std::string> stop;  // at most kMaxStops
  bool stream = false;
  bool include_usage = false;      // stream_options.include_usage
  std::string precision = "fp32";  // fuji's own field
  std::string device;              // fuji's own field; "" lets fujid choose
  bool ignore_eos = false;         // fuji's own field: generate max_tokens past end of text
};

inline constexpr size_t kMaxStops = 4;
inline constexpr size_t kMaxStopBytes = 256;
inline constexpr size_t kMaxMessages = 1024;
inline constexpr size_t kMaxModelBytes = 4096;

// Parses and checks `body`; the first field at fault is the error's param. Fields OpenAI has that
// fuji cannot honour (n > 1, logprobs, echo, suffix, best_of > 1, penalties) are refused by name,
// not ignored; the rest of OpenAI's optional fields (user, logit_bias {}, ...) are ignored.
std::optional<ApiError> ParseCompletionRequest(std::string_view body, Endpoint endpoint,
                                               CompletionRequest* out);

// The infer job spec (lib/spec/job_spec.h) of a checked request: the model's path, `prompt` the
// text to generate from (chat: the rendered messages; "" for prompt_ids), greedy for temperature
// 0, `seed` when the request gave none and samples.
nlohmann::json InferSpecJson(const CompletionRequest& request, const std::string& model_path,
                             const std::string& device, uint64_t default_seed);

// OpenAI's finish_reason for fuji's result: "length" or "stop" (fuji's "eos" is a stop). When the
// result says nothing: fewer tokens than asked is a stop.
std::string FinishReason(const nlohmann::json& result, int64_t max_tokens, bool stopped_here);

nlohmann::json UsageJson(int64_t prompt_tokens, int64_t completion_tokens);
// A whole response: "text_completion" or "chat.completion".
nlohmann::json ResponseJson(Endpoint endpoint, const std::string& id, int64_t created,
                            const std::string& model, const std::string& text,
                            const std::string& finish_reason, const nlohmann::json& usage);
// One streamed chunk: text (a chat's delta.content; the first chat chunk also carries the role),
// and finish_reason on the last ("" -> null).
nlohmann::json ChunkJson(Endpoint endpoint, const std::string& id, int64_t created,
                         const std::string& model, const std::string& text,
                         const std::string& finish_reason, bool first);
// The chunk after the last one when stream_options.include_usage: no choices, the usage.
nlohmann::json UsageChunkJson(Endpoint endpoint, const std::string& id, int64_t created,
                              const std::string& model, const nlohmann::json& usage);

// Cuts generated text before the first occurrence of any stop string, as the text streams in.
// Feed returns what may be sent now: it holds back a tail that could begin a stop string. Once a
// stop string is found, nothing more comes out. Not thread-safe.
class StopCutter {
 public:
  explicit StopCutter(std::vector<std::string> stops) : stops_(std::move(stops)) {}
  std::string Feed(std::string_view text);
  // What was held back, at the end of the text.
  std::string Flush();
  bool stopped() const { return stopped_; }

 private:
  std::vector<std::string> stops_;
  std::string pending_;
  bool stopped_ = false;
};

}  // namespace fuji::http
