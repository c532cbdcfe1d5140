// GPT-2's bytes_to_unicode table and its inverse.
#include "lib/text/byte_alphabet.h"

#include <array>

namespace fuji::text {
namespace {

// Every alphabet code point is below U+0144: 256 bytes, of which 68 are remapped past U+00FF.
constexpr char32_t kAlphabetEnd = 0x144;

bool IsPrintableLatin1(int b) {
  return (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
}

struct Alphabet {
  std::array<char32_t, 256> byte_to_code_point;
  std::array<int, kAlphabetEnd> code_point_to_byte;
};

const Alphabet& GetAlphabet() {
  static const Alphabet alphabet = [] {
    Alphabet a;
    a.code_point_to_byte.fill(-1);
    char32_t next_remapped = 0x100;
    for (int b = 0; b < 256; ++b) {
      const char32_t cp = IsPrintableLatin1(b) ? static_cast<char32_t>(b) : next_remapped++;
      a.byte_to_code_point[b] = cp;
      a.code_point_to_byte[cp] = b;
    }
    return a;
  }();
  return alphabet;
}

}  // namespace

char32_t ByteToCodePoint(uint8_t b) {
  return GetAlphabet().byte_to_code_point[b];
}

int CodePointToByte(char32_t cp) {
  return cp < kAlphabetEnd ? GetAlphabet().code_point_to_byte[cp] : -1;
}

}  // namespace fuji::text
