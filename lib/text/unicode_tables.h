// Code point range tables for the pre-tokenizer's character classes (generated into
// unicode_tables.cc by gen_unicode_tables.js from tiktoken's regex engine).
#pragma once

#include <cstddef>

namespace fuji::text {

// An inclusive range of code points. Tables are sorted and non-overlapping.
struct CodePointRange {
  char32_t first;
  char32_t last;
};

extern const CodePointRange kLetterRanges[];  // \p{L}
extern const size_t kLetterRangesSize;
extern const CodePointRange kNumberRanges[];  // \p{N}
extern const size_t kNumberRangesSize;
extern const CodePointRange kWhitespaceRanges[];  // \s: Unicode White_Space
extern const size_t kWhitespaceRangesSize;

}  // namespace fuji::text
