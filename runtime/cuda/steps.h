// One work item of each elementwise CUDA kernel (runtime/cuda/step_kernels.cuh) as a
// __host__ __device__ function: the kernels run them in grid-stride loops, the CPU emulation of
// the forward pass (tests/cuda_emu_test.cpp) in plain loops. Arithmetic as runtime/session.cpp.
#pragma once

#include <cstdint>

#include "runtime/cuda/canon_device.h"

namespace galleon::cdev::step {

// Tokens per warp in the prompt matmul kernels (cdev::lane_dots_tile): a weight block is read
// once for them.
constexpr int kMatmulTokens = 4;

// Item i of the activation quantization of ntok rows of n floats: block i % nb of row i / nb.
// (The GPU's kernels quantize a block with a warp, giving the same bytes: session.cu.)
template <int kElems, class Block>
GALLEON_HD void quantize(const float* x, int64_t n, int64_t i, Block* out) {
  const int64_t nb = n / kElems;
  const float* src = x + (i / nb) * n + kElems * (i % nb);
  if constexpr (kElems == 32)
    quantize_a8_block(src, out + i);
  else
    quantize_a8k_block(src, out + i);
}

// RMSNorm's scale from the canonical sum of squares: 1 / sqrt(ss / n + eps).
GALLEON_HD float rms_scale(float sum_sq, int64_t n, float eps) {
  const float mean = sum_sq / float(n);
  return 1.0f / sqrtf(mean + eps);
}

// RMSNorm's output element: (x * scale) * w.
GALLEON_HD float rms_apply(float x, float scale, float w) { return (x * scale) * w; }

// x[i] + b[i % dim] (a bias on every token's row) or x[i] + b[i] (a residual).
GALLEON_HD void add(float* x, const float* b, int64_t dim, int64_t i, bool broadcast) {
  x[i] = x[i] + b[broadcast ? i % dim : i];
}

// Rotary pair k = (t * n_heads + h) * (n_rot / 2) + i of token t (position n_past + t).
GALLEON_HD void rope(float* x, int64_t k, int64_t n_heads, int64_t hd, int64_t n_rot, bool neox,
                     int64_t n_past, const float* cos_t, const float* sin_t) {
  const int64_t half = n_rot / 2;
  const int64_t i = k % half, h = (k / half) % n_heads, t = k / (half * n_heads);
  float* v = x + (t * n_heads + h) * hd;
  const int64_t a = neox ? i : 2 * i, b = neox ? i + half : 2 * i + 1;
  const float c = cos_t[(n_past + t) * half + i], s = sin_t[(n_past + t) * half + i];
  const float x0 = v[a], x1 = v[b];
  v[a] = x0 * c - x1 * s;
  v[b] = x0 * s + x1 * c;
}

GALLEON_HD void silu_mul(float* g, const float* u, int64_t i) { g[i] = silu(g[i]) * u[i]; }
GALLEON_HD void gelu_mul(float* g, const float* u, int64_t i) { g[i] = gelu(g[i]) * u[i]; }
GALLEON_HD void softcap(float* x, float cap, int64_t i) { x[i] = cdev::softcap(x[i], cap); }
GALLEON_HD void scale(float* x, float s, int64_t i) { x[i] = x[i] * s; }

}  // namespace galleon::cdev::step
