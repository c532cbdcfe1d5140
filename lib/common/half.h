// bfloat16 and IEEE half as 16-bit patterns, converted to and from float: for kernels (the
// functions are inline, so vectorized loops inline them) and for code that writes such tensors.
#pragma once

#include <cstdint>
#include <cstring>

namespace fuji {

inline uint32_t FloatBits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
}
inline float FloatFromBits(uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

// bfloat16 is the top half of a float: exact.
inline float Bf16ToFloat(uint16_t h) {
  return FloatFromBits(static_cast<uint32_t>(h) << 16);
}

// Round to nearest even; NaN stays a quiet NaN with its sign and the top of its payload.
inline uint16_t FloatToBf16(float f) {
  const uint32_t u = FloatBits(f);
  const uint32_t rounded = (u + 0x7FFFu + ((u >> 16) & 1u)) >> 16;
  const uint32_t nan = (u >> 16) | 0x40u;
  return static_cast<uint16_t>((u & 0x7FFFFFFFu) > 0x7F800000u ? nan : rounded);
}

// IEEE half to float, exact (normals, subnormals, infinities and NaNs), written with selects.
inline float F16ToFloat(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  uint32_t o = static_cast<uint32_t>(h & 0x7FFFu) << 13;
  const uint32_t exp = o & 0x0F800000u;
  o += (127u - 15u) << 23;
  const uint32_t inf_nan = o + ((128u - 16u) << 23);
  const float sub = FloatFromBits(o + (1u << 23)) - FloatFromBits(113u << 23);
  const uint32_t r = exp == 0x0F800000u ? inf_nan : (exp == 0 ? FloatBits(sub) : o);
  return FloatFromBits(r | sign);
}

// Float to IEEE half, round to nearest even; overflow to infinity, NaN stays NaN.
inline uint16_t FloatToF16(float f) {
  const uint32_t f16max = (127u + 16u) << 23;
  const uint32_t denorm_magic = ((127u - 15u) + (23u - 10u) + 1u) << 23;
  uint32_t u = FloatBits(f);
  const uint32_t sign = u & 0x80000000u;
  u ^= sign;
  const uint32_t big = u > 0x7F800000u ? 0x7E00u : 0x7C00u;
  const uint32_t sub = FloatBits(FloatFromBits(u) + FloatFromBits(denorm_magic)) - denorm_magic;
  const uint32_t mant_odd = (u >> 13) & 1u;
  const uint32_t normal = (u + ((15u - 127u) << 23) + 0xFFFu + mant_odd) >> 13;
  const uint32_t o = u >= f16max ? big : (u < (113u << 23) ? sub : normal);
  return static_cast<uint16_t>(o | (sign >> 16));
}

}  // namespace fuji
