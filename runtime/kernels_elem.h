// Elementwise operations of the forward pass, written as plain loops with branch-free bodies
// so that each instruction-set file that includes this header gets them vectorised with its own
// flags. Every element's value is the one docs/arithmetic.md defines (vectorising elementwise
// IEEE operations changes nothing; no contraction: -ffp-contract=off). expf_lane is
// canon::expf (section 8) computed without branches; kernels_test checks every path against it.
#pragma once

#include <cstdint>
#include <cstring>

namespace galleon::kern {
namespace {

inline float bits_to_float(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

inline float expf_lane(float x) {
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

namespace elem {

void add(float* x, const float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) x[i] = x[i] + y[i];
}
void axpy(float* y, float a, const float* x, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] = y[i] + a * x[i];
}
void scale(float* x, float s, int64_t n) {
  for (int64_t i = 0; i < n; ++i) x[i] = x[i] * s;
}
void scale_mul(float* y, const float* x, float s, const float* w, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] = (x[i] * s) * w[i];
}
void exp_sub(float* e, const float* x, float m, int64_t n) {
  for (int64_t i = 0; i < n; ++i) e[i] = expf_lane(x[i] - m);
}
void silu_mul(float* g, const float* u, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    const float x = g[i];
    g[i] = (x / (1.0f + expf_lane(-x))) * u[i];
  }
}

}  // namespace elem
}  // namespace
}  // namespace galleon::kern
