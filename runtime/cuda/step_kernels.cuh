// The kernels of the elementwise steps and the activation quantization (docs/arithmetic.md
// sections 4 and 9), each value by canon_device.h's functions.
//
// Part of runtime/cuda/session.cu's translation unit (its definitions are in an unnamed
// namespace): only session.cu includes it.
#pragma once

#include <cstdint>

#include "runtime/cuda/canon_device.h"
#include "runtime/cuda/handles.cuh"
#include "runtime/cuda/steps.h"
#include "runtime/quant.h"

namespace galleon::cuda {
namespace {

// The values the quantization kernels read: element i of x (Plain), or of the gated product
// g * act(u)'s as the silu_mul and gelu_mul kernels make it (Glu: the FFN's down projection's
// input, made and quantized in one kernel; the same floats, so the same bytes).
struct PlainValues {
  const float* x;
  __device__ float operator()(int64_t i) const { return x[i]; }
};
template <bool kGelu>
struct GluValues {
  const float *g, *u;
  __device__ float operator()(int64_t i) const {
    return kGelu ? cdev::gelu(g[i]) * u[i] : cdev::silu(g[i]) * u[i];
  }
};

// Activation quantization (docs/arithmetic.md section 4), one warp per block of a token's row:
// amax is a maximum (exact in any order; NaN never compares greater, as in cdev::act_scale),
// each quant depends on its element and the scale alone, and the integer sums are exact.
// A8: lane j quantizes element j.
template <class Values>
__global__ void quantize_a8_kernel(Values x, int64_t n, int64_t total, kern::A8Block* out) {
  const int lane = int(threadIdx.x) & 31;
  const int64_t b = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) >> 5;
  if (b >= total) return;  // whole warps leave together
  const int64_t nb = n / 32;
  const float xv = x((b / nb) * n + 32 * (b % nb) + lane);
  const float a = fabsf(xv);
  const float amax = warp_max(a > 0.0f ? a : 0.0f);
  const float d = amax / 127.0f;
  const float inv = d == 0.0f ? 0.0f : 1.0f / d;
  const int q = cdev::act_quant(xv, inv);
  out[b].q[lane] = int8_t(q);
  const int sum = warp_sum(q, 32);
  if (lane == 0) {
    out[b].d = d;
    out[b].sum = sum;
  }
}

// A8K: lane l quantizes elements 8l .. 8l + 7; lanes 2g and 2g + 1 make bsums[g].
template <class Values>
__global__ void quantize_a8k_kernel(Values x, int64_t n, int64_t total, kern::A8KBlock* out) {
  const int lane = int(threadIdx.x) & 31;
  const int64_t b = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) >> 5;
  if (b >= total) return;  // whole warps leave together
  const int64_t nb = n / 256;
  const int64_t src = (b / nb) * n + 256 * (b % nb) + 8 * lane;
  float xv[8];
  float m = 0.0f;
#pragma unroll
  for (int j = 0; j < 8; ++j) {
    xv[j] = x(src + j);
    const float a = fabsf(xv[j]);
    m = a > m ? a : m;
  }
  const float amax = warp_max(m);
  const float d = amax / 127.0f;
  const float inv = d == 0.0f ? 0.0f : 1.0f / d;
  int s = 0;
#pragma unroll
  for (int j = 0; j < 8; ++j) {
    const int q = cdev::act_quant(xv[j], inv);
    out[b].q[8 * lane + j] = int8_t(q);
    s += q;
  }
  s = warp_sum(s, 2);
  if ((lane & 1) == 0) out[b].bsums[lane >> 1] = int16_t(s);
  if (lane == 0) out[b].d = d;
}

constexpr int kNormWarps = 8;

// y = (x * (1 / sqrt(sum_sq(x) / n + eps))) * w for kNormWarps tokens per block: warp w makes
// the canonical sum of squares of token kNormWarps * block + w, then every thread applies the
// scales (a token's row at a time).
__global__ void rms_norm_kernel(const float* x, const float* w, int64_t n, float eps,
                                int64_t ntok, float* y) {
  __shared__ float s_scale[kNormWarps];
  const int warp = int(threadIdx.x) >> 5, lane = int(threadIdx.x) & 31;
  const int64_t t0 = int64_t(blockIdx.x) * kNormWarps;
  const int64_t rows = ntok - t0 < kNormWarps ? ntok - t0 : kNormWarps;
  if (warp < rows) {  // warp-uniform
    const float* xr = x + (t0 + warp) * n;
    const float ss = cdev::warp_tree(cdev::lane_dot_f32(xr, xr, n, lane));
    if (lane == 0) s_scale[warp] = cdev::step::rms_scale(cdev::canonical_nan(ss), n, eps);
  }
  __syncthreads();
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + (t0 + r) * n;
    float* yr = y + (t0 + r) * n;
    const float scale = s_scale[r];
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x)
      yr[i] = cdev::step::rms_apply(xr[i], scale, w[i]);
  }
}

__global__ void add_kernel(float* x, const float* b, int64_t dim, int64_t total, bool broadcast) {
  GALLEON_GRID_STRIDE(i, total) cdev::step::add(x, b, dim, i, broadcast);
}

// The kernels that depend on the position read n_past from GPU memory (CudaExec::pos_).
__global__ void rope_kernel(float* x, int64_t n_heads, int64_t hd, int64_t n_rot, bool neox,
                            int64_t ntok, const int64_t* n_past, const float* cos_t,
                            const float* sin_t) {
  const int64_t past = *n_past;
  GALLEON_GRID_STRIDE(k, ntok * n_heads * (n_rot / 2))
  cdev::step::rope(x, k, n_heads, hd, n_rot, neox, past, cos_t, sin_t);
}

// cache rows n_past .. n_past + ntok - 1 (kv_dim floats each) = src.
__global__ void store_kv_kernel(float* cache, const float* src, const int64_t* n_past,
                                int64_t total, int64_t kv_dim) {
  float* dst = cache + *n_past * kv_dim;
  GALLEON_GRID_STRIDE(i, total) dst[i] = src[i];
}

__global__ void silu_mul_kernel(float* g, const float* u, int64_t total) {
  GALLEON_GRID_STRIDE(i, total) cdev::step::silu_mul(g, u, i);
}

__global__ void gelu_mul_kernel(float* g, const float* u, int64_t total) {
  GALLEON_GRID_STRIDE(i, total) cdev::step::gelu_mul(g, u, i);
}

__global__ void softcap_kernel(float* x, float cap, int64_t total) {
  GALLEON_GRID_STRIDE(i, total) cdev::step::softcap(x, cap, i);
}

__global__ void scale_kernel(float* x, float s, int64_t total) {
  GALLEON_GRID_STRIDE(i, total) cdev::step::scale(x, s, i);
}

__global__ void expf_kernel(float* x, int64_t total) {  // cuda::testing::map only
  GALLEON_GRID_STRIDE(i, total) x[i] = cdev::expf(x[i]);
}

}  // namespace
}  // namespace galleon::cuda
