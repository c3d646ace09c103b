// canon::expf (docs/arithmetic.md section 8) without branches, so that loops over it
// vectorise: clamp first so that every lane computes finite integers, select the NaN, overflow
// and underflow cases last. Internal linkage: instruction-set files compile their own copy.
#pragma once

#include <cstdint>
#include <cstring>

namespace galleon::canon {
namespace {

inline float bits_to_float(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

inline float expf_branchless(float x) {
  // Clamp first so that every lane computes finite integers; the range cases are selected last.
  float xc = x > 89.0f ? 89.0f : x;
  xc = xc < -104.0f ? -104.0f : xc;
  xc = xc == xc ? xc : 0.0f;
  const float n = (xc * 1.44269502162933349609375f + 12582912.0f) - 12582912.0f;
  float r = xc - n * 0.693145751953125f;
  r = r - n * 1.428606765330187045e-06f;
  float p = 1.0f / 5040.0f;
  p = p * r + 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  const int32_t ni = int32_t(n);
  const int32_t n1 = ni >> 1;  // floor(n / 2)
  const int32_t n2 = ni - n1;
  const float v = (p * bits_to_float(uint32_t(n1 + 127) << 23)) * bits_to_float(uint32_t(n2 + 127) << 23);
  float out = x < -103.972084045410156f ? 0.0f : v;
  out = x > 88.72283935546875f ? __builtin_inff() : out;
  return x == x ? out : x;
}

}  // namespace
}  // namespace galleon::canon
