// The GPT-2 pre-tokenizer regex, matched by hand: alternatives are tried in the regex's order.
#include "lib/text/pretokenizer.h"

namespace fuji::text {

PreTokenizer::Char PreTokenizer::CharAt(size_t pos) const {
  const DecodedChar c = DecodeUtf8At(text_, pos);
  return {c.code_point, ClassifyCodePoint(c.code_point), c.length};
}

size_t PreTokenizer::ContractionLength(size_t pos) const {
  const std::string_view rest = text_.substr(pos + 1);
  if (rest.empty()) return 0;
  switch (rest[0]) {
    case 's':
    case 't':
    case 'm':
    case 'd': return 2;
    default: break;
  }
  const std::string_view two = rest.substr(0, 2);
  if (two == "re" || two == "ve" || two == "ll") return 3;
  return 0;
}

size_t PreTokenizer::RunEnd(size_t pos, CharClass char_class, size_t* last_start) const {
  *last_start = pos;
  while (pos < text_.size()) {
    const Char c = CharAt(pos);
    if (c.char_class != char_class) break;
    *last_start = pos;
    pos += c.length;
  }
  return pos;
}

size_t PreTokenizer::MatchEnd(size_t start) const {
  const Char first = CharAt(start);
  // 's|'t|'re|'ve|'m|'ll|'d (case-sensitive, ASCII apostrophe only).
  if (first.code_point == '\'') {
    if (const size_t length = ContractionLength(start)) return start + length;
  }
  // ` ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+`: an optional U+0020 then a run of one class. The space
  // only joins a following letter, number or other character, never other whitespace.
  size_t run_start = start;
  CharClass run_class = first.char_class;
  if (first.code_point == ' ' && start + 1 < text_.size()) {
    const Char second = CharAt(start + 1);
    if (second.char_class != CharClass::kWhitespace) {
      run_start = start + 1;
      run_class = second.char_class;
    }
  }
  size_t last_start;
  if (run_class != CharClass::kWhitespace) return RunEnd(run_start, run_class, &last_start);
  // `\s+(?!\S)|\s+`: a whitespace run followed by a non-space backtracks by one character, which
  // is left to prefix the next word (" world"); a single whitespace character is matched alone.
  const size_t end = RunEnd(start, CharClass::kWhitespace, &last_start);
  if (end == text_.size() || last_start == start) return end;
  return last_start;
}

std::string_view PreTokenizer::Next() {
  if (pos_ == text_.size()) return {};
  const size_t start = pos_;
  pos_ = MatchEnd(start);
  return text_.substr(start, pos_ - start);
}

}  // namespace fuji::text
