// A fast, non-cryptographic 64-bit hash for cache keys (content fingerprints, not security).
#pragma once

#include <cstdint>
#include <string_view>

namespace fuji::data {

// splitmix64's finalizer: a bijective 64-bit mix.
inline uint64_t Mix64(uint64_t x) {
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ULL;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebULL;
  x ^= x >> 31;
  return x;
}

// Incremental 64-bit hash. Each Update also mixes in its length, so the digest depends on how the
// bytes are split into Updates: feed one field per Update. Same value on every little-endian
// platform; not stable across changes to this file (bump the cache version if it changes).
class Hasher {
 public:
  explicit Hasher(uint64_t seed = 0x66756a6964617461ULL) : state_(Mix64(seed)) {}
  void Update(std::string_view bytes);
  void UpdateU64(uint64_t value) { state_ = Mix64(state_ ^ Mix64(value + 0x9e3779b97f4a7c15ULL)); }
  uint64_t Digest() const { return Mix64(state_ ^ 0xa0761d6478bd642fULL); }

 private:
  uint64_t state_;
};

// Hash of one byte string.
uint64_t HashBytes(std::string_view bytes, uint64_t seed = 0);

}  // namespace fuji::data
