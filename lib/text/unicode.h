// UTF-8 validation and decoding, and the character classes of the GPT-2 pre-tokenizer.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace fuji::text {

// Strict UTF-8 (RFC 3629): no overlong forms, no surrogates (U+D800..U+DFFF), nothing above
// U+10FFFF, no truncated sequences.
bool IsValidUtf8(std::string_view s);

// The byte offset of the first invalid sequence in s, or s.size() if s is valid UTF-8.
size_t FindInvalidUtf8(std::string_view s);

// The UTF-8 encoding of cp (a Unicode scalar value).
std::string EncodeUtf8(char32_t cp);

// A code point and the number of bytes it takes in UTF-8.
struct DecodedChar {
  char32_t code_point;
  size_t length;
};

// Decodes the character starting at s[pos]. s must be valid UTF-8 and pos < s.size().
inline DecodedChar DecodeUtf8At(std::string_view s, size_t pos) {
  const auto byte = [&](size_t i) { return static_cast<uint8_t>(s[pos + i]); };
  const uint8_t lead = byte(0);
  if (lead < 0x80) return {lead, 1};
  if (lead < 0xE0) return {char32_t{lead & 0x1Fu} << 6 | (byte(1) & 0x3Fu), 2};
  if (lead < 0xF0) {
    return {char32_t{lead & 0x0Fu} << 12 | (byte(1) & 0x3Fu) << 6 | (byte(2) & 0x3Fu), 3};
  }
  return {char32_t{lead & 0x07u} << 18 | (byte(1) & 0x3Fu) << 12 | (byte(2) & 0x3Fu) << 6 |
              (byte(3) & 0x3Fu),
          4};
}

// The pre-tokenizer's partition of code points as tiktoken's regex engine draws it: \p{L}, \p{N},
// \s (Unicode White_Space: U+0085 is whitespace, U+FEFF is not), everything else.
enum class CharClass : uint8_t { kLetter, kNumber, kWhitespace, kOther };

CharClass ClassifyCodePoint(char32_t cp);

}  // namespace fuji::text
