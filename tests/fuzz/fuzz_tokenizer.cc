// Fuzzes GPT-2's BPE tokenizer with arbitrary bytes: Encode (refusing invalid UTF-8, else ids that
// Decode back to exactly the bytes given), Decode of the bytes read as 16-bit token ids, and the parsers
// of the tokenizer's own files (vocab.json; merges.txt against GPT-2's vocabulary). The vocabulary
// is the one the build copied to share/fuji (FUJI_VOCAB_DIR overrides), loaded once.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "lib/common/file_util.h"
#include "lib/text/bpe_tokenizer.h"
#include "lib/text/vocab_files.h"

namespace {

const fuji::text::BpeTokenizer* tokenizer = nullptr;
const fuji::text::TokenIds* vocab = nullptr;

[[noreturn]] void Die(const std::string& what) {
  std::fprintf(stderr, "fuzz_tokenizer: %s\n", what.c_str());
  std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  const char* env = std::getenv("FUJI_VOCAB_DIR");
  const std::string dir = env != nullptr && *env != '\0' ? env : FUJI_SHARE_DIR;
  auto loaded = fuji::text::BpeTokenizer::LoadFromDir(dir);
  if (!loaded.ok()) Die(loaded.status().message() + " (run scripts/bootstrap, or set FUJI_VOCAB_DIR)");
  tokenizer = new fuji::text::BpeTokenizer(std::move(loaded).value());
  auto files = fuji::text::FindTokenizerFiles(dir);
  if (!files.ok()) Die(files.status().message());
  auto text = fuji::ReadFile(files->vocab);
  if (!text.ok()) Die(text.status().message());
  auto ids = fuji::text::ParseVocabJson(files->vocab, *text);
  if (!ids.ok()) Die(ids.status().message());
  vocab = new fuji::text::TokenIds(std::move(ids).value());
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  fuji::Result<std::vector<int32_t>> ids = tokenizer->Encode(text);
  if (ids.ok()) {
    fuji::Result<std::string> back = tokenizer->Decode(*ids);
    if (!back.ok() || *back != text) Die("Decode(Encode(text)) is not the text");
  } else if (fuji::text::IsValidUtf8(text)) {
    Die("Encode refused valid UTF-8: " + ids.status().message());
  }

  // The bytes as 16-bit ids: most are inside GPT-2's 50,257, some are not.
  std::vector<int32_t> raw(size / 2);
  for (size_t i = 0; i < raw.size(); ++i) raw[i] = data[2 * i] | (data[2 * i + 1] << 8);
  const bool in_range = tokenizer->CheckIds(raw).ok();
  if (tokenizer->Decode(raw).ok() != in_range) Die("Decode and CheckIds disagree");

  (void)fuji::text::ParseVocabJson("vocab.json", text);
  (void)fuji::text::ParseMerges("merges.txt", text, *vocab);
  return 0;
}
