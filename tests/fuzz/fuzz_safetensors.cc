// Fuzzes the safetensors reader (SafetensorsFile::Open) with whole files: the 8-byte header
// length, the JSON header (depth-bounded, duplicate keys refused) and the data section. Every
// tensor of a file it accepts must be a view inside the file's data and be found by its name.
#include <cstdint>
#include <cstdio>
#include <cstdlib>

#include "lib/format/safetensors.h"
#include "tests/fuzz/fuzz_file.h"
#include "tests/fuzz/fuzz_views.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string& path = fuji::fuzz::ScratchFile::Get().Write(data, size);
  fuji::Result<fuji::format::SafetensorsFile> file = fuji::format::SafetensorsFile::Open(path);
  if (!file.ok()) return 0;
  const fuji::MappedFile& mapped = file->file();
  fuji::fuzz::CheckViews(file->tensors(), mapped.data(), mapped.data() + mapped.size());
  for (const fuji::format::TensorView& view : file->tensors()) {
    if (file->Find(view.name) != &view || !view.contiguous()) {
      std::fprintf(stderr, "tensor '%s' is not found by its name or not contiguous\n", view.name.c_str());
      std::abort();
    }
  }
  return 0;
}
