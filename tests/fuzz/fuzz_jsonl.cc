// Fuzzes the training data reader (ParseDataFile) with a file's contents, as JSON lines (one
// object with a string "text" per line) and as plain text. Every document it returns is non-empty
// valid UTF-8; a text file is one document holding exactly the file.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "lib/text/unicode.h"
#include "worker/data/documents.h"

namespace {

void Check(const fuji::Result<std::vector<fuji::data::Document>>& documents) {
  if (!documents.ok()) return;
  for (const fuji::data::Document& d : *documents) {
    if (d.text.empty() || !fuji::text::IsValidUtf8(d.text)) {
      std::fprintf(stderr, "document %s is empty or not UTF-8\n", d.source.c_str());
      std::abort();
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view contents(reinterpret_cast<const char*>(data), size);
  fuji::data::DataFile file{"data.jsonl", "data.jsonl", size, fuji::data::FileKind::kJsonLines};
  Check(fuji::data::ParseDataFile(file, contents));

  file = {"data.txt", "data.txt", size, fuji::data::FileKind::kText};
  auto text = fuji::data::ParseDataFile(file, contents);
  Check(text);
  if (text.ok() && (text->size() != (size > 0 ? 1u : 0u) || (size > 0 && text->front().text != contents))) {
    std::fprintf(stderr, "a text file is not one document holding the file\n");
    std::abort();
  }
  return 0;
}
