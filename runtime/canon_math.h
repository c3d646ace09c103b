// Canonical transcendental functions (design brief section 6): built only from IEEE-exact
// operations (+ - * /, sqrt, round-to-nearest-even, scaling by powers of two) in a fixed order,
// so every machine, compiler and libc gives the same bits. Definitions: docs/arithmetic.md.
#pragma once

#include <cstdint>

namespace galleon::canon {

// e^x in binary32. NaN -> NaN, x > 88.7228394 -> +inf, x < -103.9721 -> +0.
float expf(float x);
// x / (1 + e^-x).
float silu(float x);
// sign(x) * (1 - e) / (1 + e), e = expf(-2|x|).
float tanh(float x);
// GELU in its tanh form (gemma's FFN).
float gelu(float x);
// cap * tanh(x / cap): gemma2's soft capping of attention scores and logits.
float softcap(float x, float cap);
// Double-precision helpers used for tables (RoPE frequencies, rotation angles).
double exp(double x);
double log(double x);                    // x > 0
double pow(double base, double e);       // base > 0
void sincos(double x, double* s, double* c);

// The canonical 32-lane reduction tree: lane[i] += lane[i + s] for s = 16, 8, 4, 2, 1.
inline float reduce_lanes(float lanes[32]) {
  for (int s = 16; s >= 1; s /= 2)
    for (int i = 0; i < s; ++i) lanes[i] = lanes[i] + lanes[i + s];
  return lanes[0];
}

}  // namespace galleon::canon
