// The GPT-2 pre-tokenizer: splits text into the pieces that BPE encodes independently.
#pragma once

#include <cstddef>
#include <string_view>

#include "lib/text/unicode.h"

namespace fuji::text {

// Yields, in order, the matches of GPT-2's regex, as tiktoken's "gpt2" encoding writes it,
//   '(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
// hand-compiled over code points with tiktoken's character classes (unicode_tables.cc). The
// matches tile the text: concatenated they give it back.
class PreTokenizer {
 public:
  // text must be valid UTF-8 and outlive the PreTokenizer.
  explicit PreTokenizer(std::string_view text) : text_(text) {}

  // The next piece (a view into the text), or an empty view once the text is exhausted.
  std::string_view Next();

 private:
  struct Char {
    char32_t code_point;
    CharClass char_class;
    size_t length;
  };
  Char CharAt(size_t pos) const;
  // The byte length of a contraction ('s 't 're 've 'm 'll 'd) at pos, or 0.
  size_t ContractionLength(size_t pos) const;
  // The end of the run of char_class starting at pos; *last_start gets the start of its last char.
  size_t RunEnd(size_t pos, CharClass char_class, size_t* last_start) const;
  size_t MatchEnd(size_t start) const;

  std::string_view text_;
  size_t pos_ = 0;
};

}  // namespace fuji::text
