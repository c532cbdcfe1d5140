// UTF-8 validation and code point classification by binary search over the generated tables.
#include "lib/text/unicode.h"

#include <algorithm>
#include <array>

#include "lib/text/unicode_tables.h"

namespace fuji::text {
namespace {

bool InRanges(const CodePointRange* ranges, size_t size, char32_t cp) {
  const CodePointRange* end = ranges + size;
  // The first range whose last code point is >= cp is the only one that can contain it.
  const CodePointRange* it = std::lower_bound(
      ranges, end, cp, [](const CodePointRange& r, char32_t c) { return r.last < c; });
  return it != end && it->first <= cp;
}

CharClass ClassifySlow(char32_t cp) {
  if (InRanges(kLetterRanges, kLetterRangesSize, cp)) return CharClass::kLetter;
  if (InRanges(kNumberRanges, kNumberRangesSize, cp)) return CharClass::kNumber;
  if (InRanges(kWhitespaceRanges, kWhitespaceRangesSize, cp)) return CharClass::kWhitespace;
  return CharClass::kOther;
}

// The length of the valid UTF-8 sequence at s[pos], or 0 if it is invalid.
size_t ValidSequenceLength(std::string_view s, size_t pos) {
  const auto byte = [&](size_t i) { return static_cast<uint8_t>(s[pos + i]); };
  const uint8_t lead = byte(0);
  if (lead < 0x80) return 1;
  size_t length;
  // The second byte's range excludes overlong forms, surrogates and code points past U+10FFFF.
  uint8_t second_min = 0x80;
  uint8_t second_max = 0xBF;
  if (lead >= 0xC2 && lead <= 0xDF) {
    length = 2;
  } else if (lead >= 0xE0 && lead <= 0xEF) {
    length = 3;
    if (lead == 0xE0) second_min = 0xA0;  // overlong below U+0800
    if (lead == 0xED) second_max = 0x9F;  // surrogates U+D800..U+DFFF
  } else if (lead >= 0xF0 && lead <= 0xF4) {
    length = 4;
    if (lead == 0xF0) second_min = 0x90;  // overlong below U+10000
    if (lead == 0xF4) second_max = 0x8F;  // above U+10FFFF
  } else {
    return 0;  // a continuation byte, an overlong 2-byte lead (C0, C1) or F5..FF
  }
  if (s.size() - pos < length) return 0;
  if (byte(1) < second_min || byte(1) > second_max) return 0;
  for (size_t i = 2; i < length; ++i) {
    if ((byte(i) & 0xC0) != 0x80) return 0;
  }
  return length;
}

}  // namespace

size_t FindInvalidUtf8(std::string_view s) {
  size_t pos = 0;
  while (pos < s.size()) {
    const size_t length = ValidSequenceLength(s, pos);
    if (length == 0) return pos;
    pos += length;
  }
  return pos;
}

bool IsValidUtf8(std::string_view s) {
  return FindInvalidUtf8(s) == s.size();
}

std::string EncodeUtf8(char32_t cp) {
  std::string out;
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
  return out;
}

CharClass ClassifyCodePoint(char32_t cp) {
  // ASCII dominates most text; a table keeps the hot path free of binary searches. A function-local
  // static so that callers from other translation units' static initializers are safe.
  static const std::array<CharClass, 128> kAsciiClasses = [] {
    std::array<CharClass, 128> classes{};
    for (char32_t c = 0; c < 128; ++c) classes[c] = ClassifySlow(c);
    return classes;
  }();
  return cp < 128 ? kAsciiClasses[cp] : ClassifySlow(cp);
}

}  // namespace fuji::text
