// canon::expf, tanh and gelu (docs/arithmetic.md section 8) without branches, so that loops
// over them vectorise: clamp first so that every lane computes finite integers, select the NaN,
// overflow and underflow cases last. Internal linkage: instruction-set files compile their own
// copy.
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

// tanh(y) = sign(y) * (1 - e) / (1 + e) with e = expf(-2|y|) (docs/arithmetic.md section 8).
inline float tanhf_branchless(float y) {
  const float e = expf_branchless(-2.0f * __builtin_fabsf(y));
  return __builtin_copysignf((1.0f - e) / (1.0f + e), y);
}

// GELU, tanh form: (0.5 x) (1 + tanh((sqrt(2/pi) x) (1 + (0.044715 x) x))).
inline float gelu_branchless(float x) {
  const float y = (0x1.988454p-1f * x) * (1.0f + (0x1.6e4e26p-5f * x) * x);
  return (0.5f * x) * (1.0f + tanhf_branchless(y));
}

}  // namespace
}  // namespace galleon::canon
