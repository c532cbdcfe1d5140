// GPT-2's byte alphabet: every byte stands for one printable code point in vocabulary tokens.
#pragma once

#include <cstdint>

namespace fuji::text {

// The code point that byte b is written as in vocab.json and merges.txt (GPT-2's
// bytes_to_unicode: printable Latin-1 bytes stand for themselves, the rest for U+0100 onwards).
char32_t ByteToCodePoint(uint8_t b);

// The byte that cp stands for, or -1 if cp is not in the alphabet.
int CodePointToByte(char32_t cp);

}  // namespace fuji::text
