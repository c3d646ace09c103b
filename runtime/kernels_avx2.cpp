// AVX2 (+F16C) path. The 32 canonical lanes are four ymm registers (lanes 0-7, 8-15, 16-23,
// 24-31). Quantized dot products: exact int32 block sums with vpmaddubsw/vpmaddwd (no
// saturation is possible: |products| <= 2*128*127), eight blocks transposed into one register
// (one block per lane), then the canonical float combination. No FMA is ever used.
#include <immintrin.h>

#include <cstdint>
#include <cstring>

#include "runtime/isa_region.h"
#include "runtime/kernels.h"

// Only what follows is compiled for AVX2 (runtime/isa_region.h).
GALLEON_ISA_BEGIN("avx2,f16c,fma")
#include "runtime/kernels_elem.h"
#include "runtime/kernels_internal.h"
#include "runtime/kernels_tiling.h"

namespace galleon::kern::avx2 {
namespace {

#define GALLEON_UNROLL _Pragma("GCC unroll 16")

// ------------------------------------------------------------------ helpers

inline float reduce_lanes(__m256 l0, __m256 l1, __m256 l2, __m256 l3) {
  const __m256 a = _mm256_add_ps(l0, l2), b = _mm256_add_ps(l1, l3);  // s = 16
  const __m256 s8 = _mm256_add_ps(a, b);                              // s = 8
  const __m128 s4 = _mm_add_ps(_mm256_castps256_ps128(s8), _mm256_extractf128_ps(s8, 1));
  const __m128 s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
  const __m128 s1 = _mm_add_ss(s2, _mm_shuffle_ps(s2, s2, 1));
  return canonical_nan(_mm_cvtss_f32(s1));
}
inline float reduce_lanes(const float* l) {
  return reduce_lanes(_mm256_loadu_ps(l), _mm256_loadu_ps(l + 8), _mm256_loadu_ps(l + 16),
                      _mm256_loadu_ps(l + 24));
}
inline int32_t hsum(__m256i v) {
  __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(1, 0, 3, 2)));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(2, 3, 0, 1)));
  return _mm_cvtsi128_si32(s);
}
// Mask vector with the first `left` int32 lanes set (0..8).
inline __m256i lane_mask(int64_t left) {
  const __m256i idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(int(left > 8 ? 8 : left)), idx);
}

// ------------------------------------------------------------------ f32 / f16 / bf16 weights

struct LoadF32 {
  static constexpr int kSize = 4;
  static __m256 load(const uint8_t* p) { return _mm256_loadu_ps(reinterpret_cast<const float*>(p)); }
};
struct LoadF16 {
  static constexpr int kSize = 2;
  static __m256 load(const uint8_t* p) {
    return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  }
};
struct LoadBF16 {
  static constexpr int kSize = 2;
  static __m256 load(const uint8_t* p) {
    const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
  }
};

template <class L>
struct KPlain {
  // One 32-element chunk: element 8k+j of the chunk goes to register k, lane j.
  template <int R, int T>
  static void chunk(const uint8_t* const* w, const uint8_t* const* x, __m256 (&acc)[R][T][4]) {
    GALLEON_UNROLL
    for (int k = 0; k < 4; ++k) {
      __m256 wv[R];
      GALLEON_UNROLL
      for (int r = 0; r < R; ++r) wv[r] = L::load(w[r] + 8 * k * L::kSize);
      GALLEON_UNROLL
      for (int t = 0; t < T; ++t) {
        const __m256 xv = LoadF32::load(x[t] + 32 * k);
        GALLEON_UNROLL
        for (int r = 0; r < R; ++r)
          acc[r][t][k] = _mm256_add_ps(acc[r][t][k], _mm256_mul_ps(wv[r], xv));
      }
    }
  }

  template <int R, int T>
  static void tile(const Args& a, int64_t row, int64_t tok) {
    const uint8_t* w[R];
    const uint8_t* x[T];
    GALLEON_UNROLL
    for (int r = 0; r < R; ++r) w[r] = a.w + size_t(row + r) * a.wrb;
    GALLEON_UNROLL
    for (int t = 0; t < T; ++t) x[t] = a.act + size_t(tok + t) * a.arb;
    __m256 acc[R][T][4];
    GALLEON_UNROLL
    for (int r = 0; r < R; ++r)
      GALLEON_UNROLL
      for (int t = 0; t < T; ++t)
        GALLEON_UNROLL
        for (int k = 0; k < 4; ++k) acc[r][t][k] = _mm256_setzero_ps();
    const int64_t n = a.n, full = n / 32 * 32;
    for (int64_t i = 0; i < full; i += 32) {
      const uint8_t* wi[R];
      const uint8_t* xi[T];
      GALLEON_UNROLL
      for (int r = 0; r < R; ++r) wi[r] = w[r] + i * L::kSize;
      GALLEON_UNROLL
      for (int t = 0; t < T; ++t) xi[t] = x[t] + i * 4;
      chunk<R, T>(wi, xi, acc);
    }
    if (full < n) {  // zero-padded tail: products +0 leave the lanes unchanged
      alignas(32) uint8_t wt[R][32 * L::kSize] = {};
      alignas(32) uint8_t xt[T][128] = {};
      const uint8_t* wi[R];
      const uint8_t* xi[T];
      GALLEON_UNROLL
      for (int r = 0; r < R; ++r)
        std::memcpy(wt[r], w[r] + full * L::kSize, size_t(n - full) * L::kSize), wi[r] = wt[r];
      GALLEON_UNROLL
      for (int t = 0; t < T; ++t)
        std::memcpy(xt[t], x[t] + full * 4, size_t(n - full) * 4), xi[t] = xt[t];
      chunk<R, T>(wi, xi, acc);
    }
    GALLEON_UNROLL
    for (int t = 0; t < T; ++t)
      GALLEON_UNROLL
      for (int r = 0; r < R; ++r)
        a.y[size_t(tok + t) * a.ys + size_t(row + r)] =
            reduce_lanes(acc[r][t][0], acc[r][t][1], acc[r][t][2], acc[r][t][3]);
  }
};

// ------------------------------------------------------------------ A8 family (32-blocks)

inline __m256i nibbles16(const uint8_t* p) {  // 16 bytes -> 32: low nibbles, high nibbles
  const __m128i x = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  const __m256i v = _mm256_inserti128_si256(_mm256_castsi128_si256(x), _mm_srli_epi16(x, 4), 1);
  return _mm256_and_si256(v, _mm256_set1_epi8(0x0F));
}
// 0x10 in byte j where bit j of the 32-bit word at qh is set.
inline __m256i high_bits(const uint8_t* qh) {
  const __m256i v = _mm256_set1_epi32(int(load_u32(qh)));
  const __m256i spread = _mm256_shuffle_epi8(
      v, _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2,
                          3, 3, 3, 3, 3, 3, 3, 3));
  const __m256i bit = _mm256_set1_epi64x(0x8040201008040201LL);
  const __m256i set = _mm256_cmpeq_epi8(_mm256_and_si256(spread, bit), bit);
  return _mm256_and_si256(set, _mm256_set1_epi8(0x10));
}

inline __m256i madd_u8s8(__m256i u, __m256i s) {
  return _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1));
}

// Each weight kind: block bytes, int32 partial sums of one block with 32 activations (raw:
// before the activation-sum correction), correction shift, min field.
struct Q8_0 {
  static constexpr int kBytes = 34, kCorrShift = -1;
  static constexpr bool kMin = false;
  static __m256i dot(const uint8_t* b, __m256i a) {  // signed x signed via |w| and sign(a, w)
    const __m256i w = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + 2));
    return madd_u8s8(_mm256_sign_epi8(w, w), _mm256_sign_epi8(a, w));
  }
};
struct Q4_0 {
  static constexpr int kBytes = 18, kCorrShift = 3;
  static constexpr bool kMin = false;
  static __m256i dot(const uint8_t* b, __m256i a) { return madd_u8s8(nibbles16(b + 2), a); }
};
struct Q5_0 {
  static constexpr int kBytes = 22, kCorrShift = 4;
  static constexpr bool kMin = false;
  static __m256i dot(const uint8_t* b, __m256i a) {
    return madd_u8s8(_mm256_or_si256(nibbles16(b + 6), high_bits(b + 2)), a);
  }
};
struct Q4_1 {
  static constexpr int kBytes = 20, kCorrShift = -1;
  static constexpr bool kMin = true;
  static __m256i dot(const uint8_t* b, __m256i a) { return madd_u8s8(nibbles16(b + 4), a); }
};
struct Q5_1 {
  static constexpr int kBytes = 24, kCorrShift = -1;
  static constexpr bool kMin = true;
  static __m256i dot(const uint8_t* b, __m256i a) {
    return madd_u8s8(_mm256_or_si256(nibbles16(b + 8), high_bits(b + 4)), a);
  }
};

// IQ4_NL: values V[nibble] (signed), multiplied as Q8_0's.
inline __m256i iq4_lookup(__m256i nibbles) {
  const __m128i t = _mm_loadu_si128(reinterpret_cast<const __m128i*>(kIq4Values));
  return _mm256_shuffle_epi8(_mm256_broadcastsi128_si256(t), nibbles);
}
inline __m256i madd_s8s8(__m256i w, __m256i a) {  // |w| <= 127: no saturation
  return madd_u8s8(_mm256_sign_epi8(w, w), _mm256_sign_epi8(a, w));
}
struct IQ4_NL {
  static constexpr int kBytes = 18, kCorrShift = -1;
  static constexpr bool kMin = false;
  static __m256i dot(const uint8_t* b, __m256i a) {
    return madd_s8s8(iq4_lookup(nibbles16(b + 2)), a);
  }
};

// 8 fp16 values, the low halves of 8 gathered dwords.
inline __m256 halves_to_f32(__m256i v) {
  const __m256i lo = _mm256_shuffle_epi8(
      v, _mm256_setr_epi8(0, 1, 4, 5, 8, 9, 12, 13, -1, -1, -1, -1, -1, -1, -1, -1, 0, 1, 4, 5, 8,
                          9, 12, 13, -1, -1, -1, -1, -1, -1, -1, -1));
  return _mm256_cvtph_ps(_mm256_castsi256_si128(_mm256_permute4x64_epi64(lo, 0x08)));
}

template <class Q>
struct KA8 {
  // Exact int32 sums of blocks [b0, b0+8) (0 past nb), block b0+j in lane j.
  template <int R, int T, bool kFull>
  static void group_sums(const uint8_t* const* w, const uint8_t* const* x, int64_t b0,
                         int64_t nb, __m256i (&S)[R][T]) {
    __m256i h[2][R][T];
    GALLEON_UNROLL
    for (int hh = 0; hh < 2; ++hh) {
      __m256i q[2][R][T];
      GALLEON_UNROLL
      for (int qq = 0; qq < 2; ++qq) {
        __m256i p[2][R][T];
        GALLEON_UNROLL
        for (int pp = 0; pp < 2; ++pp) {
          const int64_t b = b0 + 4 * hh + 2 * qq + pp;
          GALLEON_UNROLL
          for (int t = 0; t < T; ++t) {
            if (!kFull && b >= nb) {
              GALLEON_UNROLL
              for (int r = 0; r < R; ++r) p[pp][r][t] = _mm256_setzero_si256();
              continue;
            }
            const __m256i av = _mm256_loadu_si256(
                reinterpret_cast<const __m256i*>(reinterpret_cast<const A8Block*>(x[t])[b].q));
            GALLEON_UNROLL
            for (int r = 0; r < R; ++r) p[pp][r][t] = Q::dot(w[r] + b * Q::kBytes, av);
          }
        }
        GALLEON_UNROLL
        for (int r = 0; r < R; ++r)
          GALLEON_UNROLL
          for (int t = 0; t < T; ++t) q[qq][r][t] = _mm256_hadd_epi32(p[0][r][t], p[1][r][t]);
      }
      GALLEON_UNROLL
      for (int r = 0; r < R; ++r)
        GALLEON_UNROLL
        for (int t = 0; t < T; ++t) h[hh][r][t] = _mm256_hadd_epi32(q[0][r][t], q[1][r][t]);
    }
    GALLEON_UNROLL
    for (int r = 0; r < R; ++r)
      GALLEON_UNROLL
      for (int t = 0; t < T; ++t)
        S[r][t] = _mm256_add_epi32(_mm256_permute2x128_si256(h[0][r][t], h[1][r][t], 0x20),
                                   _mm256_permute2x128_si256(h[0][r][t], h[1][r][t], 0x31));
  }

  template <int R, int T, bool kFull>
  static void group(const uint8_t* const* w, const uint8_t* const* x, int64_t b0, int64_t nb,
                    __m256 (&acc)[R][T]) {
    __m256i S[R][T];
    group_sums<R, T, kFull>(w, x, b0, nb, S);
    const __m256i m = lane_mask(nb - b0);
    const __m256i iw = _mm256_mullo_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
                                          _mm256_set1_epi32(Q::kBytes));
    const __m256i ia = _mm256_setr_epi32(0, 40, 80, 120, 160, 200, 240, 280);
    const __m256i z = _mm256_setzero_si256();
    __m256 dw[R], mw[R];
    GALLEON_UNROLL
    for (int r = 0; r < R; ++r) {
      const int* base = reinterpret_cast<const int*>(w[r] + b0 * Q::kBytes);
      dw[r] = halves_to_f32(_mm256_mask_i32gather_epi32(z, base, iw, m, 1));
      if constexpr (Q::kMin)
        mw[r] = halves_to_f32(_mm256_mask_i32gather_epi32(
            z, reinterpret_cast<const int*>(w[r] + b0 * Q::kBytes + 2), iw, m, 1));
    }
    GALLEON_UNROLL
    for (int t = 0; t < T; ++t) {
      const uint8_t* base = x[t] + b0 * 40;
      const __m256 da = _mm256_mask_i32gather_ps(_mm256_setzero_ps(),
                                                 reinterpret_cast<const float*>(base), ia,
                                                 _mm256_castsi256_ps(m), 1);
      const __m256i sa =
          _mm256_mask_i32gather_epi32(z, reinterpret_cast<const int*>(base + 4), ia, m, 1);
      GALLEON_UNROLL
      for (int r = 0; r < R; ++r) {
        __m256i isum = S[r][t];
        if constexpr (Q::kCorrShift >= 0)
          isum = _mm256_sub_epi32(isum, _mm256_slli_epi32(sa, Q::kCorrShift));
        __m256 c = _mm256_mul_ps(_mm256_mul_ps(dw[r], da), _mm256_cvtepi32_ps(isum));
        if constexpr (Q::kMin)
          c = _mm256_add_ps(c, _mm256_mul_ps(mw[r], _mm256_mul_ps(da, _mm256_cvtepi32_ps(sa))));
        acc[r][t] = _mm256_add_ps(acc[r][t], c);
      }
    }
  }

  template <int R, int T>
  static void tile(const Args& a, int64_t row, int64_t tok) {
    const uint8_t* w[R];
    const uint8_t* x[T];
    GALLEON_UNROLL
    for (int r = 0; r < R; ++r) w[r] = a.w + size_t(row + r) * a.wrb;
    GALLEON_UNROLL
    for (int t = 0; t < T; ++t) x[t] = a.act + size_t(tok + t) * a.arb;
    __m256 acc[4][R][T];
    GALLEON_UNROLL
    for (int k = 0; k < 4; ++k)
      GALLEON_UNROLL
      for (int r = 0; r < R; ++r)
        GALLEON_UNROLL
        for (int t = 0; t < T; ++t) acc[k][r][t] = _mm256_setzero_ps();
    const int64_t nb = a.n / 32;
    for (int64_t b0 = 0; b0 < nb; b0 += 32) {  // blocks b0+8k .. b0+8k+7 -> register k
      if (b0 + 32 <= nb) {
        GALLEON_UNROLL
        for (int k = 0; k < 4; ++k) group<R, T, true>(w, x, b0 + 8 * k, nb, acc[k]);
      } else {
        for (int k = 0; k < 4; ++k)
          if (b0 + 8 * k < nb) group<R, T, false>(w, x, b0 + 8 * k, nb, acc[k]);
      }
    }
    GALLEON_UNROLL
    for (int t = 0; t < T; ++t)
      GALLEON_UNROLL
      for (int r = 0; r < R; ++r)
        a.y[size_t(tok + t) * a.ys + size_t(row + r)] =
            reduce_lanes(acc[0][r][t], acc[1][r][t], acc[2][r][t], acc[3][r][t]);
  }
};

// ------------------------------------------------------------------ K-quants (256-blocks)

inline void kmin_scales(const uint8_t* s, uint8_t* sc, uint8_t* mn) {
  const uint32_t a = load_u32(s), b = load_u32(s + 4), c = load_u32(s + 8);
  const uint32_t v[4] = {a & 0x3F3F3F3Fu, (c & 0x0F0F0F0Fu) | (((a >> 6) & 0x03030303u) << 4),
                         b & 0x3F3F3F3Fu, ((c >> 4) & 0x0F0F0F0Fu) | (((b >> 6) & 0x03030303u) << 4)};
  std::memcpy(sc, v, 8);
  std::memcpy(mn, v + 2, 8);
}

// 256-element types: a block's scales per 16 elements (sc; kSub32: the same for both halves
// of each 32), the int16 weights of the activation bsums subtracted from the integer sum
// (corr: an offset of the quants) and of the minimum term (mn), and elements 32j..32j+31 as
// bytes (unsigned, or kSigned).
struct KPrep {
  alignas(32) int16_t sc[16], corr[16], mn[16];
};
inline void store16(int16_t* p, __m256i v) { _mm256_store_si256(reinterpret_cast<__m256i*>(p), v); }
inline __m256i load16(const int16_t* p) {
  return _mm256_load_si256(reinterpret_cast<const __m256i*>(p));
}
// `value` in each of the 32 bytes from p whose bit `bit` is set, else 0 (Q5_K's and Q3_K's high
// bits).
inline __m256i where_bit(const uint8_t* p, int bit, char value) {
  const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
  const __m256i m = _mm256_set1_epi8(char(1 << bit));
  return _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(v, m), m), _mm256_set1_epi8(value));
}
// Q4_K / Q5_K: sub-block j's 6-bit scale and minimum for both of its halves.
inline void kmin_prep(const uint8_t* b, KPrep* p) {
  uint8_t sc[8], mn[8];
  kmin_scales(b + 4, sc, mn);
  const __m128i s8 = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(sc));
  const __m128i m8 = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(mn));
  store16(p->sc, _mm256_cvtepu8_epi16(_mm_unpacklo_epi8(s8, s8)));
  store16(p->mn, _mm256_cvtepu8_epi16(_mm_unpacklo_epi8(m8, m8)));
}
struct Q4_K {
  static constexpr int kBytes = 144, kD = 0;
  static constexpr bool kSub32 = true;
  static constexpr bool kSigned = false, kCorr = false, kMin = true;
  static void prep(const uint8_t* b, KPrep* p) { kmin_prep(b, p); }
  static __m256i part(const uint8_t* b, int j) {  // elements 32j..32j+31
    const __m256i q = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + 16 + 32 * (j / 2)));
    return _mm256_and_si256(j % 2 ? _mm256_srli_epi16(q, 4) : q, _mm256_set1_epi8(0x0F));
  }
};
struct Q5_K {
  static constexpr int kBytes = 176, kD = 0;
  static constexpr bool kSub32 = true;
  static constexpr bool kSigned = false, kCorr = false, kMin = true;
  static void prep(const uint8_t* b, KPrep* p) { kmin_prep(b, p); }
  static __m256i part(const uint8_t* b, int j) {
    const __m256i q = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + 48 + 32 * (j / 2)));
    const __m256i lo = _mm256_and_si256(j % 2 ? _mm256_srli_epi16(q, 4) : q, _mm256_set1_epi8(0x0F));
    return _mm256_or_si256(lo, where_bit(b + 16, j, 0x10));
  }
};
struct Q6_K {
  static constexpr int kBytes = 210, kD = 208;
  static constexpr bool kSub32 = false;
  static constexpr bool kSigned = false, kCorr = true, kMin = false;
  static void prep(const uint8_t* b, KPrep* p) {  // u = q + 32: subtract 32 * sc_h * bsums_h
    const __m128i s8 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b + 192));
    const __m256i sc = _mm256_cvtepi8_epi16(s8);
    store16(p->sc, sc);
    store16(p->corr, _mm256_slli_epi16(sc, 5));
  }
  // Elements 32j..32j+31 (half h = j/4, quadrant k = j%4) as unsigned 6-bit values (q + 32).
  static __m256i part(const uint8_t* b, int j) {
    const int h = j / 4, k = j % 4;
    const __m256i ql = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + 64 * h + 32 * (k & 1)));
    const __m256i qh = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + 128 + 32 * h));
    const __m256i lo = _mm256_and_si256(k < 2 ? ql : _mm256_srli_epi16(ql, 4), _mm256_set1_epi8(0x0F));
    __m256i hi;
    switch (k) {  // bits 2k..2k+1 of qh -> bits 4..5
      case 0: hi = _mm256_slli_epi16(qh, 4); break;
      case 1: hi = _mm256_slli_epi16(qh, 2); break;
      case 2: hi = qh; break;
      default: hi = _mm256_srli_epi16(qh, 2); break;
    }
    return _mm256_or_si256(lo, _mm256_and_si256(hi, _mm256_set1_epi8(0x30)));
  }
};
struct Q2_K {
  static constexpr int kBytes = 84, kD = 80;
  static constexpr bool kSub32 = false;
  static constexpr bool kSigned = false, kCorr = false, kMin = true;
  static void prep(const uint8_t* b, KPrep* p) {
    for (int h = 0; h < 16; ++h) p->sc[h] = int16_t(b[h] & 15), p->mn[h] = int16_t(b[h] >> 4);
  }
  static __m256i part(const uint8_t* b, int j) {  // bits 2(j % 4).. of qs[32(j / 4) + l]
    const __m256i q = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + 16 + 32 * (j / 4)));
    return _mm256_and_si256(_mm256_srli_epi16(q, 2 * (j % 4)), _mm256_set1_epi8(3));
  }
};
struct Q3_K {
  static constexpr int kBytes = 110, kD = 108;
  static constexpr bool kSub32 = false;
  static constexpr bool kSigned = false, kCorr = true, kMin = false;
  static void prep(const uint8_t* b, KPrep* p) {  // u = q + 4: subtract 4 * sc_h * bsums_h
    for (int h = 0; h < 16; ++h) {
      p->sc[h] = int16_t(q3_k_scale(h, b + 96) - 32);
      p->corr[h] = int16_t(4 * p->sc[h]);
    }
  }
  static __m256i part(const uint8_t* b, int j) {  // Q2_K's bits, plus 4 at bit j of hmask[l]
    const __m256i q = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + 32 + 32 * (j / 4)));
    const __m256i lo = _mm256_and_si256(_mm256_srli_epi16(q, 2 * (j % 4)), _mm256_set1_epi8(3));
    return _mm256_or_si256(lo, where_bit(b, j, 4));
  }
};
struct IQ4_XS {
  static constexpr int kBytes = 136, kD = 0;
  static constexpr bool kSub32 = true;
  static constexpr bool kSigned = true, kCorr = false, kMin = false;
  static void prep(const uint8_t* b, KPrep* p) {
    const uint16_t sh = load_u16(b + 2);
    for (int j = 0; j < 8; ++j)
      p->sc[2 * j] = p->sc[2 * j + 1] = int16_t(iq4_xs_scale(j, sh, b + 4) - 32);
  }
  static __m256i part(const uint8_t* b, int j) { return iq4_lookup(nibbles16(b + 8 + 16 * j)); }
};

template <class Q>
struct KS {
  template <int R, int T>
  static void tile(const Args& a, int64_t row, int64_t tok) {
    const uint8_t* w[R];
    const A8KBlock* x[T];
    GALLEON_UNROLL
    for (int r = 0; r < R; ++r) w[r] = a.w + size_t(row + r) * a.wrb;
    GALLEON_UNROLL
    for (int t = 0; t < T; ++t)
      x[t] = reinterpret_cast<const A8KBlock*>(a.act + size_t(tok + t) * a.arb);
    alignas(32) float lanes[R][T][32] = {};
    const int64_t nb = a.n / 256;
    for (int64_t b = 0; b < nb; ++b) {
      const uint8_t* wb[R];
      KPrep prep[R];
      __m256i acc[R][T];
      GALLEON_UNROLL
      for (int r = 0; r < R; ++r) {
        wb[r] = w[r] + b * Q::kBytes;
        Q::prep(wb[r], &prep[r]);
        GALLEON_UNROLL
        for (int t = 0; t < T; ++t) acc[r][t] = _mm256_setzero_si256();
      }
      GALLEON_UNROLL
      for (int j = 0; j < 8; ++j) {
        __m256i wz[R], sc[R];
        GALLEON_UNROLL
        for (int r = 0; r < R; ++r)
          wz[r] = Q::part(wb[r], j),
          sc[r] = Q::kSub32 ? _mm256_set1_epi16(prep[r].sc[2 * j])
                            : _mm256_setr_m128i(_mm_set1_epi16(prep[r].sc[2 * j]),
                                                _mm_set1_epi16(prep[r].sc[2 * j + 1]));
        GALLEON_UNROLL
        for (int t = 0; t < T; ++t) {
          const __m256i av =
              _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x[t][b].q + 32 * j));
          GALLEON_UNROLL
          for (int r = 0; r < R; ++r) {
            const __m256i p16 = Q::kSigned
                                    ? _mm256_maddubs_epi16(_mm256_sign_epi8(wz[r], wz[r]),
                                                           _mm256_sign_epi8(av, wz[r]))
                                    : _mm256_maddubs_epi16(wz[r], av);
            acc[r][t] = _mm256_add_epi32(acc[r][t], _mm256_madd_epi16(p16, sc[r]));
          }
        }
      }
      GALLEON_UNROLL
      for (int t = 0; t < T; ++t) {
        const __m256i bs = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x[t][b].bsums));
        const float da = x[t][b].d;
        GALLEON_UNROLL
        for (int r = 0; r < R; ++r) {
          int32_t sumi = hsum(acc[r][t]);
          if constexpr (Q::kCorr)
            sumi -= hsum(_mm256_madd_epi16(bs, load16(prep[r].corr)));
          const float dw = fp16_to_f32(load_u16(wb[r] + Q::kD));
          float c = (dw * da) * float(sumi);
          if constexpr (Q::kMin) {
            const int32_t summ = hsum(_mm256_madd_epi16(bs, load16(prep[r].mn)));
            c = c - (fp16_to_f32(load_u16(wb[r] + Q::kD + 2)) * da) * float(summ);
          }
          lanes[r][t][b & 31] = lanes[r][t][b & 31] + c;
        }
      }
    }
    GALLEON_UNROLL
    for (int t = 0; t < T; ++t)
      GALLEON_UNROLL
      for (int r = 0; r < R; ++r)
        a.y[size_t(tok + t) * a.ys + size_t(row + r)] = reduce_lanes(lanes[r][t]);
  }
};

// ------------------------------------------------------------------ activations

inline float amax_of(const float* x, int nvec) {
  const __m256 sign = _mm256_set1_ps(-0.0f);
  __m256 m = _mm256_setzero_ps();
  for (int i = 0; i < nvec; ++i)  // max(|x|, m): a NaN |x| yields m (NaN ignored)
    m = _mm256_max_ps(_mm256_andnot_ps(sign, _mm256_loadu_ps(x + 8 * i)), m);
  __m128 s = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
  s = _mm_max_ps(s, _mm_movehl_ps(s, s));
  s = _mm_max_ss(s, _mm_shuffle_ps(s, s, 1));
  return _mm_cvtss_f32(s);
}
inline __m256i quant8(const float* x, __m256 id) {
  __m256 v = _mm256_mul_ps(_mm256_loadu_ps(x), id);
  v = _mm256_and_ps(v, _mm256_cmp_ps(v, v, _CMP_ORD_Q));  // NaN -> 0
  v = _mm256_min_ps(_mm256_max_ps(v, _mm256_set1_ps(-127.0f)), _mm256_set1_ps(127.0f));
  return _mm256_cvtps_epi32(v);  // nearest even (MXCSR default)
}
// 32 floats -> 32 int8 at q; returns the int32 sums of the two halves of 16.
inline void quant32(const float* x, __m256 id, int8_t* q, int32_t* sum0, int32_t* sum1) {
  const __m256i i0 = quant8(x, id), i1 = quant8(x + 8, id), i2 = quant8(x + 16, id),
                i3 = quant8(x + 24, id);
  const __m256i b = _mm256_packs_epi16(_mm256_packs_epi32(i0, i1), _mm256_packs_epi32(i2, i3));
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(q),
                      _mm256_permutevar8x32_epi32(b, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7)));
  *sum0 = hsum(_mm256_add_epi32(i0, i1));
  *sum1 = hsum(_mm256_add_epi32(i2, i3));
}
inline float scale_of(float amax, float* id) {
  const float d = amax / 127.0f;
  *id = d != 0.0f ? 1.0f / d : 0.0f;
  return d;
}

void quantize_act(GgmlType wt, const float* x, void* dst, int64_t n) {
  switch (act_format(wt)) {
    case ActFormat::F32: std::memcpy(dst, x, size_t(n) * 4); return;
    case ActFormat::A8: {
      A8Block* out = static_cast<A8Block*>(dst);
      for (int64_t b = 0; b < n / 32; ++b, x += 32) {
        float id;
        out[b].d = scale_of(amax_of(x, 4), &id);
        int32_t s0, s1;
        quant32(x, _mm256_set1_ps(id), out[b].q, &s0, &s1);
        out[b].sum = s0 + s1;
      }
      return;
    }
    case ActFormat::A8K: {
      A8KBlock* out = static_cast<A8KBlock*>(dst);
      for (int64_t b = 0; b < n / 256; ++b, x += 256) {
        float id;
        out[b].d = scale_of(amax_of(x, 32), &id);
        GALLEON_UNROLL
        for (int g = 0; g < 8; ++g) {
          int32_t s0, s1;
          quant32(x + 32 * g, _mm256_set1_ps(id), out[b].q + 32 * g, &s0, &s1);
          out[b].bsums[2 * g] = int16_t(s0), out[b].bsums[2 * g + 1] = int16_t(s1);
        }
      }
      return;
    }
  }
}

// ------------------------------------------------------------------ entry points

void matmul(GgmlType wt, int64_t n, const void* W, size_t wrb, int64_t r0, int64_t r1,
            const void* act, size_t arb, int64_t ntok, float* y, size_t ys) {
  const Args a{wt, n, static_cast<const uint8_t*>(W), wrb, static_cast<const uint8_t*>(act), arb, y, ys};
  switch (wt) {
    case GgmlType::F32: return drive<KPlain<LoadF32>, 2, 1, 3>(a, r0, r1, ntok);
    case GgmlType::F16: return drive<KPlain<LoadF16>, 2, 1, 3>(a, r0, r1, ntok);
    case GgmlType::BF16: return drive<KPlain<LoadBF16>, 2, 1, 3>(a, r0, r1, ntok);
    case GgmlType::Q8_0: return drive<KA8<Q8_0>, 2, 2, 2>(a, r0, r1, ntok);
    case GgmlType::Q4_0: return drive<KA8<Q4_0>, 2, 2, 2>(a, r0, r1, ntok);
    case GgmlType::Q4_1: return drive<KA8<Q4_1>, 2, 2, 2>(a, r0, r1, ntok);
    case GgmlType::Q5_0: return drive<KA8<Q5_0>, 2, 2, 2>(a, r0, r1, ntok);
    case GgmlType::Q5_1: return drive<KA8<Q5_1>, 2, 2, 2>(a, r0, r1, ntok);
    case GgmlType::Q4_K: return drive<KS<Q4_K>, 2, 2, 2>(a, r0, r1, ntok);
    case GgmlType::Q5_K: return drive<KS<Q5_K>, 2, 2, 2>(a, r0, r1, ntok);
    case GgmlType::Q6_K: return drive<KS<Q6_K>, 2, 2, 2>(a, r0, r1, ntok);
    case GgmlType::IQ4_NL: return drive<KA8<IQ4_NL>, 2, 2, 2>(a, r0, r1, ntok);
    case GgmlType::Q2_K: return drive<KS<Q2_K>, 2, 2, 2>(a, r0, r1, ntok);
    case GgmlType::Q3_K: return drive<KS<Q3_K>, 2, 2, 2>(a, r0, r1, ntok);
    case GgmlType::IQ4_XS: return drive<KS<IQ4_XS>, 2, 2, 2>(a, r0, r1, ntok);
    default: return ops(Isa::Scalar).matmul(wt, n, W, wrb, r0, r1, act, arb, ntok, y, ys);
  }
}

float dot_f32(const float* a, const float* b, int64_t n) {
  float y;
  const Args args{GgmlType::F32, n, reinterpret_cast<const uint8_t*>(a), 0,
                  reinterpret_cast<const uint8_t*>(b), 0, &y, 1};
  KPlain<LoadF32>::tile<1, 1>(args, 0, 0);
  return y;
}
float sum_sq(const float* x, int64_t n) { return dot_f32(x, x, n); }

}  // namespace

const Ops& table() {
  static const Ops t = {Isa::Avx2,     quantize_act,   matmul,         dot_f32,
                       sum_sq,        elem::add,      elem::axpy,     elem::scale,
                       elem::scale_mul, elem::exp_sub, elem::silu_mul,
                       elem::gelu_mul, elem::lane_rows, nullptr,
                       nullptr,       nullptr};
  return t;
}

}  // namespace galleon::kern::avx2
GALLEON_ISA_END
