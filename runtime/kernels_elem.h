// Elementwise operations of the forward pass, written as plain loops with branch-free bodies
// so that each instruction-set file that includes this header (inside its region,
// runtime/isa_region.h) gets its own copy, vectorised for its instruction set. Every element's value is the one docs/arithmetic.md defines (vectorising elementwise
// IEEE operations changes nothing; no contraction: -ffp-contract=off). The scalar path uses
// these same functions; kernels_test checks every vectorised path against it bit for bit.
#pragma once

#include <cstdint>
#include <cstring>

#include "runtime/canon_expf.h"

namespace galleon::kern {
namespace {

namespace elem {

inline void add(float* x, const float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) x[i] = x[i] + y[i];
}
inline void axpy(float* y, float a, const float* x, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] = y[i] + a * x[i];
}
inline void scale(float* x, float s, int64_t n) {
  for (int64_t i = 0; i < n; ++i) x[i] = x[i] * s;
}
inline void scale_mul(float* y, const float* x, float s, const float* w, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] = (x[i] * s) * w[i];
}
inline void exp_sub(float* e, const float* x, float m, int64_t n) {
  for (int64_t i = 0; i < n; ++i) e[i] = canon::expf_branchless(x[i] - m);
}
inline void silu_mul(float* g, const float* u, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    const float x = g[i];
    g[i] = (x / (1.0f + canon::expf_branchless(-x))) * u[i];
  }
}
inline void gelu_mul(float* g, const float* u, int64_t n) {
  for (int64_t i = 0; i < n; ++i) g[i] = canon::gelu_branchless(g[i]) * u[i];
}

// out[d] = the 32-lane canonical sum over j < n of e[j] * v[j * v_stride + d] (lane j mod 32,
// increasing j, then the fixed tree), for d < hd. lanes: scratch of 32 * hd floats.
inline void lane_rows(const float* e, const float* v, int64_t v_stride, int64_t n, int64_t hd,
               float* lanes, float* out) {
  for (int64_t i = 0; i < 32 * hd; ++i) lanes[i] = 0.0f;
  for (int64_t j = 0; j < n; ++j) {
    float* l = lanes + (j % 32) * hd;
    const float* vj = v + j * v_stride;
    const float ej = e[j];
    for (int64_t d = 0; d < hd; ++d) l[d] = l[d] + ej * vj[d];
  }
  for (int64_t st = 16; st >= 1; st /= 2)
    for (int64_t i = 0; i < st; ++i) {
      float* a = lanes + i * hd;
      const float* b = lanes + (i + st) * hd;
      for (int64_t d = 0; d < hd; ++d) a[d] = a[d] + b[d];
    }
  for (int64_t d = 0; d < hd; ++d) out[d] = lanes[d];
}

}  // namespace elem
}  // namespace
}  // namespace galleon::kern
