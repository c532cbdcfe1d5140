// ChatTemplate; see chat_template.h.
#include "daemon/http/chat_template.h"

#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "lib/common/json_bounds.h"
#include "lib/common/limits.h"
#include "lib/text/unicode.h"

namespace fuji::http {
namespace {

constexpr size_t kMaxPieceBytes = 4096;
constexpr size_t kMaxRoles = 16;

Status Piece(const nlohmann::json& j, const std::string& name, const std::string& what,
             std::string* out) {
  if (!j.contains(name) || j[name].is_null()) return Status::Ok();
  if (!j[name].is_string()) return InvalidArgument(what + ": '" + name + "' must be a string");
  const auto& s = j[name].get_ref<const std::string&>();
  if (s.size() > kMaxPieceBytes)
    return InvalidArgument(what + ": '" + name + "' is over 4096 bytes");
  if (!text::IsValidUtf8(s)) return InvalidArgument(what + ": '" + name + "' is not valid UTF-8");
  *out = s;
  return Status::Ok();
}

}  // namespace

Result<ChatTemplate> ChatTemplate::Parse(const std::string& text, const std::string& what) {
  const nlohmann::json j = ParseJsonBounded(text);
  if (j.is_discarded() || !j.is_object()) return InvalidArgument(what + " is not a JSON object");
  ChatTemplate t;
  FUJI_RETURN_IF_ERROR(Piece(j, "bos", what, &t.bos));
  FUJI_RETURN_IF_ERROR(Piece(j, "generation_prompt", what, &t.generation_prompt));
  if (!j.contains("roles") || !j["roles"].is_object() || j["roles"].empty()) {
    return InvalidArgument(what +
                           ": 'roles' must be an object of roles, each {\"prefix\", \"suffix\"}");
  }
  if (j["roles"].size() > kMaxRoles) return InvalidArgument(what + ": 'roles' has over 16 roles");
  for (const auto& [name, role] : j["roles"].items()) {
    if (!role.is_object())
      return InvalidArgument(what + ": role '" + name + "' must be {\"prefix\", \"suffix\"}");
    Role r;
    FUJI_RETURN_IF_ERROR(Piece(role, "prefix", what + " role '" + name + "'", &r.prefix));
    FUJI_RETURN_IF_ERROR(Piece(role, "suffix", what + " role '" + name + "'", &r.suffix));
    t.roles[name] = std::move(r);
  }
  if (j.contains("stop") && !j["stop"].is_null()) {
    if (!j["stop"].is_array() || j["stop"].size() > kMaxStops) {
      return InvalidArgument(what + ": 'stop' must be a list of at most 4 strings");
    }
    for (const auto& s : j["stop"]) {
      if (!s.is_string() || s.get_ref<const std::string&>().empty() ||
          s.get_ref<const std::string&>().size() > kMaxStopBytes) {
        return InvalidArgument(what + ": 'stop' strings must be 1 to 256 bytes");
      }
      t.stop.push_back(s.get<std::string>());
    }
  }
  return t;
}

Result<ChatTemplate> ChatTemplate::Load(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return NotFound(path + " not found");
  std::string text(kMaxChatTemplateBytes + 1, '\0');
  in.read(text.data(), static_cast<std::streamsize>(text.size()));
  text.resize(static_cast<size_t>(in.gcount()));
  if (text.size() > kMaxChatTemplateBytes) return InvalidArgument(path + " is over 64 KiB");
  return Parse(text, path);
}

Result<std::string> ChatTemplate::Render(const std::vector<ChatMessage>& messages) const {
  std::string prompt = bos;
  for (const ChatMessage& m : messages) {
    auto role = roles.find(m.role);
    if (role == roles.end()) {
      std::string known;
      for (const auto& [name, unused] : roles) known += (known.empty() ? "" : ", ") + name;
      return InvalidArgument("the model's chat template has no role '" + m.role + "' (it has " +
                             known + ")");
    }
    prompt += role->second.prefix + m.content + role->second.suffix;
    if (prompt.size() > limits::kMaxPromptBytes)
      return InvalidArgument("the chat prompt is over the prompt limit");
  }
  return prompt + generation_prompt;
}

}  // namespace fuji::http
