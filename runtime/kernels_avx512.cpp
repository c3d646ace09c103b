// AVX-512 (F/BW/VL/DQ/VNNI) path. The 32 canonical lanes are two zmm registers: lanes 0-15 and
// 16-31. Quantized dot products: exact int32 block sums with vpdpbusd (unsigned weights x signed
// activations; signed weights are offset by +128 and corrected with the activation block sum),
// then the canonical float combination one block per lane.
// GCC 12 warns on its own intrinsic headers (_mm512_undefined_*) under -Wall.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>

#include "runtime/kernels_elem.h"
#include "runtime/kernels_internal.h"
#include "runtime/kernels_tiling.h"

namespace galleon::kern::avx512 {
namespace {

#define GALLEON_UNROLL _Pragma("GCC unroll 16")

// ------------------------------------------------------------------ helpers

inline float reduce_lanes(__m512 lo, __m512 hi) {
  const __m512 s16 = _mm512_add_ps(lo, hi);
  const __m256 s8 = _mm256_add_ps(_mm512_castps512_ps256(s16), _mm512_extractf32x8_ps(s16, 1));
  const __m128 s4 = _mm_add_ps(_mm256_castps256_ps128(s8), _mm256_extractf128_ps(s8, 1));
  const __m128 s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
  const __m128 s1 = _mm_add_ss(s2, _mm_shuffle_ps(s2, s2, 1));
  return canonical_nan(_mm_cvtss_f32(s1));
}

inline __mmask16 tail_mask16(int64_t left) {
  return left >= 16 ? __mmask16(0xFFFF) : left <= 0 ? __mmask16(0) : __mmask16((1u << left) - 1);
}

// ------------------------------------------------------------------ f32 / f16 / bf16 weights

struct LoadF32 {
  static __m512 load(const uint8_t* p, int64_t i) {
    return _mm512_loadu_ps(reinterpret_cast<const float*>(p) + i);
  }
  static __m512 load(const uint8_t* p, int64_t i, __mmask16 m) {
    return _mm512_maskz_loadu_ps(m, reinterpret_cast<const float*>(p) + i);
  }
};
struct LoadF16 {
  static __m512 load(const uint8_t* p, int64_t i) {
    return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + 2 * i)));
  }
  static __m512 load(const uint8_t* p, int64_t i, __mmask16 m) {
    return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, p + 2 * i));
  }
};
struct LoadBF16 {
  static __m512 widen(__m256i h) {
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
  }
  static __m512 load(const uint8_t* p, int64_t i) {
    return widen(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + 2 * i)));
  }
  static __m512 load(const uint8_t* p, int64_t i, __mmask16 m) {
    return widen(_mm256_maskz_loadu_epi16(m, p + 2 * i));
  }
};

template <class L>
struct KPlain {
  template <int R, int T>
  static void tile(const Args& a, int64_t row, int64_t tok) {
    const uint8_t* w[R];
    const uint8_t* x[T];
    GALLEON_UNROLL
    for (int r = 0; r < R; ++r) w[r] = a.w + size_t(row + r) * a.wrb;
    GALLEON_UNROLL
    for (int t = 0; t < T; ++t) x[t] = a.act + size_t(tok + t) * a.arb;
    __m512 acc[R][T][2];
    GALLEON_UNROLL
    for (int r = 0; r < R; ++r)
      GALLEON_UNROLL
      for (int t = 0; t < T; ++t) acc[r][t][0] = acc[r][t][1] = _mm512_setzero_ps();
    const int64_t n = a.n;
    int64_t i = 0;
    for (; i + 32 <= n; i += 32) {
      GALLEON_UNROLL
      for (int h = 0; h < 2; ++h) {
        __m512 wv[R];
        GALLEON_UNROLL
        for (int r = 0; r < R; ++r) wv[r] = L::load(w[r], i + 16 * h);
        GALLEON_UNROLL
        for (int t = 0; t < T; ++t) {
          const __m512 xv = LoadF32::load(x[t], i + 16 * h);
          GALLEON_UNROLL
          for (int r = 0; r < R; ++r)
            acc[r][t][h] = _mm512_add_ps(acc[r][t][h], _mm512_mul_ps(wv[r], xv));
        }
      }
    }
    if (i < n) {  // zero-padded tail: products +0 leave the lanes unchanged
      GALLEON_UNROLL
      for (int h = 0; h < 2; ++h) {
        const __mmask16 m = tail_mask16(n - i - 16 * h);
        __m512 wv[R];
        GALLEON_UNROLL
        for (int r = 0; r < R; ++r) wv[r] = L::load(w[r], i + 16 * h, m);
        GALLEON_UNROLL
        for (int t = 0; t < T; ++t) {
          const __m512 xv = LoadF32::load(x[t], i + 16 * h, m);
          GALLEON_UNROLL
          for (int r = 0; r < R; ++r)
            acc[r][t][h] = _mm512_add_ps(acc[r][t][h], _mm512_mul_ps(wv[r], xv));
        }
      }
    }
    GALLEON_UNROLL
    for (int t = 0; t < T; ++t)
      GALLEON_UNROLL
      for (int r = 0; r < R; ++r)
        a.y[size_t(tok + t) * a.ys + size_t(row + r)] = reduce_lanes(acc[r][t][0], acc[r][t][1]);
  }
};

// ------------------------------------------------------------------ A8 family (32-blocks)

inline __m128i ld128(const uint8_t* p, bool valid) {
  return valid ? _mm_loadu_si128(reinterpret_cast<const __m128i*>(p)) : _mm_setzero_si128();
}
inline __m256i ld256(const uint8_t* p, bool valid) {
  return valid ? _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)) : _mm256_setzero_si256();
}
inline __m512i pair(__m256i lo, __m256i hi) {
  return _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
}

// A pair of 32-blocks (lo, hi) as 64 unsigned weight bytes. "Interleaved" kinds give the 128-bit
// quarters [lo 0-15, hi 0-15, lo 16-31, hi 16-31] (nibbles unpack that way cheaply); the others
// [lo 0-31, hi 0-31]. Activations are loaded in the same arrangement.
inline __m512i nibble_pair(const uint8_t* lo, const uint8_t* hi, bool vlo, bool vhi) {
  const __m256i y = _mm256_inserti128_si256(_mm256_castsi128_si256(ld128(lo, vlo)), ld128(hi, vhi), 1);
  return _mm512_and_si512(pair(y, _mm256_srli_epi16(y, 4)), _mm512_set1_epi8(0x0F));
}
// Interleaved 5th bits: bit e of each block's 32-bit qh -> +16 at that element's byte.
inline __m512i add_high_bits(__m512i v, const uint8_t* qlo, const uint8_t* qhi, bool vlo, bool vhi) {
  const uint64_t a = vlo ? load_u32(qlo) : 0, b = vhi ? load_u32(qhi) : 0;
  const uint64_t k = (a & 0xFFFF) | ((b & 0xFFFF) << 16) | ((a >> 16) << 32) | ((b >> 16) << 48);
  return _mm512_mask_add_epi8(v, __mmask64(k), v, _mm512_set1_epi8(16));
}

// Each weight kind: block bytes, pair decode, activation-sum correction, min field.
struct Q8_0 {
  static constexpr int kBytes = 34, kCorrShift = 7;  // (w + 128): subtract 128 * sum_a
  static constexpr bool kMin = false, kIlv = false;
  static __m512i decode2(const uint8_t* lo, const uint8_t* hi, bool vlo, bool vhi) {
    return _mm512_xor_si512(pair(ld256(lo + 2, vlo), ld256(hi + 2, vhi)),
                            _mm512_set1_epi8(char(0x80)));
  }
};
struct Q4_0 {
  static constexpr int kBytes = 18, kCorrShift = 3;  // nibble - 8
  static constexpr bool kMin = false, kIlv = true;
  static __m512i decode2(const uint8_t* lo, const uint8_t* hi, bool vlo, bool vhi) {
    return nibble_pair(lo + 2, hi + 2, vlo, vhi);
  }
};
struct Q5_0 {
  static constexpr int kBytes = 22, kCorrShift = 4;  // 5 bits - 16
  static constexpr bool kMin = false, kIlv = true;
  static __m512i decode2(const uint8_t* lo, const uint8_t* hi, bool vlo, bool vhi) {
    return add_high_bits(nibble_pair(lo + 6, hi + 6, vlo, vhi), lo + 2, hi + 2, vlo, vhi);
  }
};
struct Q4_1 {
  static constexpr int kBytes = 20, kCorrShift = -1;
  static constexpr bool kMin = true, kIlv = true;
  static __m512i decode2(const uint8_t* lo, const uint8_t* hi, bool vlo, bool vhi) {
    return nibble_pair(lo + 4, hi + 4, vlo, vhi);
  }
};
struct Q5_1 {
  static constexpr int kBytes = 24, kCorrShift = -1;
  static constexpr bool kMin = true, kIlv = true;
  static __m512i decode2(const uint8_t* lo, const uint8_t* hi, bool vlo, bool vhi) {
    return add_high_bits(nibble_pair(lo + 8, hi + 8, vlo, vhi), lo + 4, hi + 4, vlo, vhi);
  }
};

template <bool kIlv>
inline __m512i act_pair(const int8_t* lo, const int8_t* hi, bool vlo, bool vhi) {
  const __m256i a = ld256(reinterpret_cast<const uint8_t*>(lo), vlo);
  const __m256i b = ld256(reinterpret_cast<const uint8_t*>(hi), vhi);
  if constexpr (!kIlv) return pair(a, b);
  return _mm512_permutex2var_epi64(_mm512_castsi256_si512(a), _mm512_setr_epi64(0, 1, 8, 9, 2, 3, 10, 11),
                                   _mm512_castsi256_si512(b));
}

inline __m512i red1(__m512i p0, __m512i p1) {
  return _mm512_add_epi32(_mm512_unpacklo_epi32(p0, p1), _mm512_unpackhi_epi32(p0, p1));
}
inline __m512i red2(__m512i q0, __m512i q1) {
  return _mm512_add_epi32(_mm512_unpacklo_epi64(q0, q1), _mm512_unpackhi_epi64(q0, q1));
}
template <bool kIlv>
inline __m512i red3(__m512i r0, __m512i r1) {
  if constexpr (kIlv)  // block lo in quarters 0 and 2, hi in 1 and 3
    return _mm512_add_epi32(_mm512_shuffle_i32x4(r0, r1, _MM_SHUFFLE(1, 0, 1, 0)),
                            _mm512_shuffle_i32x4(r0, r1, _MM_SHUFFLE(3, 2, 3, 2)));
  return _mm512_add_epi32(_mm512_shuffle_i32x4(r0, r1, _MM_SHUFFLE(2, 0, 2, 0)),
                          _mm512_shuffle_i32x4(r0, r1, _MM_SHUFFLE(3, 1, 3, 1)));
}

template <class Q>
struct KA8 {
  // Raw int32 sums (unsigned weight x activation) of blocks [b0, b0+16), one block per lane;
  // blocks at or past nb count 0. Slot i holds blocks lo(i) and lo(i)+4, so that the transpose
  // network red1/red2/red3 leaves block b0+j in lane j.
  template <int R, int T, bool kFull>
  static void group_sums(const uint8_t* const* w, const uint8_t* const* x, int64_t b0,
                         int64_t nb, __m512i (&S)[R][T]) {
    __m512i half[2][R][T];
    GALLEON_UNROLL
    for (int hh = 0; hh < 2; ++hh) {
      __m512i q[2][R][T];
      GALLEON_UNROLL
      for (int qq = 0; qq < 2; ++qq) {
        __m512i p[2][R][T];
        GALLEON_UNROLL
        for (int pp = 0; pp < 2; ++pp) {
          const int slot = 4 * hh + 2 * qq + pp;
          const int64_t blo = b0 + (slot < 4 ? slot : slot + 4), bhi = blo + 4;
          const bool vlo = kFull || blo < nb, vhi = kFull || bhi < nb;
          __m512i wz[R];
          GALLEON_UNROLL
          for (int r = 0; r < R; ++r)
            wz[r] = Q::decode2(w[r] + blo * Q::kBytes, w[r] + bhi * Q::kBytes, vlo, vhi);
          GALLEON_UNROLL
          for (int t = 0; t < T; ++t) {
            const A8Block* ab = reinterpret_cast<const A8Block*>(x[t]);
            const __m512i az = act_pair<Q::kIlv>(ab[blo].q, ab[bhi].q, vlo, vhi);
            GALLEON_UNROLL
            for (int r = 0; r < R; ++r)
              p[pp][r][t] = _mm512_dpbusd_epi32(_mm512_setzero_si512(), wz[r], az);
          }
        }
        GALLEON_UNROLL
        for (int r = 0; r < R; ++r)
          GALLEON_UNROLL
          for (int t = 0; t < T; ++t) q[qq][r][t] = red1(p[0][r][t], p[1][r][t]);
      }
      GALLEON_UNROLL
      for (int r = 0; r < R; ++r)
        GALLEON_UNROLL
        for (int t = 0; t < T; ++t) half[hh][r][t] = red2(q[0][r][t], q[1][r][t]);
    }
    GALLEON_UNROLL
    for (int r = 0; r < R; ++r)
      GALLEON_UNROLL
      for (int t = 0; t < T; ++t) S[r][t] = red3<Q::kIlv>(half[0][r][t], half[1][r][t]);
  }

  template <int R, int T, bool kFull>
  static void group(const uint8_t* const* w, const uint8_t* const* x, int64_t b0, int64_t nb,
                    __m512 (&acc)[R][T]) {
    __m512i S[R][T];
    group_sums<R, T, kFull>(w, x, b0, nb, S);
    const __mmask16 m = kFull ? __mmask16(0xFFFF) : tail_mask16(nb - b0);
    const __m512i iw = _mm512_mullo_epi32(
        _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
        _mm512_set1_epi32(Q::kBytes));
    const __m512i ia = _mm512_setr_epi32(0, 40, 80, 120, 160, 200, 240, 280, 320, 360, 400, 440,
                                         480, 520, 560, 600);
    __m512 dw[R], mw[R];
    GALLEON_UNROLL
    for (int r = 0; r < R; ++r) {
      const uint8_t* base = w[r] + b0 * Q::kBytes;
      const __m512i raw = _mm512_mask_i32gather_epi32(_mm512_setzero_si512(), m, iw, base, 1);
      dw[r] = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(raw));
      if constexpr (Q::kMin) {
        const __m512i rm = _mm512_mask_i32gather_epi32(_mm512_setzero_si512(), m, iw, base + 2, 1);
        mw[r] = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(rm));
      }
    }
    GALLEON_UNROLL
    for (int t = 0; t < T; ++t) {
      const uint8_t* base = x[t] + b0 * 40;
      const __m512 da = _mm512_mask_i32gather_ps(_mm512_setzero_ps(), m, ia, base, 1);
      const __m512i sa = _mm512_mask_i32gather_epi32(_mm512_setzero_si512(), m, ia, base + 4, 1);
      GALLEON_UNROLL
      for (int r = 0; r < R; ++r) {
        __m512i isum = S[r][t];
        if constexpr (Q::kCorrShift >= 0)
          isum = _mm512_sub_epi32(isum, _mm512_slli_epi32(sa, Q::kCorrShift));
        __m512 c = _mm512_mul_ps(_mm512_mul_ps(dw[r], da), _mm512_cvtepi32_ps(isum));
        if constexpr (Q::kMin)
          c = _mm512_add_ps(c, _mm512_mul_ps(mw[r], _mm512_mul_ps(da, _mm512_cvtepi32_ps(sa))));
        acc[r][t] = _mm512_add_ps(acc[r][t], c);
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
    __m512 acc0[R][T], acc1[R][T];
    GALLEON_UNROLL
    for (int r = 0; r < R; ++r)
      GALLEON_UNROLL
      for (int t = 0; t < T; ++t) acc0[r][t] = acc1[r][t] = _mm512_setzero_ps();
    const int64_t nb = a.n / 32;
    for (int64_t b0 = 0; b0 < nb; b0 += 32) {  // blocks b0..b0+15 -> lanes 0-15, next 16 -> 16-31
      if (b0 + 32 <= nb) {
        group<R, T, true>(w, x, b0, nb, acc0);
        group<R, T, true>(w, x, b0 + 16, nb, acc1);
      } else {
        group<R, T, false>(w, x, b0, nb, acc0);
        if (b0 + 16 < nb) group<R, T, false>(w, x, b0 + 16, nb, acc1);
      }
    }
    GALLEON_UNROLL
    for (int t = 0; t < T; ++t)
      GALLEON_UNROLL
      for (int r = 0; r < R; ++r)
        a.y[size_t(tok + t) * a.ys + size_t(row + r)] = reduce_lanes(acc0[r][t], acc1[r][t]);
  }
};

// ------------------------------------------------------------------ K-quants (256-blocks)

inline int32_t hsum(__m512i v) { return _mm512_reduce_add_epi32(v); }

// 8 six-bit scales and 8 mins of a Q4_K/Q5_K block, as bytes (get_scale_min_k4 unpacked).
inline void kmin_scales(const uint8_t* s, uint64_t* sc, uint64_t* mn) {
  const uint32_t a = load_u32(s), b = load_u32(s + 4), c = load_u32(s + 8);
  const uint32_t sc_hi = (c & 0x0F0F0F0Fu) | (((a >> 6) & 0x03030303u) << 4);
  const uint32_t mn_hi = ((c >> 4) & 0x0F0F0F0Fu) | (((b >> 6) & 0x03030303u) << 4);
  *sc = uint64_t(a & 0x3F3F3F3Fu) | (uint64_t(sc_hi) << 32);
  *mn = uint64_t(b & 0x3F3F3F3Fu) | (uint64_t(mn_hi) << 32);
}

inline __m512i scale_pairs(__m512i sc16, int c) {  // int16 lanes: sc[2c] x16, sc[2c+1] x16
  const __m512i idx = _mm512_add_epi16(
      _mm512_set1_epi16(short(2 * c)),
      _mm512_mask_blend_epi16(0xFFFF0000u, _mm512_setzero_si512(), _mm512_set1_epi16(1)));
  return _mm512_permutexvar_epi16(idx, sc16);
}
inline __m512i scale_quads(__m512i sc16, int c) {  // sc[4c+k] for int16 lanes 8k..8k+7
  const __m512i lane = _mm512_setr_epi64(0, 0, 0x0001000100010001LL, 0x0001000100010001LL,
                                         0x0002000200020002LL, 0x0002000200020002LL,
                                         0x0003000300030003LL, 0x0003000300030003LL);
  return _mm512_permutexvar_epi16(_mm512_add_epi16(_mm512_set1_epi16(short(4 * c)), lane), sc16);
}

inline __m512i nibbles32(const uint8_t* p) {  // 32 bytes -> 64: low nibbles then high nibbles
  const __m256i y = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
  return _mm512_and_si512(pair(y, _mm256_srli_epi16(y, 4)), _mm512_set1_epi8(0x0F));
}

struct Q4_K {
  static constexpr int kBytes = 144;
  struct Prep {
    __m512i sc16;
    __m256i mn16;
  };
  static void prep(const uint8_t* b, Prep* p) {
    uint64_t sc, mn;
    kmin_scales(b + 4, &sc, &mn);
    p->sc16 = _mm512_zextsi128_si512(_mm_cvtepu8_epi16(_mm_cvtsi64_si128(int64_t(sc))));
    const __m128i m8 = _mm_cvtsi64_si128(int64_t(mn));
    p->mn16 = _mm256_cvtepu8_epi16(_mm_unpacklo_epi8(m8, m8));
  }
  static __m512i chunk(const uint8_t* b, const Prep&, int c) { return nibbles32(b + 16 + 32 * c); }
  static __m512i scales(const Prep& p, int c) { return scale_pairs(p.sc16, c); }
};
struct Q5_K {
  static constexpr int kBytes = 176;
  struct Prep {
    __m512i sc16, qh;
    __m256i mn16;
  };
  static void prep(const uint8_t* b, Prep* p) {
    uint64_t sc, mn;
    kmin_scales(b + 4, &sc, &mn);
    p->sc16 = _mm512_zextsi128_si512(_mm_cvtepu8_epi16(_mm_cvtsi64_si128(int64_t(sc))));
    const __m128i m8 = _mm_cvtsi64_si128(int64_t(mn));
    p->mn16 = _mm256_cvtepu8_epi16(_mm_unpacklo_epi8(m8, m8));
    p->qh = _mm512_broadcast_i64x4(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + 16)));
  }
  static __m512i chunk(const uint8_t* b, const Prep& p, int c) {
    const __m512i v = nibbles32(b + 48 + 32 * c);
    const __m512i bit = _mm512_mask_blend_epi8(0xFFFFFFFF00000000ull, _mm512_set1_epi8(char(1 << (2 * c))),
                                               _mm512_set1_epi8(char(1 << (2 * c + 1))));
    return _mm512_mask_add_epi8(v, _mm512_test_epi8_mask(p.qh, bit), v, _mm512_set1_epi8(16));
  }
  static __m512i scales(const Prep& p, int c) { return scale_pairs(p.sc16, c); }
};
struct Q6_K {
  static constexpr int kBytes = 210;
  struct Prep {
    __m512i sc16;
    __m256i sc16y;
  };
  static void prep(const uint8_t* b, Prep* p) {
    p->sc16y = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(b + 192)));
    p->sc16 = _mm512_zextsi256_si512(p->sc16y);
  }
  // Elements 64c..64c+63 as unsigned 6-bit values (q + 32).
  static __m512i chunk(const uint8_t* b, const Prep&, int c) {
    const int h = c / 2, odd = c % 2;
    const __m512i L = _mm512_loadu_si512(b + 64 * h);
    const __m256i qh = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + 128 + 32 * h));
    const __m512i Q = pair(qh, _mm256_srli_epi16(qh, 2));  // bits k=0/1 (or 2/3 after >>4)
    const __m512i lo = odd ? _mm512_srli_epi16(L, 4) : L;
    const __m512i hb = odd ? Q : _mm512_slli_epi16(Q, 4);
    return _mm512_or_si512(_mm512_and_si512(lo, _mm512_set1_epi8(0x0F)),
                           _mm512_and_si512(hb, _mm512_set1_epi8(0x30)));
  }
  static __m512i scales(const Prep& p, int c) { return scale_quads(p.sc16, c); }
};

template <class Q>
struct KK {
  template <int R, int T>
  static void tile(const Args& a, int64_t row, int64_t tok) {
    const uint8_t* w[R];
    const A8KBlock* x[T];
    GALLEON_UNROLL
    for (int r = 0; r < R; ++r) w[r] = a.w + size_t(row + r) * a.wrb;
    GALLEON_UNROLL
    for (int t = 0; t < T; ++t) x[t] = reinterpret_cast<const A8KBlock*>(a.act + size_t(tok + t) * a.arb);
    alignas(64) float lanes[R][T][32] = {};
    const int64_t nb = a.n / 256;
    for (int64_t b = 0; b < nb; ++b) {
      typename Q::Prep prep[R];
      const uint8_t* wb[R];
      GALLEON_UNROLL
      for (int r = 0; r < R; ++r) wb[r] = w[r] + b * Q::kBytes, Q::prep(wb[r], &prep[r]);
      __m512i acc[R][T];
      GALLEON_UNROLL
      for (int r = 0; r < R; ++r)
        GALLEON_UNROLL
        for (int t = 0; t < T; ++t) acc[r][t] = _mm512_setzero_si512();
      GALLEON_UNROLL
      for (int c = 0; c < 4; ++c) {
        __m512i wz[R], sc[R];
        GALLEON_UNROLL
        for (int r = 0; r < R; ++r) wz[r] = Q::chunk(wb[r], prep[r], c), sc[r] = Q::scales(prep[r], c);
        GALLEON_UNROLL
        for (int t = 0; t < T; ++t) {
          const __m512i az = _mm512_loadu_si512(x[t][b].q + 64 * c);
          GALLEON_UNROLL
          for (int r = 0; r < R; ++r)
            acc[r][t] = _mm512_dpwssd_epi32(acc[r][t], _mm512_maddubs_epi16(wz[r], az), sc[r]);
        }
      }
      GALLEON_UNROLL
      for (int t = 0; t < T; ++t) {
        const __m256i bs = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x[t][b].bsums));
        const float da = x[t][b].d;
        GALLEON_UNROLL
        for (int r = 0; r < R; ++r) {
          const float dw = fp16_to_f32(load_u16(wb[r] + (Q::kBytes == 210 ? 208 : 0)));
          float c;
          if constexpr (Q::kBytes == 210) {
            // q = u - 32: subtract 32 * sum_j sc_j * bsums_j.
            const __m256i corr = _mm256_madd_epi16(bs, prep[r].sc16y);
            const __m512i corr32 = _mm512_zextsi256_si512(_mm256_slli_epi32(corr, 5));
            const int32_t sumi = hsum(_mm512_sub_epi32(acc[r][t], corr32));
            c = (dw * da) * float(sumi);
          } else {
            const float dmin = fp16_to_f32(load_u16(wb[r] + 2));
            const int32_t sumi = hsum(acc[r][t]);
            const __m256i mm = _mm256_madd_epi16(bs, prep[r].mn16);
            const int32_t summ = hsum(_mm512_zextsi256_si512(mm));
            c = (dw * da) * float(sumi) - (dmin * da) * float(summ);
          }
          lanes[r][t][b & 31] = lanes[r][t][b & 31] + c;
        }
      }
    }
    GALLEON_UNROLL
    for (int t = 0; t < T; ++t)
      GALLEON_UNROLL
      for (int r = 0; r < R; ++r)
        a.y[size_t(tok + t) * a.ys + size_t(row + r)] =
            reduce_lanes(_mm512_load_ps(lanes[r][t]), _mm512_load_ps(lanes[r][t] + 16));
  }
};

// ------------------------------------------------------------------ activations

inline float amax_of(const float* x, int nvec) {
  const __m512 sign = _mm512_set1_ps(-0.0f);
  __m512 m = _mm512_setzero_ps();
  for (int i = 0; i < nvec; ++i)  // max(|x|, m): a NaN |x| yields m (NaN ignored)
    m = _mm512_max_ps(_mm512_andnot_ps(sign, _mm512_loadu_ps(x + 16 * i)), m);
  return _mm512_reduce_max_ps(m);
}
inline __m512i quant16(const float* x, __m512 id) {
  __m512 v = _mm512_mul_ps(_mm512_loadu_ps(x), id);
  v = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(v, v, _CMP_ORD_Q), v);  // NaN -> 0
  v = _mm512_min_ps(_mm512_max_ps(v, _mm512_set1_ps(-127.0f)), _mm512_set1_ps(127.0f));
  return _mm512_cvtps_epi32(v);  // nearest even (MXCSR default)
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
        out[b].d = scale_of(amax_of(x, 2), &id);
        const __m512 idv = _mm512_set1_ps(id);
        const __m512i q0 = quant16(x, idv), q1 = quant16(x + 16, idv);
        _mm_storeu_si128(reinterpret_cast<__m128i*>(out[b].q), _mm512_cvtepi32_epi8(q0));
        _mm_storeu_si128(reinterpret_cast<__m128i*>(out[b].q + 16), _mm512_cvtepi32_epi8(q1));
        out[b].sum = _mm512_reduce_add_epi32(_mm512_add_epi32(q0, q1));
      }
      return;
    }
    case ActFormat::A8K: {
      A8KBlock* out = static_cast<A8KBlock*>(dst);
      for (int64_t b = 0; b < n / 256; ++b, x += 256) {
        float id;
        out[b].d = scale_of(amax_of(x, 16), &id);
        const __m512 idv = _mm512_set1_ps(id);
        GALLEON_UNROLL
        for (int g = 0; g < 16; ++g) {
          const __m512i q = quant16(x + 16 * g, idv);
          _mm_storeu_si128(reinterpret_cast<__m128i*>(out[b].q + 16 * g), _mm512_cvtepi32_epi8(q));
          out[b].bsums[g] = int16_t(_mm512_reduce_add_epi32(q));
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
  if (gemm(a, r0, r1, ntok)) return;
  switch (wt) {
    case GgmlType::F32: return drive<KPlain<LoadF32>, 4, 4, 3>(a, r0, r1, ntok);
    case GgmlType::F16: return drive<KPlain<LoadF16>, 4, 4, 3>(a, r0, r1, ntok);
    case GgmlType::BF16: return drive<KPlain<LoadBF16>, 4, 4, 3>(a, r0, r1, ntok);
    case GgmlType::Q8_0: return drive<KA8<Q8_0>, 4, 4, 2>(a, r0, r1, ntok);
    case GgmlType::Q4_0: return drive<KA8<Q4_0>, 4, 4, 2>(a, r0, r1, ntok);
    case GgmlType::Q4_1: return drive<KA8<Q4_1>, 4, 4, 2>(a, r0, r1, ntok);
    case GgmlType::Q5_0: return drive<KA8<Q5_0>, 4, 4, 2>(a, r0, r1, ntok);
    case GgmlType::Q5_1: return drive<KA8<Q5_1>, 4, 4, 2>(a, r0, r1, ntok);
    case GgmlType::Q4_K: return drive<KK<Q4_K>, 4, 4, 4>(a, r0, r1, ntok);
    case GgmlType::Q5_K: return drive<KK<Q5_K>, 4, 4, 4>(a, r0, r1, ntok);
    case GgmlType::Q6_K: return drive<KK<Q6_K>, 4, 4, 4>(a, r0, r1, ntok);
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
  static const Ops t = {Isa::Avx512,     quantize_act,   matmul,         dot_f32,
                       sum_sq,        elem::add,      elem::axpy,     elem::scale,
                       elem::scale_mul, elem::exp_sub, elem::silu_mul, panel_bytes,
                       pack_panel,    matmul_panel};
  return t;
}

}  // namespace galleon::kern::avx512
