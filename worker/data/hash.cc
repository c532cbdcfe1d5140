// Implements the content-fingerprint hash of hash.h: 8-byte words through a multiply-xorshift mix.
#include "worker/data/hash.h"

#include <cstring>

namespace fuji::data {

void Hasher::Update(std::string_view bytes) {
  uint64_t h = state_ ^ Mix64(bytes.size() + 0x632be59bd9b4e019ULL);
  size_t i = 0;
  // Four independent lanes keep the multiplier pipeline busy on long inputs.
  uint64_t lanes[4] = {h, h ^ 0x8ebc6af09c88c6e3ULL, h ^ 0x589965cc75374cc3ULL,
                       h ^ 0x1d8e4e27c47d124fULL};
  for (; i + 32 <= bytes.size(); i += 32) {
    for (int k = 0; k < 4; ++k) {
      uint64_t word;
      std::memcpy(&word, bytes.data() + i + 8 * k, 8);
      lanes[k] = (lanes[k] ^ word) * 0x9fb21c651e98df25ULL;
      lanes[k] ^= lanes[k] >> 29;
    }
  }
  for (int k = 0; k < 4; ++k) h = Mix64(h ^ lanes[k]) + static_cast<uint64_t>(k);
  for (; i + 8 <= bytes.size(); i += 8) {
    uint64_t word;
    std::memcpy(&word, bytes.data() + i, 8);
    h = Mix64(h ^ word);
  }
  uint64_t tail = 0;
  if (i < bytes.size()) std::memcpy(&tail, bytes.data() + i, bytes.size() - i);
  state_ = Mix64(h ^ tail ^ (static_cast<uint64_t>(bytes.size() - i) << 56));
}

uint64_t HashBytes(std::string_view bytes, uint64_t seed) {
  Hasher hasher(seed);
  hasher.Update(bytes);
  return hasher.Digest();
}

}  // namespace fuji::data
