// Fuzzes the zip reader (ZipArchive: the end record, Zip64, the central directory and every local
// header) on a buffer of exactly the input's size, then the whole torch.save reader
// (TorchZipFile::Open: the zip, data.pkl through the unpickler, the storage records). Every entry
// of an archive it accepts is found by its name and reads inside the buffer.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>

#include "lib/format/torch_zip.h"
#include "lib/format/zip_archive.h"
#include "tests/fuzz/fuzz_file.h"
#include "tests/fuzz/fuzz_views.h"

namespace {

[[noreturn]] void Fail(const char* what, const std::string& name) {
  std::fprintf(stderr, "zip entry '%s': %s\n", name.c_str(), what);
  std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  {
    const std::unique_ptr<uint8_t[]> copy(new uint8_t[size]);
    std::copy(data, data + size, copy.get());
    const uint8_t* end = copy.get() + size;
    fuji::Result<fuji::format::ZipArchive> zip = fuji::format::ZipArchive::Parse("fuzz.zip", copy.get(), size);
    if (zip.ok()) {
      for (const fuji::format::ZipArchive::Entry& entry : zip->entries()) {
        if (zip->Find(entry.name) != &entry) Fail("not found by its name", entry.name);
        fuji::Result<std::string_view> bytes = zip->Read(entry);
        if (!bytes.ok()) continue;
        const auto* begin = reinterpret_cast<const uint8_t*>(bytes->data());
        if (bytes->size() > 0 && (begin < copy.get() || bytes->size() > static_cast<size_t>(end - begin))) {
          Fail("reads outside the archive", entry.name);
        }
        volatile uint8_t sum = 0;
        for (char c : *bytes) sum = sum + static_cast<uint8_t>(c);
      }
    }
  }
  const std::string& path = fuji::fuzz::ScratchFile::Get().Write(data, size);
  fuji::Result<fuji::format::TorchZipFile> checkpoint = fuji::format::TorchZipFile::Open(path);
  if (checkpoint.ok()) {
    for (const fuji::format::TensorView& view : checkpoint->tensors()) {
      if (checkpoint->Find(view.name) != &view) Fail("tensor not found by its name", view.name);
      volatile uint8_t sum = 0;
      for (size_t i = 0; i < view.nbytes; ++i) sum = sum + view.data[i];
    }
  }
  return 0;
}
