// Fuzzes the restricted unpickler (UnpickleStateDict) with data.pkl streams. Storage records are
// heap buffers of a few sizes, named "0" to "7" ("0" holds 4 KiB, "7" nothing; a small state
// dict's storages fit); any other key is missing. Every tensor of a state dict it accepts must be a view inside one of them.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "lib/format/torch_pickle.h"
#include "tests/fuzz/fuzz_views.h"

namespace {

struct Records {
  std::map<std::string, std::vector<uint8_t>> bytes;
  Records() {
    const size_t sizes[] = {4096, 1024, 256, 64, 16, 8, 4, 0};
    for (size_t k = 0; k < 8; ++k) bytes[std::to_string(k)] = std::vector<uint8_t>(sizes[k], uint8_t(k));
  }
};

const Records& TheRecords() {
  static const Records* records = new Records();
  return *records;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // A copy of exactly the input's size, so that a read past its end is a heap overflow.
  const std::unique_ptr<char[]> pickle(new char[size]);
  std::copy(data, data + size, pickle.get());
  const Records& records = TheRecords();
  const fuji::format::StorageLookup lookup = [&](const std::string& key) -> fuji::Result<std::string_view> {
    auto it = records.bytes.find(key);
    if (it == records.bytes.end()) return fuji::DataLoss("storage record '" + key + "' is missing");
    return std::string_view(reinterpret_cast<const char*>(it->second.data()), it->second.size());
  };
  fuji::Result<std::vector<fuji::format::TensorView>> tensors =
      fuji::format::UnpickleStateDict(std::string_view(pickle.get(), size), lookup);
  if (!tensors.ok()) return 0;
  for (const fuji::format::TensorView& view : *tensors) {
    const std::vector<uint8_t>* home = nullptr;
    for (const auto& [key, bytes] : records.bytes) {
      if (view.data >= bytes.data() && view.data <= bytes.data() + bytes.size()) home = &bytes;
    }
    if (view.nbytes == 0) continue;
    if (home == nullptr) {
      std::fprintf(stderr, "tensor '%s' points outside every storage record\n", view.name.c_str());
      std::abort();
    }
    fuji::fuzz::CheckViews({view}, home->data(), home->data() + home->size());
  }
  return 0;
}
