// ChatTemplate: how a model directory's chat_template.json turns chat messages into one prompt.
// fuji's own simple format, not a Jinja template:
//
//   {
//     "bos": "",                                   optional: text before everything
//     "roles": {                                   the roles a message may have
//       "system":    {"prefix": "### System:\n",    "suffix": "\n\n"},
//       "user":      {"prefix": "### User:\n",      "suffix": "\n\n"},
//       "assistant": {"prefix": "### Assistant:\n", "suffix": "\n\n"}
//     },
//     "generation_prompt": "### Assistant:\n",     after the messages: where the reply begins
//     "stop": ["### User:"]                        optional: stop strings added to the request's
//   }
//
// The prompt is bos, then prefix + content + suffix of each message in order, then
// generation_prompt. A model directory without the file has no chat template.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "daemon/http/openai_protocol.h"
#include "lib/common/status.h"

namespace fuji::http {

inline constexpr size_t kMaxChatTemplateBytes = size_t{64} << 10;

struct ChatTemplate {
  struct Role {
    std::string prefix, suffix;
  };
  std::string bos;
  std::map<std::string, Role> roles;
  std::string generation_prompt;
  std::vector<std::string> stop;

  // INVALID_ARGUMENT naming the field at fault (and `what`, the file).
  static Result<ChatTemplate> Parse(const std::string& text, const std::string& what);
  // NOT_FOUND when the file does not exist; otherwise as Parse (a file over
  // kMaxChatTemplateBytes is INVALID_ARGUMENT).
  static Result<ChatTemplate> Load(const std::string& path);
  // INVALID_ARGUMENT for a message whose role the template does not have.
  Result<std::string> Render(const std::vector<ChatMessage>& messages) const;
};

}  // namespace fuji::http
