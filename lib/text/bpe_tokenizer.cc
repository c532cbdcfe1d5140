// BpeTokenizer: loading, and encoding as pre-tokenize -> bytes -> BPE merges -> ids.
#include "lib/text/bpe_tokenizer.h"

#include <algorithm>
#include <limits>
#include <unordered_map>

#include "lib/common/file_util.h"
#include "lib/text/pretokenizer.h"
#include "lib/text/vocab_files.h"

namespace fuji::text {

Result<BpeTokenizer> BpeTokenizer::Load(const std::string& vocab_json_path,
                                        const std::string& merges_path) {
  FUJI_ASSIGN_OR_RETURN(const std::string vocab_text, ReadFile(vocab_json_path));
  FUJI_ASSIGN_OR_RETURN(const std::string merges_text, ReadFile(merges_path));
  FUJI_ASSIGN_OR_RETURN(const TokenIds vocab, ParseVocabJson(vocab_json_path, vocab_text));
  FUJI_ASSIGN_OR_RETURN(const std::vector<std::string> token_bytes,
                        TokenBytes(vocab_json_path, vocab));
  BpeTokenizer tokenizer;
  FUJI_ASSIGN_OR_RETURN(tokenizer.byte_ids_, ByteTokenIds(vocab_json_path, vocab));
  FUJI_ASSIGN_OR_RETURN(tokenizer.merges_, ParseMerges(merges_path, merges_text, vocab));
  tokenizer.token_offsets_.reserve(token_bytes.size() + 1);
  tokenizer.token_offsets_.push_back(0);
  for (const std::string& bytes : token_bytes) {
    tokenizer.token_bytes_ += bytes;
    tokenizer.token_offsets_.push_back(tokenizer.token_bytes_.size());
  }
  return tokenizer;
}

Result<BpeTokenizer> BpeTokenizer::LoadFromDir(const std::string& dir) {
  FUJI_ASSIGN_OR_RETURN(const TokenizerFiles files, FindTokenizerFiles(dir));
  return Load(files.vocab, files.merges);
}

Result<std::vector<int32_t>> BpeTokenizer::Encode(std::string_view utf8) const {
  // Symbol positions within a piece are int32_t.
  if (utf8.size() > static_cast<size_t>(std::numeric_limits<int32_t>::max())) {
    return ResourceExhausted("text of " + std::to_string(utf8.size()) +
                             " bytes is too long to tokenize at once (limit 2 GiB)");
  }
  const size_t invalid = FindInvalidUtf8(utf8);
  if (invalid != utf8.size()) {
    return InvalidArgument("invalid UTF-8 at byte " + std::to_string(invalid));
  }
  std::vector<int32_t> ids;
  ids.reserve(utf8.size() / 4 + 1);
  // Text repeats its words; each distinct piece is merged once per call and its ids copied after.
  // Per call, so that concurrent callers share nothing mutable.
  struct Span {
    size_t begin;
    size_t size;
  };
  std::unordered_map<std::string_view, Span> seen;
  PreTokenizer pieces(utf8);
  for (std::string_view piece = pieces.Next(); !piece.empty(); piece = pieces.Next()) {
    const size_t begin = ids.size();
    const auto [it, inserted] = seen.try_emplace(piece, Span{begin, 0});
    if (inserted) {
      EncodePiece(piece, &ids);
      it->second.size = ids.size() - begin;
    } else {
      // Not ids.insert(end, own range): that is undefined when the vector reallocates.
      ids.resize(begin + it->second.size);
      std::copy_n(ids.begin() + it->second.begin, it->second.size, ids.begin() + begin);
    }
  }
  return ids;
}

void BpeTokenizer::EncodePiece(std::string_view piece, std::vector<int32_t>* ids) const {
  std::vector<int32_t> symbols(piece.size());
  for (size_t i = 0; i < piece.size(); ++i) symbols[i] = byte_ids_[static_cast<uint8_t>(piece[i])];
  ApplyMerges(merges_, &symbols);
  ids->insert(ids->end(), symbols.begin(), symbols.end());
}

Status BpeTokenizer::CheckIds(const std::vector<int32_t>& ids) const {
  for (const int32_t id : ids) {
    if (id < 0 || id >= vocab_size()) {
      return InvalidArgument("token id " + std::to_string(id) + " outside the vocabulary (size " +
                             std::to_string(vocab_size()) + ")");
    }
  }
  return Status::Ok();
}

Result<std::string> BpeTokenizer::Decode(const std::vector<int32_t>& ids) const {
  FUJI_RETURN_IF_ERROR(CheckIds(ids));
  std::string bytes;
  for (const int32_t id : ids) {
    bytes.append(token_bytes_, token_offsets_[id], token_offsets_[id + 1] - token_offsets_[id]);
  }
  return bytes;
}

}  // namespace fuji::text
