// Canonical arithmetic (docs/arithmetic.md) as functions that compile both for the GPU (nvcc,
// __host__ __device__) and for the CPU (g++, where the qualifiers vanish). The CUDA kernels in
// runtime/cuda/ are built from these functions only; tests/cuda_emu_test.cpp compiles this same
// header with g++, emulates a warp (32 lanes, the __shfl_down_sync tree) and checks every
// value bit for bit against the scalar reference (kern::ref_dot, quantize_act, canon::expf).
//
// This is an independent formulation of the definition, not a copy of kernels.cpp: block
// fields are read byte by byte (little endian), rounding uses rintf (round-to-nearest-even in
// the default rounding mode, the same as the reference's 1.5*2^23 trick for |v| < 2^22), and
// the polynomial constants are hex literals (equal to the reference's 1.0f/5040.0f etc.; a
// compiler front end that folds such quotients in double would round twice).
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>

#include "runtime/ggml_type.h"
#include "runtime/kernels.h"  // A8Block, A8KBlock

#if defined(__CUDACC__)
#include <cuda_fp16.h>
#define GALLEON_HD __host__ __device__ inline
#else
#define GALLEON_HD inline
#endif

namespace galleon::cdev {

// ---------------------------------------------------------------- bits

GALLEON_HD float from_bits(uint32_t u) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(u);
#else
  float f;
  std::memcpy(&f, &u, 4);
  return f;
#endif
}

GALLEON_HD uint32_t to_bits(float f) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(f);
#else
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
#endif
}

// The GPU's vector loads and stores (4, 8 or 16 bytes at once) fault at an address that is
// not a multiple of their size. The CPU builds of these functions (the emulation in
// cuda_emu_test, session.cu on the host runtime in cuda_host_test) read bytes either way, so
// they check each such address instead and throw at a misaligned one: the tests then fail
// where the GPU would.
GALLEON_HD void expect_aligned(const void* p, unsigned bytes) {
#if defined(__CUDA_ARCH__)
  (void)p, (void)bytes;
#else
  if (reinterpret_cast<uintptr_t>(p) % bytes != 0)
    throw std::logic_error("misaligned " + std::to_string(bytes) + "-byte GPU access at " +
                           std::to_string(reinterpret_cast<uintptr_t>(p)));
#endif
}

GALLEON_HD uint32_t le16(const uint8_t* p) { return uint32_t(p[0]) | (uint32_t(p[1]) << 8); }
GALLEON_HD uint32_t le32(const uint8_t* p) { return le16(p) | (le16(p + 2) << 16); }

// binary16 -> binary32, exact. Subnormals are mant * 2^-24 (an exact product).
GALLEON_HD float half_to_float(uint32_t h) {
  const uint32_t sign = (h & 0x8000u) << 16;
  const uint32_t e = (h >> 10) & 31u, m = h & 0x3ffu;
  if (e == 31u) return from_bits(sign | 0x7f800000u | (m << 13));
  if (e != 0u) return from_bits(sign | ((e + 112u) << 23) | (m << 13));
  const float mag = float(int(m)) * 0x1p-24f;
  return from_bits(sign | to_bits(mag));
}
GALLEON_HD float bf16_to_float(uint32_t h) { return from_bits(h << 16); }

// A plain weight element, or a quantized block's binary16 scale or minimum, at p (aligned to
// its size: every block size is even): the GPU loads it whole and converts binary16 with the
// hardware (cvt.f32.f16, exact for every value; a NaN stays a NaN, and any NaN dot product
// becomes the canonical NaN); the CPU reads bytes.
GALLEON_HD float load_f32(const uint8_t* p) {
#if defined(__CUDA_ARCH__)
  return *reinterpret_cast<const float*>(p);
#else
  return from_bits(le32(p));
#endif
}
// The 16 bits at p (2-byte aligned): one 16-bit load on the GPU.
GALLEON_HD uint32_t load_u16(const uint8_t* p) {
#if defined(__CUDA_ARCH__)
  return *reinterpret_cast<const unsigned short*>(p);
#else
  return le16(p);
#endif
}
// A binary16 value's bits (the low 16 of h) as a float.
GALLEON_HD float f16_bits(uint32_t h) {
#if defined(__CUDA_ARCH__)
  return __half2float(__ushort_as_half(static_cast<unsigned short>(h)));
#else
  return half_to_float(h & 0xFFFFu);
#endif
}
GALLEON_HD float load_f16(const uint8_t* p) { return f16_bits(load_u16(p)); }
GALLEON_HD float load_bf16(const uint8_t* p) { return bf16_to_float(load_u16(p)); }

// Any NaN dot product result becomes the quiet NaN 0x7fc00000.
GALLEON_HD float canonical_nan(float v) { return v != v ? from_bits(0x7fc00000u) : v; }

// 2^k for k in [-126, 127], built from its exponent field.
GALLEON_HD float exp2i(int k) { return from_bits(uint32_t(k + 127) << 23); }

// ---------------------------------------------------------------- transcendentals

// docs/arithmetic.md section 8 (same constants, same operation order as canon::expf).
GALLEON_HD float expf(float x) {
  if (x != x) return x;
  if (x > 88.72283935546875f) return from_bits(0x7f800000u);
  if (x < -103.972084045410156f) return 0.0f;
  const float n = rintf(x * 0x1.715476p+0f);
  const float r = (x - n * 0x1.62e4p-1f) - n * 0x1.7f7d1cp-20f;
  const float coef[7] = {0x1.6c16c2p-10f, 0x1.111112p-7f, 0x1.555556p-5f, 0x1.555556p-3f,
                         0.5f, 1.0f, 1.0f};
  float p = 0x1.a01a02p-13f;  // 1/7!
  for (int i = 0; i < 7; ++i) p = p * r + coef[i];
  const int k = int(n);
  const int k1 = k >> 1;  // floor(k / 2): arithmetic shift
  return (p * exp2i(k1)) * exp2i(k - k1);
}

GALLEON_HD float silu(float x) { return x / (1.0f + expf(-x)); }

// canon::tanh, gelu and softcap (runtime/canon_expf.h: the same constants and order).
GALLEON_HD float tanh(float y) {
  const float e = expf(-2.0f * fabsf(y));
  return copysignf((1.0f - e) / (1.0f + e), y);
}
GALLEON_HD float gelu(float x) {
  const float y = (0x1.988454p-1f * x) * (1.0f + (0x1.6e4e26p-5f * x) * x);
  return (0.5f * x) * (1.0f + tanh(y));
}
GALLEON_HD float softcap(float x, float cap) { return cap * tanh(x / cap); }

// ---------------------------------------------------------------- activation quantization

// Section 4. Returns d and sets *inv to 1/d (0 when d == 0). NaN never compares greater.
GALLEON_HD float act_scale(const float* x, int n, float* inv) {
  float amax = 0.0f;
  for (int j = 0; j < n; ++j) {
    const float a = fabsf(x[j]);
    amax = a > amax ? a : amax;
  }
  const float d = amax / 127.0f;
  *inv = d == 0.0f ? 0.0f : 1.0f / d;
  return d;
}

GALLEON_HD int act_quant(float x, float inv) {
  float v = x * inv;
  if (v != v) return 0;
  v = v > 127.0f ? 127.0f : v;
  v = v < -127.0f ? -127.0f : v;
  return int(rintf(v));
}

GALLEON_HD void quantize_a8_block(const float* x, kern::A8Block* out) {
  float inv;
  out->d = act_scale(x, 32, &inv);
  int32_t sum = 0;
  for (int j = 0; j < 32; ++j) {
    const int q = act_quant(x[j], inv);
    out->q[j] = int8_t(q);
    sum += q;
  }
  out->sum = sum;
}

GALLEON_HD void quantize_a8k_block(const float* x, kern::A8KBlock* out) {
  float inv;
  out->d = act_scale(x, 256, &inv);
  for (int g = 0; g < 16; ++g) {
    int s = 0;
    for (int j = 16 * g; j < 16 * g + 16; ++j) {
      const int q = act_quant(x[j], inv);
      out->q[j] = int8_t(q);
      s += q;
    }
    out->bsums[g] = int16_t(s);
  }
}

// ---------------------------------------------------------------- per-block contributions

// How many weight elements one lane contribution covers, and the bytes they occupy.
template <GgmlType T>
struct TypeInfo;
#define GALLEON_TYPE_INFO(T, ELEMS, BYTES)                  \
  template <>                                               \
  struct TypeInfo<GgmlType::T> {                            \
    static constexpr int elems = ELEMS, bytes = BYTES;      \
  };
GALLEON_TYPE_INFO(F32, 1, 4)
GALLEON_TYPE_INFO(F16, 1, 2)
GALLEON_TYPE_INFO(BF16, 1, 2)
GALLEON_TYPE_INFO(Q8_0, 32, 34)
GALLEON_TYPE_INFO(Q4_0, 32, 18)
GALLEON_TYPE_INFO(Q4_1, 32, 20)
GALLEON_TYPE_INFO(Q5_0, 32, 22)
GALLEON_TYPE_INFO(Q5_1, 32, 24)
GALLEON_TYPE_INFO(Q4_K, 256, 144)
GALLEON_TYPE_INFO(Q5_K, 256, 176)
GALLEON_TYPE_INFO(Q6_K, 256, 210)
GALLEON_TYPE_INFO(Q2_K, 256, 84)
GALLEON_TYPE_INFO(Q3_K, 256, 110)
GALLEON_TYPE_INFO(IQ4_NL, 32, 18)
GALLEON_TYPE_INFO(IQ4_XS, 256, 136)
#undef GALLEON_TYPE_INFO

// Integer sums are exact, so any way of computing them is allowed (docs/arithmetic.md
// section 5): they work on 4-byte words, 4 quants at a time, with dp4a on the GPU. Weight
// blocks are 2-byte aligned (every block size is even), activation quants 4-byte aligned.

// 4 weight bytes at a 2-byte aligned address, little endian.
GALLEON_HD uint32_t wword(const uint8_t* p) {
#if defined(__CUDA_ARCH__)
  const uint16_t* h = reinterpret_cast<const uint16_t*>(p);
  return uint32_t(h[0]) | (uint32_t(h[1]) << 16);
#else
  return le32(p);
#endif
}
// The same word at a 4-byte aligned address: one 32-bit load on the GPU. The Q4_K and Q5_K
// blocks (144 and 176 bytes) start 4-byte aligned in the GPU's copies of the weights (rows of
// whole blocks, allocations 256-byte aligned, the weights of one allocation of one type).
GALLEON_HD uint32_t wword_aligned(const uint8_t* p) {
  expect_aligned(p, 4);
#if defined(__CUDA_ARCH__)
  return *reinterpret_cast<const uint32_t*>(p);
#else
  return le32(p);
#endif
}
// 4 activation quants at a 4-byte aligned address.
GALLEON_HD uint32_t aword(const int8_t* p) {
  expect_aligned(p, 4);
#if defined(__CUDA_ARCH__)
  return *reinterpret_cast<const uint32_t*>(p);
#else
  return le32(reinterpret_cast<const uint8_t*>(p));
#endif
}
// c + sum of the 4 products of the signed bytes of w and a.
GALLEON_HD int dot4(uint32_t w, uint32_t a, int c) {
#if defined(__CUDA_ARCH__)
  return __dp4a(int(w), int(a), c);
#else
  for (int k = 0; k < 32; k += 8) c += int(int8_t(uint8_t(w >> k))) * int(int8_t(uint8_t(a >> k)));
  return c;
#endif
}
// Bits 0..3 of x to bit 4 of bytes 0..3.
GALLEON_HD uint32_t spread4(uint32_t x) {
  return ((x & 1u) << 4) | ((x & 2u) << 11) | ((x & 4u) << 18) | ((x & 8u) << 25);
}

constexpr uint32_t kLowNibbles = 0x0F0F0F0Fu;

// Bytes selected from the 8 bytes of x (bytes 0..3) and y (4..7) by the 3-bit selectors at
// bits 4n..4n+2 of s, for result byte n (CUDA's __byte_perm; s's other bits clear).
GALLEON_HD uint32_t byte_perm(uint32_t x, uint32_t y, uint32_t s) {
#if defined(__CUDA_ARCH__)
  return __byte_perm(x, y, s);
#else
  const uint64_t v = uint64_t(x) | (uint64_t(y) << 32);
  uint32_t r = 0;
  for (int n = 0; n < 4; ++n) r |= uint32_t((v >> (8 * ((s >> (4 * n)) & 7u))) & 0xFFu) << (8 * n);
  return r;
#endif
}
// IQ4_NL / IQ4_XS: the values V[n] (docs/arithmetic.md section 1) of the 4 nibbles n in bits
// 0..3 of each byte of q (the other bits clear), as signed bytes: V[0..7] and V[8..15] each
// picked by the nibble's low 3 bits, then the one its bit 3 names kept.
GALLEON_HD uint32_t iq4_values(uint32_t q) {
  constexpr uint32_t kV0 = 0xBFAD9881u, kV1 = 0xF6EADDCFu, kV2 = 0x26190D01u, kV3 = 0x71594535u;
  const uint32_t sel = (q & 7u) | ((q >> 4) & 0x70u) | ((q >> 8) & 0x700u) | ((q >> 12) & 0x7000u);
  const uint32_t high = ((q >> 3) & 0x01010101u) * 0xFFu;
  return (byte_perm(kV0, kV1, sel) & ~high) | (byte_perm(kV2, kV3, sel) & high);
}

// The float finish of a 32-element block from the integer sum s of its unsigned (Q4/Q5) or
// signed (Q8_0) quants with the activation quants: (d_w * d_a) * float(isum)
// [+ m_w * (d_a * float(sum_a))], where the signed quants q - 8 (Q4_0) and q - 16 (Q5_0) give
// isum = s - offset * sum_a.
// finish_a8_dm takes the block's scale d and minimum m (Q4_1 / Q5_1; else unused) as floats.
template <GgmlType T>
GALLEON_HD float finish_a8_dm(float d, float m, const kern::A8Block& a, int32_t s) {
  if constexpr (T == GgmlType::Q8_0 || T == GgmlType::IQ4_NL) {
    return (d * a.d) * float(s);
  } else if constexpr (T == GgmlType::Q4_0) {
    return (d * a.d) * float(s - 8 * a.sum);
  } else if constexpr (T == GgmlType::Q5_0) {
    return (d * a.d) * float(s - 16 * a.sum);
  } else {
    static_assert(T == GgmlType::Q4_1 || T == GgmlType::Q5_1);
    return (d * a.d) * float(s) + m * (a.d * float(a.sum));
  }
}
template <GgmlType T>
constexpr bool kA8HasMin = T == GgmlType::Q4_1 || T == GgmlType::Q5_1;
template <GgmlType T>
GALLEON_HD float finish_a8(const uint8_t* w, const kern::A8Block& a, int32_t s) {
  return finish_a8_dm<T>(load_f16(w), kA8HasMin<T> ? load_f16(w + 2) : 0.0f, a, s);
}

// The weight quants 4i .. 4i + 3 (lo) and 16 + 4i .. 16 + 4i + 3 (hi) of a 32-element block as
// bytes (i < 4): what contrib_a8 and the tensor-core path (runtime/cuda/mma_tile.h) multiply.
template <GgmlType T>
GALLEON_HD void a8_words(const uint8_t* w, int i, uint32_t* lo, uint32_t* hi) {
  if constexpr (T == GgmlType::Q8_0) {
    *lo = wword(w + 2 + 4 * i);
    *hi = wword(w + 18 + 4 * i);
  } else if constexpr (T == GgmlType::IQ4_NL) {
    const uint32_t q = wword(w + 2 + 4 * i);
    *lo = iq4_values(q & kLowNibbles);
    *hi = iq4_values((q >> 4) & kLowNibbles);
  } else {
    constexpr bool kHasQh = T == GgmlType::Q5_0 || T == GgmlType::Q5_1;
    constexpr int kQs = T == GgmlType::Q4_0 ? 2 : T == GgmlType::Q4_1 ? 4 : T == GgmlType::Q5_0 ? 6 : 8;
    const uint32_t q = wword(w + kQs + 4 * i);
    *lo = q & kLowNibbles;
    *hi = (q >> 4) & kLowNibbles;
    if constexpr (kHasQh) {
      const uint32_t qh = wword(w + kQs - 4);
      *lo |= spread4((qh >> (4 * i)) & 15u);
      *hi |= spread4((qh >> (16 + 4 * i)) & 15u);
    }
  }
}

template <GgmlType T>
GALLEON_HD float contrib_a8(const uint8_t* w, const kern::A8Block& a) {
  int32_t s = 0;
  for (int i = 0; i < 4; ++i) {
    uint32_t lo, hi;
    a8_words<T>(w, i, &lo, &hi);
    s = dot4(lo, aword(a.q + 4 * i), s);
    s = dot4(hi, aword(a.q + 16 + 4 * i), s);
  }
  return finish_a8<T>(w, a, s);
}

// The 256-element types split a block's integer sums into kKParts parts (exact in any order
// and grouping, so the GPU gives each part to its own thread): kpart<T>(w, a, g) is part g,
// kfinish<T> the block's float contribution from the totals. contribution() is kfinish of the
// parts summed in order.
constexpr int kKParts = 8;
struct KSums {
  int32_t sumi = 0, summ = 0;  // summ: the minimums of Q4_K, Q5_K, Q2_K only
};

// The 256-element types' sub-blocks: 32 elements for Q4_K, Q5_K and IQ4_XS (kSub = 32, 8 of
// them), 16 for Q6_K, Q2_K and Q3_K (16 of them). For each: sub_word<T>(w, j, i) is sub-block
// j's quants 4i .. 4i + 3 as bytes (i < kSub / 4), the unsigned ones where the type's quants
// are offset (Q6_K: u = q + 32, Q3_K: u = q + 4); sub_scale<T> its scale and minimum (0 for
// the types without); sub_sums<T> its part of the sums from the integer sum `is` of its
// quants with the activation's (an offset's correction from the activation's bsums).
template <GgmlType T>
constexpr int kSub = T == GgmlType::Q6_K || T == GgmlType::Q2_K || T == GgmlType::Q3_K ? 16 : 32;

// Q4_K / Q5_K (section 5): sub-block j = 2c + h covers elements 32j + l = 64c + 32h + l, the
// low (h = 0) or high (h = 1) nibbles of qs[32c + l], plus 16 * bit j of qh[l] for Q5_K.
template <GgmlType T>
GALLEON_HD uint32_t kmin_word(const uint8_t* w, int j, int i) {
  const uint8_t* qh = w + 16;                                    // Q5_K only
  const uint8_t* qs = w + (T == GgmlType::Q5_K ? 48 : 16);
  static_assert(TypeInfo<T>::bytes % 4 == 0);  // blocks 4-byte aligned: wword_aligned
  uint32_t q = (wword_aligned(qs + 32 * (j >> 1) + 4 * i) >> (4 * (j & 1))) & kLowNibbles;
  if constexpr (T == GgmlType::Q5_K) q |= ((wword_aligned(qh + 4 * i) >> j) & 0x01010101u) << 4;
  return q;
}
GALLEON_HD void kmin_scale(const uint8_t* w, int j, int* scale, int* mn) {
  const uint8_t* sc = w + 4;
  if (j < 4) {
    *scale = sc[j] & 63;
    *mn = sc[j + 4] & 63;
  } else {
    *scale = (sc[j + 4] & 15) | ((sc[j - 4] >> 6) << 4);
    *mn = (sc[j + 4] >> 4) | ((sc[j] >> 6) << 4);
  }
}

// IQ4_XS: sub-block j laid out as an IQ4_NL block at qs[16j] (w + 8); its values as signed
// bytes, its 6-bit scale - 32.
GALLEON_HD uint32_t iq4_xs_word(const uint8_t* w, int j, int i) {
  static_assert(TypeInfo<GgmlType::IQ4_XS>::bytes % 4 == 0);  // blocks 4-byte aligned
  const uint32_t q = wword_aligned(w + 8 + 16 * j + 4 * (i & 3));
  return iq4_values((q >> (i < 4 ? 0 : 4)) & kLowNibbles);
}
GALLEON_HD int iq4_xs_scale(const uint8_t* w, int j) {
  const int lo = (w[4 + (j >> 1)] >> (4 * (j & 1))) & 15;
  const int hi = (int(load_u16(w + 2)) >> (2 * j)) & 3;
  return (lo | (hi << 4)) - 32;
}

// Q6_K: element e = 16j + i = 128h + 32k + l of sub-block j, unsigned 6-bit quants u.
GALLEON_HD uint32_t q6_word(const uint8_t* w, int j, int i) {
  const uint8_t* ql = w;
  const uint8_t* qh = w + 128;
  const int h = j >> 3, k = (j >> 1) & 3, l = (j & 1) * 16 + 4 * i;
  const uint32_t lw = wword(ql + 64 * h + 32 * (k & 1) + l);
  const uint32_t lo = (k < 2 ? lw : lw >> 4) & kLowNibbles;
  return lo | (((wword(qh + 32 * h + l) >> (2 * k)) & 0x03030303u) << 4);
}

// Q2_K / Q3_K: element e = 16j + i = 128n + 32c + l, whose 2 low bits are bits 2c.. of
// qs[32n + l]; Q3_K's u adds 4 where bit 4n + c of hmask[l] is set.
template <GgmlType T>
GALLEON_HD uint32_t q23_word(const uint8_t* w, int j, int i) {
  constexpr bool kQ3 = T == GgmlType::Q3_K;
  const uint8_t* qs = w + (kQ3 ? 32 : 16);
  const int n = j >> 3, c = (j >> 1) & 3, l = (j & 1) * 16 + 4 * i;
  uint32_t q = (wword(qs + 32 * n + l) >> (2 * c)) & 0x03030303u;
  if constexpr (kQ3) q |= ((wword(w + l) >> (4 * n + c)) & 0x01010101u) << 2;
  return q;
}

template <GgmlType T>
GALLEON_HD uint32_t sub_word(const uint8_t* w, int j, int i) {
  if constexpr (T == GgmlType::Q6_K)
    return q6_word(w, j, i);
  else if constexpr (T == GgmlType::Q2_K || T == GgmlType::Q3_K)
    return q23_word<T>(w, j, i);
  else if constexpr (T == GgmlType::IQ4_XS)
    return iq4_xs_word(w, j, i);
  else
    return kmin_word<T>(w, j, i);
}
template <GgmlType T>
GALLEON_HD void sub_scale(const uint8_t* w, int j, int* scale, int* mn) {
  *mn = 0;
  if constexpr (T == GgmlType::Q6_K) {
    *scale = int(int8_t(w[192 + j]));
  } else if constexpr (T == GgmlType::Q2_K) {
    *scale = w[j] & 15;
    *mn = w[j] >> 4;
  } else if constexpr (T == GgmlType::Q3_K) {
    const uint8_t* sc = w + 96;
    const int lo = (sc[j & 7] >> (4 * (j >> 3))) & 15, hi = (sc[8 + (j & 3)] >> (2 * (j >> 2))) & 3;
    *scale = (lo | (hi << 4)) - 32;
  } else if constexpr (T == GgmlType::IQ4_XS) {
    *scale = iq4_xs_scale(w, j);
  } else {
    kmin_scale(w, j, scale, mn);
  }
}
template <GgmlType T>
GALLEON_HD KSums sub_sums(int scale, int mn, const kern::A8KBlock& a, int j, int32_t is) {
  if constexpr (T == GgmlType::Q6_K)
    return {scale * (is - 32 * int(a.bsums[j])), 0};
  else if constexpr (T == GgmlType::Q3_K)
    return {scale * (is - 4 * int(a.bsums[j])), 0};
  else if constexpr (T == GgmlType::Q2_K)
    return {scale * is, mn * int(a.bsums[j])};
  else if constexpr (T == GgmlType::IQ4_XS)
    return {scale * is, 0};
  else
    return {scale * is, mn * (int(a.bsums[2 * j]) + int(a.bsums[2 * j + 1]))};
}

// Part g: sub-block g (32-element sub-blocks) or sub-blocks 2g and 2g + 1 (16-element ones).
template <GgmlType T>
GALLEON_HD KSums kpart(const uint8_t* w, const kern::A8KBlock& a, int g) {
  constexpr int kPer = kSub<T> == 32 ? 1 : 2;
  KSums total;
  for (int j = kPer * g; j < kPer * g + kPer; ++j) {
    int32_t is = 0;
    for (int i = 0; i < kSub<T> / 4; ++i)
      is = dot4(sub_word<T>(w, j, i), aword(a.q + kSub<T> * j + 4 * i), is);
    int scale, mn;
    sub_scale<T>(w, j, &scale, &mn);
    const KSums p = sub_sums<T>(scale, mn, a, j, is);
    total.sumi += p.sumi;
    total.summ += p.summ;
  }
  return total;
}

// Whether a 256-element type's contribution subtracts a minimum term (dmin).
template <GgmlType T>
constexpr bool kKHasMin = T == GgmlType::Q4_K || T == GgmlType::Q5_K || T == GgmlType::Q2_K;
// The block's scales: d, and dmin where the type has it (else 0).
template <GgmlType T>
GALLEON_HD void kscales(const uint8_t* w, float* d, float* dmin) {
  constexpr int kD = T == GgmlType::Q6_K   ? 208
                     : T == GgmlType::Q2_K ? 80
                     : T == GgmlType::Q3_K ? 108
                                           : 0;
  *d = load_f16(w + kD);
  *dmin = kKHasMin<T> ? load_f16(w + kD + 2) : 0.0f;
}
template <GgmlType T>
GALLEON_HD float kfinish_dm(float d, float dmin, const kern::A8KBlock& a, KSums s) {
  if constexpr (kKHasMin<T>)
    return (d * a.d) * float(s.sumi) - (dmin * a.d) * float(s.summ);
  else
    return (d * a.d) * float(s.sumi);
}
template <GgmlType T>
GALLEON_HD float kfinish(const uint8_t* w, const kern::A8KBlock& a, KSums s) {
  float d, dmin;
  kscales<T>(w, &d, &dmin);
  return kfinish_dm<T>(d, dmin, a, s);
}

template <GgmlType T>
GALLEON_HD float contrib_k(const uint8_t* w, const kern::A8KBlock& a) {
  KSums total;
  for (int g = 0; g < kKParts; ++g) {
    const KSums p = kpart<T>(w, a, g);
    total.sumi += p.sumi;
    total.summ += p.summ;
  }
  return kfinish<T>(w, a, total);
}

// Contribution i of a row dot product (element i for plain types, block i otherwise).
template <GgmlType T>
GALLEON_HD float contribution(const uint8_t* wrow, const void* act, int64_t i) {
  const uint8_t* w = wrow + i * TypeInfo<T>::bytes;
  if constexpr (T == GgmlType::F32) {
    return load_f32(w) * static_cast<const float*>(act)[i];
  } else if constexpr (T == GgmlType::F16) {
    return load_f16(w) * static_cast<const float*>(act)[i];
  } else if constexpr (T == GgmlType::BF16) {
    return load_bf16(w) * static_cast<const float*>(act)[i];
  } else if constexpr (TypeInfo<T>::elems == 32) {
    return contrib_a8<T>(w, static_cast<const kern::A8Block*>(act)[i]);
  } else {
    return contrib_k<T>(w, static_cast<const kern::A8KBlock*>(act)[i]);
  }
}

// Unrolled on the GPU (where the loops' bounds are compile-time constants); GALLEON_DEVICE_ROLLED
// keeps a loop of a few iterations rolled (code size: nvcc unrolls loops of unknown bounds too).
#if defined(__CUDA_ARCH__)
#define GALLEON_DEVICE_UNROLL _Pragma("unroll")
#define GALLEON_DEVICE_ROLLED _Pragma("unroll 1")
#else
#define GALLEON_DEVICE_UNROLL
#define GALLEON_DEVICE_ROLLED
#endif

// N floats (a multiple of 4) from p, 16-byte aligned, to q: N / 4 16-byte loads on the GPU.
template <int N>
GALLEON_HD void load_aligned_floats(const float* p, float* q) {
  static_assert(N % 4 == 0);
  expect_aligned(p, 16);
#if defined(__CUDA_ARCH__)
  GALLEON_DEVICE_UNROLL
  for (int c = 0; c < N / 4; ++c) {
    const float4 f = reinterpret_cast<const float4*>(p)[c];
    q[4 * c] = f.x, q[4 * c + 1] = f.y, q[4 * c + 2] = f.z, q[4 * c + 3] = f.w;
  }
#else
  for (int i = 0; i < N; ++i) q[i] = p[i];
#endif
}
// N floats (a multiple of 4) from p to q, q 16-byte aligned: N / 4 16-byte stores on the GPU.
template <int N>
GALLEON_HD void store_aligned_floats(const float* p, float* q) {
  static_assert(N % 4 == 0);
  expect_aligned(q, 16);
#if defined(__CUDA_ARCH__)
  GALLEON_DEVICE_UNROLL
  for (int c = 0; c < N / 4; ++c)
    reinterpret_cast<float4*>(q)[c] =
        make_float4(p[4 * c], p[4 * c + 1], p[4 * c + 2], p[4 * c + 3]);
#else
  for (int i = 0; i < N; ++i) q[i] = p[i];
#endif
}

// f(r, k) for each row r < nr and token k < nt of an R x K tile.
template <int R, int K, class F>
GALLEON_HD void each_cell(int nr, int nt, F&& f) {
  GALLEON_DEVICE_UNROLL
  for (int r = 0; r < R; ++r)
    GALLEON_DEVICE_UNROLL
    for (int k = 0; k < K; ++k)
      if (r < nr && k < nt) f(r, k);
}

// Lane `lane`'s accumulators (section 2) of nr <= R weight rows (w_row_bytes apart) with
// nt <= K activation rows (act_row_bytes apart): v[r][k] adds the contributions lane,
// lane + 32, ... of row r and token k in increasing order. Rows and tokens interleave so that a
// weight block is read once for all tokens and an activation block once for all rows; each
// (row, token)'s order is the definition's.
template <GgmlType T, int R, int K>
GALLEON_HD void lane_dots_tile(int64_t n, const void* wrows, size_t w_row_bytes, int nr,
                               const void* act, size_t act_row_bytes, int nt, int lane,
                               float (&v)[R][K]) {
  const int64_t count = n / TypeInfo<T>::elems;
  const uint8_t* w = static_cast<const uint8_t*>(wrows);
  const uint8_t* a = static_cast<const uint8_t*>(act);
  for (int r = 0; r < R; ++r)
    for (int k = 0; k < K; ++k) v[r][k] = 0.0f;
  // Contribution i of row r and token k.
  auto contrib = [&](int r, int k, int64_t i) {
    return contribution<T>(w + size_t(r) * w_row_bytes, a + size_t(k) * act_row_bytes, i);
  };
  // U contributions per (row, token) are computed before they are added (in order), so that
  // their loads are in flight together.
  constexpr int U = R * K > 8 ? 1 : TypeInfo<T>::elems == 1 ? 8 : TypeInfo<T>::elems == 32 ? 2 : 1;
  int64_t i = lane;
  for (; i + 32 * (U - 1) < count; i += 32 * U) {
    float c[U][R][K];
    GALLEON_DEVICE_UNROLL
    for (int u = 0; u < U; ++u)
      each_cell<R, K>(nr, nt, [&](int r, int k) { c[u][r][k] = contrib(r, k, i + 32 * u); });
    GALLEON_DEVICE_UNROLL
    for (int u = 0; u < U; ++u)
      each_cell<R, K>(nr, nt, [&](int r, int k) { v[r][k] = v[r][k] + c[u][r][k]; });
  }
  for (; i < count; i += 32)
    each_cell<R, K>(nr, nt, [&](int r, int k) { v[r][k] = v[r][k] + contrib(r, k, i); });
}

// One weight row: lane_dots_tile with R = 1.
template <GgmlType T, int K>
GALLEON_HD void lane_dots(int64_t n, const void* wrow, const void* act, size_t act_row_bytes,
                          int nt, int lane, float (&v)[K]) {
  float vt[1][K];
  lane_dots_tile<T, 1, K>(n, wrow, 0, 1, act, act_row_bytes, nt, lane, vt);
  for (int k = 0; k < K; ++k) v[k] = vt[0][k];
}

// Lane accumulator of f32 dot products (dot_f32, sum_sq, attention scores).
GALLEON_HD float lane_dot_f32(const float* a, const float* b, int64_t n, int lane) {
  float v = 0.0f;
  int64_t i = lane;
  for (; i + 32 * 7 < n; i += 32 * 8) {  // 8 products in flight, added in order
    float p[8];
    for (int u = 0; u < 8; ++u) p[u] = a[i + 32 * u] * b[i + 32 * u];
    for (int u = 0; u < 8; ++u) v = v + p[u];
  }
  for (; i < n; i += 32) v = v + a[i] * b[i];
  return v;
}

// Lane accumulators of the attention (section 9): sum of e_j, and of e_j * v_j[d], over the
// positions j = lane, lane + 32, ... (v rows `stride` floats apart).
GALLEON_HD float lane_sum(const float* e, int64_t n, int lane) {
  float v = 0.0f;
  for (int64_t j = lane; j < n; j += 32) v = v + e[j];
  return v;
}
GALLEON_HD float lane_weighted_sum(const float* e, const float* v, int64_t stride, int64_t n,
                                   int lane) {
  float acc = 0.0f;
  for (int64_t j = lane; j < n; j += 32) acc = acc + e[j] * v[j * stride];
  return acc;
}

// Host-side dispatch of a runtime type to f.template operator()<T>() (C++20 template lambda);
// returns false for a type without a kernel.
template <class F>
bool with_type(GgmlType t, F&& f) {
  switch (t) {
#define GALLEON_CASE(T) \
  case GgmlType::T: f.template operator()<GgmlType::T>(); return true;
    GALLEON_CASE(F32) GALLEON_CASE(F16) GALLEON_CASE(BF16) GALLEON_CASE(Q8_0)
    GALLEON_CASE(Q4_0) GALLEON_CASE(Q4_1) GALLEON_CASE(Q5_0) GALLEON_CASE(Q5_1)
    GALLEON_CASE(Q4_K) GALLEON_CASE(Q5_K) GALLEON_CASE(Q6_K) GALLEON_CASE(Q2_K)
    GALLEON_CASE(Q3_K) GALLEON_CASE(IQ4_NL) GALLEON_CASE(IQ4_XS)
#undef GALLEON_CASE
    default: return false;
  }
}

struct NoOpForType {
  template <GgmlType>
  void operator()() const {}
};
// True when `t` has a kernel (with_type accepts it).
inline bool has_kernel(GgmlType t) { return with_type(t, NoOpForType{}); }

// (GALLEON_CUDA_HOST: session.cu compiled for the CPU by the tests, tests/cuda_host.)
#if defined(__CUDACC__) || defined(GALLEON_CUDA_HOST)
// The canonical tree on a warp: after s = 16, 8, 4, 2, 1, lane 0 holds
// L[0] + ... in exactly the order L[i] = L[i] + L[i + s] (lanes i + s >= 32 read themselves;
// those lanes are never read again). Every lane of the warp must call it.
__device__ inline float warp_tree(float v) {
  for (int s = 16; s >= 1; s >>= 1) v = v + __shfl_down_sync(0xffffffffu, v, s);
  return v;
}
#endif

}  // namespace galleon::cdev
