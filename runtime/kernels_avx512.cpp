// AVX-512 (F/BW/VL/DQ/VNNI) path. The 32 canonical lanes are two zmm registers: lanes 0-15 and
// 16-31. Quantized dot products: exact int32 block sums with vpdpbusd (unsigned weights x signed
// activations; signed weights are offset by +128 and corrected with the activation block sum),
// then the canonical float combination one block per lane.
// GCC 12 warns on its own intrinsic headers (_mm512_undefined_*) under -Wall.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>

#include <cstdint>
#include <cstring>
#include <vector>

#include "runtime/isa_region.h"
#include "runtime/kernels.h"

// Only what follows is compiled for AVX-512 (runtime/isa_region.h).
GALLEON_ISA_BEGIN("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,f16c,fma")
#include "runtime/kernels_avx512_lanes.h"
#include "runtime/kernels_elem.h"
#include "runtime/kernels_internal.h"
#include "runtime/kernels_tiling.h"

namespace galleon::kern::avx512 {
namespace {

#define GALLEON_INLINE __attribute__((always_inline)) inline

// ------------------------------------------------------------------ helpers

inline float reduce_lanes(__m512 lo, __m512 hi) {
  const __m512 s16 = _mm512_add_ps(lo, hi);
  const __m256 s8 = _mm256_add_ps(_mm512_castps512_ps256(s16), _mm512_extractf32x8_ps(s16, 1));
  const __m128 s4 = _mm_add_ps(_mm256_castps256_ps128(s8), _mm256_extractf128_ps(s8, 1));
  const __m128 s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
  const __m128 s1 = _mm_add_ss(s2, _mm_shuffle_ps(s2, s2, 1));
  return canonical_nan(_mm_cvtss_f32(s1));
}

// _mm512_inserti32x4 with a quarter index that is a constant only after unrolling (unoptimised
// builds need an immediate at every call).
inline __m512i insert128(__m512i z, __m128i v, int quarter) {
  switch (quarter) {
    case 0: return _mm512_inserti32x4(z, v, 0);
    case 1: return _mm512_inserti32x4(z, v, 1);
    case 2: return _mm512_inserti32x4(z, v, 2);
    default: return _mm512_inserti32x4(z, v, 3);
  }
}

inline __mmask16 tail_mask16(int64_t left) {
  return left >= 16 ? __mmask16(0xFFFF) : left <= 0 ? __mmask16(0) : __mmask16((1u << left) - 1);
}

// A tile's result for (token tok, row): the canonical reduction into y, or in decode (kGemv) the
// 32 lanes themselves, to a.y + 32 * row, for reduce_rows16 (one batched tree for 16 rows).
template <bool kGemv>
inline void put_lanes(const Args& a, int64_t tok, int64_t row, __m512 lo, __m512 hi) {
  if constexpr (kGemv) {
    _mm512_storeu_ps(a.y + 32 * row, lo);
    _mm512_storeu_ps(a.y + 32 * row + 16, hi);
  } else {
    a.y[size_t(tok) * a.ys + size_t(row)] = reduce_lanes(lo, hi);
  }
}

// reduce_lanes of m <= 16 rows of 32 lanes (lanes[32 * i ...]) into y[0..m), with the same adds
// (L[i] + L[i+s] for s = 16, 8, 4, 2, 1; float addition is commutative) done 16 rows at a time.
inline void reduce_rows16(const float* lanes, int m, float* y) {
  __m512 v[16];
  for (int i = 0; i < 16; ++i)
    v[i] = i < m ? _mm512_add_ps(_mm512_loadu_ps(lanes + 32 * i),
                                 _mm512_loadu_ps(lanes + 32 * i + 16))
                 : _mm512_setzero_ps();
  // s = 8: rows 2k, 2k+1 -> one register, row 2k in 128-bit quarters 0-1, 2k+1 in 2-3.
  __m512 u[8];
  for (int k = 0; k < 8; ++k)
    u[k] = _mm512_add_ps(_mm512_shuffle_f32x4(v[2 * k], v[2 * k + 1], _MM_SHUFFLE(1, 0, 1, 0)),
                         _mm512_shuffle_f32x4(v[2 * k], v[2 * k + 1], _MM_SHUFFLE(3, 2, 3, 2)));
  // s = 4: quarter q of w[k] holds row 4k + q.
  __m512 w[4];
  for (int k = 0; k < 4; ++k)
    w[k] = _mm512_add_ps(_mm512_shuffle_f32x4(u[2 * k], u[2 * k + 1], _MM_SHUFFLE(2, 0, 2, 0)),
                         _mm512_shuffle_f32x4(u[2 * k], u[2 * k + 1], _MM_SHUFFLE(3, 1, 3, 1)));
  // s = 2: quarter q of z[k] holds [row 8k+q lanes 0-1, row 8k+4+q lanes 0-1].
  __m512 z[2];
  for (int k = 0; k < 2; ++k) {
    const __m512d a = _mm512_castps_pd(w[2 * k]), b = _mm512_castps_pd(w[2 * k + 1]);
    z[k] = _mm512_add_ps(_mm512_castpd_ps(_mm512_unpacklo_pd(a, b)),
                         _mm512_castpd_ps(_mm512_unpackhi_pd(a, b)));
  }
  // s = 1: quarter q: rows q, 4+q, 8+q, 12+q.
  const __m512 r = _mm512_add_ps(_mm512_shuffle_ps(z[0], z[1], _MM_SHUFFLE(2, 0, 2, 0)),
                                 _mm512_shuffle_ps(z[0], z[1], _MM_SHUFFLE(3, 1, 3, 1)));
  __m512 out = _mm512_permutexvar_ps(
      _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15), r);
  out = _mm512_mask_mov_ps(out, _mm512_cmp_ps_mask(out, out, _CMP_UNORD_Q),
                           _mm512_castsi512_ps(_mm512_set1_epi32(0x7fc00000)));
  _mm512_mask_storeu_ps(y, tail_mask16(m), out);
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
  template <int R, int T, bool kGemv = false>
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
        put_lanes<kGemv>(a, tok + t, row + r, acc[r][t][0], acc[r][t][1]);
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

// Each weight kind: block bytes, pair decode, activation-sum correction, min field. kQuad: plain
// nibbles at byte kQs, which decode (KA8::quad_sums) takes four blocks to a register.
struct Q8_0 {
  static constexpr int kBytes = 34, kCorrShift = 7;  // (w + 128): subtract 128 * sum_a
  static constexpr bool kMin = false, kIlv = false, kQuad = false;
  static __m512i decode2(const uint8_t* lo, const uint8_t* hi, bool vlo, bool vhi) {
    return _mm512_xor_si512(pair(ld256(lo + 2, vlo), ld256(hi + 2, vhi)),
                            _mm512_set1_epi8(char(0x80)));
  }
};
struct Q4_0 {
  static constexpr int kBytes = 18, kCorrShift = 3, kQs = 2;  // nibble - 8
  static constexpr bool kMin = false, kIlv = true, kQuad = true;
  static __m512i decode2(const uint8_t* lo, const uint8_t* hi, bool vlo, bool vhi) {
    return nibble_pair(lo + 2, hi + 2, vlo, vhi);
  }
};
struct Q5_0 {
  static constexpr int kBytes = 22, kCorrShift = 4;  // 5 bits - 16
  static constexpr bool kMin = false, kIlv = true, kQuad = false;
  static __m512i decode2(const uint8_t* lo, const uint8_t* hi, bool vlo, bool vhi) {
    return add_high_bits(nibble_pair(lo + 6, hi + 6, vlo, vhi), lo + 2, hi + 2, vlo, vhi);
  }
};
struct Q4_1 {
  static constexpr int kBytes = 20, kCorrShift = -1, kQs = 4;
  static constexpr bool kMin = true, kIlv = true, kQuad = true;
  static __m512i decode2(const uint8_t* lo, const uint8_t* hi, bool vlo, bool vhi) {
    return nibble_pair(lo + 4, hi + 4, vlo, vhi);
  }
};
struct Q5_1 {
  static constexpr int kBytes = 24, kCorrShift = -1;
  static constexpr bool kMin = true, kIlv = true, kQuad = false;
  static __m512i decode2(const uint8_t* lo, const uint8_t* hi, bool vlo, bool vhi) {
    return add_high_bits(nibble_pair(lo + 8, hi + 8, vlo, vhi), lo + 4, hi + 4, vlo, vhi);
  }
};

// IQ4_NL: V[nibble] + 128 (1..241), interleaved as Q4_0's nibbles.
inline __m128i iq4_table_u8() {
  return _mm_xor_si128(_mm_loadu_si128(reinterpret_cast<const __m128i*>(kIq4Values)),
                       _mm_set1_epi8(char(0x80)));
}
struct IQ4_NL {
  static constexpr int kBytes = 18, kCorrShift = 7;  // (V + 128): subtract 128 * sum_a
  static constexpr bool kMin = false, kIlv = true, kQuad = false;
  static __m512i decode2(const uint8_t* lo, const uint8_t* hi, bool vlo, bool vhi) {
    return _mm512_shuffle_epi8(_mm512_broadcast_i32x4(iq4_table_u8()),
                               nibble_pair(lo + 2, hi + 2, vlo, vhi));
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

// The fp16 field at byte kOff of kN consecutive blocks of kBytes (lanes kN.. zero) as floats,
// without a gather: the blocks' bytes in 64-byte loads (the last one masked to the blocks), the
// words picked by vpermt2w per pair of loads.
template <int kBytes, int kOff, int kN>
struct F16Col {
  static constexpr int kLen = kN * kBytes, kChunks = (kLen + 63) / 64, kPairs = (kChunks + 1) / 2;
  struct Tab {
    int16_t idx[kPairs][32];
    uint32_t mask[kPairs];
  };
  static constexpr Tab make() {
    Tab t{};
    for (int j = 0; j < kN; ++j) {
      const int word = (j * kBytes + kOff) / 2;
      t.idx[word / 64][j] = int16_t(word % 64);
      t.mask[word / 64] |= 1u << j;
    }
    return t;
  }
  static constexpr Tab kTab = make();
  GALLEON_INLINE static __m512 load(const uint8_t* p) {
    __m512i c[2 * kPairs];
    GALLEON_UNROLL
    for (int k = 0; k < 2 * kPairs; ++k) {
      if (k + 1 < kChunks) c[k] = _mm512_loadu_si512(p + 64 * k);
      else if (k + 1 == kChunks)
        c[k] = _mm512_maskz_loadu_epi8(~0ull >> (64 - (kLen - 64 * k)), p + 64 * k);
      else c[k] = _mm512_setzero_si512();
    }
    __m512i out = _mm512_setzero_si512();
    GALLEON_UNROLL
    for (int k = 0; k < kPairs; ++k) {
      const __m512i idx = _mm512_loadu_si512(kTab.idx[k]);
      out = _mm512_mask_mov_epi16(out, kTab.mask[k], _mm512_permutex2var_epi16(c[2 * k], idx, c[2 * k + 1]));
    }
    return _mm512_cvtph_ps(_mm512_castsi512_si256(out));
  }
};

// Decode's private copy of an A8 activation row, built once per matmul call: per group of 16
// blocks, 512 bytes of activations exactly as decode loads them (group_sums: the 8 pairs of
// act_pair<kIlv>; quad_sums: for i < 4 the first, then the second 16 bytes of blocks i, i+4,
// i+8, i+12), then the 16 scales d, the 16 sums, and the 16 products d * float(sum); blocks past
// the row are zero.
struct A8Prep {
  static constexpr int kPairs = 0, kD = 512, kSum = 576, kDSum = 640, kBytes = 704;
  template <bool kIlv, bool kQuad>
  static void build(const A8Block* ab, int64_t nb, uint8_t* out) {
    for (int64_t b0 = 0; b0 < nb; b0 += 16, out += kBytes) {
      for (int j = 0; kQuad && j < 16; ++j) {
        const int64_t b = b0 + 4 * (j % 4) + j / 4;  // quarter j % 4 of quad j / 4
        for (int h = 0; h < 2; ++h) {
          uint8_t* dst = out + kPairs + 128 * (j / 4) + 64 * h + 16 * (j % 4);
          if (b < nb) std::memcpy(dst, ab[b].q + 16 * h, 16);
          else std::memset(dst, 0, 16);
        }
      }
      for (int slot = 0; !kQuad && slot < 8; ++slot) {
        const int64_t blo = b0 + (slot < 4 ? slot : slot + 4), bhi = blo + 4;
        _mm512_storeu_si512(out + kPairs + 64 * slot,
                            act_pair<kIlv>(ab[blo].q, ab[bhi].q, blo < nb, bhi < nb));
      }
      for (int j = 0; j < 16; ++j) {
        const bool v = b0 + j < nb;
        const float d = v ? ab[b0 + j].d : 0.0f;
        const int32_t sum = v ? ab[b0 + j].sum : 0;
        const float ds = d * float(sum);
        std::memcpy(out + kD + 4 * j, &d, 4);
        std::memcpy(out + kSum + 4 * j, &sum, 4);
        std::memcpy(out + kDSum + 4 * j, &ds, 4);
      }
    }
  }
};

template <class Q>
struct KA8 {
  // Raw int32 sums (unsigned weight x activation) of blocks [b0, b0+16), one block per lane;
  // blocks at or past nb count 0. Slot i holds blocks lo(i) and lo(i)+4, so that the transpose
  // network red1/red2/red3 leaves block b0+j in lane j. kHalf: blocks [b0, b0+8) only, in lanes
  // 0-7 (and again in 8-15). kPrep: x[0] is an A8Prep row (T == 1).
  template <int R, int T, bool kFull, bool kHalf = false, bool kPrep = false>
  GALLEON_INLINE static void group_sums(const uint8_t* const* w, const uint8_t* const* x, int64_t b0,
                         int64_t nb, __m512i (&S)[R][T]) {
    __m512i half[2][R][T];
    GALLEON_UNROLL
    for (int hh = 0; hh < (kHalf ? 1 : 2); ++hh) {
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
            const __m512i az =
                kPrep ? _mm512_loadu_si512(x[t] + (b0 / 16) * A8Prep::kBytes + A8Prep::kPairs + 64 * slot)
                      : act_pair<Q::kIlv>(ab[blo].q, ab[bhi].q, vlo, vhi);
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
      for (int t = 0; t < T; ++t) S[r][t] = red3<Q::kIlv>(half[0][r][t], half[kHalf ? 0 : 1][r][t]);
  }

  // group_sums for kQuad kinds in decode (x[0] an A8Prep row): register i gets the nibbles of
  // blocks b0+i, b0+i+4, b0+i+8, b0+i+12 in its 4 quarters (low nibbles, then high), so that two
  // vpdpbusd leave each block's sum in 4 dwords of its quarter and red1/red2 alone finish it.
  template <int R, bool kFull, bool kHalf>
  GALLEON_INLINE static void quad_sums(const uint8_t* const* w, const uint8_t* x, int64_t b0,
                                       int64_t nb, __m512i (&S)[R][1]) {
    const uint8_t* pa = x + (b0 / 16) * A8Prep::kBytes + A8Prep::kPairs;
    __m512i P[4][R];
    GALLEON_UNROLL
    for (int i = 0; i < 4; ++i) {
      GALLEON_UNROLL
      for (int r = 0; r < R; ++r) {
        __m512i z = _mm512_setzero_si512();
        GALLEON_UNROLL
        for (int k = 0; k < (kHalf ? 2 : 4); ++k) {
          const int64_t b = b0 + i + 4 * k;
          z = insert128(z, ld128(w[r] + b * Q::kBytes + Q::kQs, kFull || b < nb), k);
        }
        const __m512i m4 = _mm512_set1_epi8(0x0F);
        const __m512i lo = _mm512_and_si512(z, m4), hi = _mm512_and_si512(_mm512_srli_epi16(z, 4), m4);
        P[i][r] = _mm512_dpbusd_epi32(_mm512_setzero_si512(), lo, _mm512_loadu_si512(pa + 128 * i));
        P[i][r] = _mm512_dpbusd_epi32(P[i][r], hi, _mm512_loadu_si512(pa + 128 * i + 64));
      }
    }
    GALLEON_UNROLL
    for (int r = 0; r < R; ++r) S[r][0] = red2(red1(P[0][r], P[1][r]), red1(P[2][r], P[3][r]));
  }

  template <int R, int T, bool kFull, bool kHalf = false, bool kPrep = false>
  GALLEON_INLINE static void group(const uint8_t* const* w, const uint8_t* const* x, int64_t b0, int64_t nb,
                    __m512 (&acc)[R][T]) {
    __m512i S[R][T];
    if constexpr (kPrep && Q::kQuad) quad_sums<R, kFull, kHalf>(w, x[0], b0, nb, S);
    else group_sums<R, T, kFull, kHalf, kPrep>(w, x, b0, nb, S);
    const __mmask16 m = kFull ? __mmask16(kHalf ? 0xFF : 0xFFFF) : tail_mask16(nb - b0);
    const __m512i iw = _mm512_mullo_epi32(
        _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
        _mm512_set1_epi32(Q::kBytes));
    const __m512i ia = _mm512_setr_epi32(0, 40, 80, 120, 160, 200, 240, 280, 320, 360, 400, 440,
                                         480, 520, 560, 600);
    __m512 dw[R], mw[R];
    GALLEON_UNROLL
    for (int r = 0; r < R; ++r) {
      const uint8_t* base = w[r] + b0 * Q::kBytes;
      if constexpr (kPrep && kFull) {  // decode: whole blocks, no gather
        constexpr int kN = kHalf ? 8 : 16;
        dw[r] = F16Col<Q::kBytes, 0, kN>::load(base);
        if constexpr (Q::kMin) mw[r] = F16Col<Q::kBytes, 2, kN>::load(base);
        continue;
      }
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
      const uint8_t* pg = x[t] + (b0 / 16) * A8Prep::kBytes;
      const __m512 da = kPrep ? _mm512_loadu_ps(pg + A8Prep::kD)
                              : _mm512_mask_i32gather_ps(_mm512_setzero_ps(), m, ia, base, 1);
      const __m512i sa = kPrep ? _mm512_loadu_si512(pg + A8Prep::kSum)
                               : _mm512_mask_i32gather_epi32(_mm512_setzero_si512(), m, ia, base + 4, 1);
      GALLEON_UNROLL
      for (int r = 0; r < R; ++r) {
        __m512i isum = S[r][t];
        if constexpr (Q::kCorrShift >= 0)
          isum = _mm512_sub_epi32(isum, _mm512_slli_epi32(sa, Q::kCorrShift));
        __m512 c = _mm512_mul_ps(_mm512_mul_ps(dw[r], da), _mm512_cvtepi32_ps(isum));
        if constexpr (Q::kMin)
          c = _mm512_add_ps(c, _mm512_mul_ps(mw[r], kPrep ? _mm512_loadu_ps(pg + A8Prep::kDSum)
                                                        : _mm512_mul_ps(da, _mm512_cvtepi32_ps(sa))));
        acc[r][t] = _mm512_add_ps(acc[r][t], c);
      }
    }
  }

  // Blocks [b0, min(nb, b0 + 16)) of a last, partial lane group; in decode (kGemv) 8 or fewer take
  // the half path.
  template <int R, int T, bool kGemv>
  GALLEON_INLINE static void part(const uint8_t* const* w, const uint8_t* const* x, int64_t b0, int64_t nb,
                   __m512 (&acc)[R][T]) {
    if constexpr (!kGemv) group<R, T, false>(w, x, b0, nb, acc);
    else if (nb - b0 >= 16) group<R, T, true, false, true>(w, x, b0, nb, acc);
    else if (nb - b0 == 8) group<R, T, true, true, true>(w, x, b0, nb, acc);
    else if (nb - b0 < 8) group<R, T, false, true, true>(w, x, b0, nb, acc);
    else group<R, T, false, false, true>(w, x, b0, nb, acc);
  }

  template <int R, int T, bool kGemv = false>
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
        group<R, T, true, false, kGemv>(w, x, b0, nb, acc0);
        group<R, T, true, false, kGemv>(w, x, b0 + 16, nb, acc1);
      } else {
        part<R, T, kGemv>(w, x, b0, nb, acc0);
        if (b0 + 16 < nb) part<R, T, kGemv>(w, x, b0 + 16, nb, acc1);
      }
    }
    GALLEON_UNROLL
    for (int t = 0; t < T; ++t)
      GALLEON_UNROLL
      for (int r = 0; r < R; ++r)
        put_lanes<kGemv>(a, tok + t, row + r, acc0[r][t], acc1[r][t]);
  }
};

// ------------------------------------------------------------------ K-quants (256-blocks)

inline int32_t hsum(__m512i v) { return _mm512_reduce_add_epi32(v); }
// hsum(u) and the sum of v's 8 lanes with one shared tail.
inline void hsum2(__m512i u, __m256i v, int32_t* su, int32_t* sv) {
  const __m256i u8 = _mm256_add_epi32(_mm512_castsi512_si256(u), _mm512_extracti64x4_epi64(u, 1));
  const __m256i x = _mm256_hadd_epi32(u8, v);  // per 128 bits: u pairs, then v pairs
  const __m128i x4 = _mm_add_epi32(_mm256_castsi256_si128(x), _mm256_extracti128_si256(x, 1));
  const __m128i y = _mm_hadd_epi32(x4, x4);
  *su = _mm_cvtsi128_si32(y);
  *sv = _mm_extract_epi32(y, 1);
}

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

// The 256-element kinds: kD, the offset of d (dmin follows it for kMin); kShift >= 0: the
// quants are offset by 2^kShift, whose correction is corr16 (int16 per 16 elements) times the
// activation bsums; kSigned: chunk gives signed bytes (multiplied as |w| times a with w's sign).
// Scales (int16 per 16 or 32 elements) and minimums (int16 per 16 elements).
struct MinPrep {
  __m512i sc16;
  __m256i mn16;
};
struct Q4_K {
  static constexpr int kBytes = 144, kD = 0, kShift = -1;
  static constexpr bool kMin = true, kSigned = false;
  using Prep = MinPrep;
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
  static constexpr int kBytes = 176, kD = 0, kShift = -1;
  static constexpr bool kMin = true, kSigned = false;
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
  static constexpr int kBytes = 210, kD = 208, kShift = 5;  // q + 32
  static constexpr bool kMin = false, kSigned = false;
  struct Prep {
    __m512i sc16;
    __m256i corr16;
  };
  static void prep(const uint8_t* b, Prep* p) {
    p->corr16 = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(b + 192)));
    p->sc16 = _mm512_zextsi256_si512(p->corr16);
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

// Q2_K / Q3_K: elements 64c .. 64c + 63 are the 2-bit fields 2(c % 2) and 2(c % 2) + 1 of
// qs[32(c / 2) ..] (in the low and high 256 bits).
inline __m512i crumbs64(const uint8_t* qs, int c) {
  const __m256i y = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(qs + 32 * (c / 2)));
  const int sh = 4 * (c % 2);
  return _mm512_and_si512(pair(_mm256_srli_epi16(y, sh), _mm256_srli_epi16(y, sh + 2)),
                          _mm512_set1_epi8(3));
}
struct Q2_K {
  static constexpr int kBytes = 84, kD = 80, kShift = -1;
  static constexpr bool kMin = true, kSigned = false;
  using Prep = MinPrep;
  static void prep(const uint8_t* b, Prep* p) {
    const __m128i s = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b));
    p->sc16 = _mm512_zextsi256_si512(_mm256_cvtepu8_epi16(_mm_and_si128(s, _mm_set1_epi8(15))));
    p->mn16 = _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16(s, 4), _mm_set1_epi8(15)));
  }
  static __m512i chunk(const uint8_t* b, const Prep&, int c) { return crumbs64(b + 16, c); }
  static __m512i scales(const Prep& p, int c) { return scale_quads(p.sc16, c); }
};
struct Q3_K {
  static constexpr int kBytes = 110, kD = 108, kShift = 2;  // q + 4
  static constexpr bool kMin = false, kSigned = false;
  struct Prep {
    __m512i sc16, hm;
    __m256i corr16;
  };
  static void prep(const uint8_t* b, Prep* p) {
    alignas(16) int8_t sc[16];
    for (int h = 0; h < 16; ++h) sc[h] = int8_t(q3_k_scale(h, b + 96) - 32);
    p->corr16 = _mm256_cvtepi8_epi16(_mm_load_si128(reinterpret_cast<const __m128i*>(sc)));
    p->sc16 = _mm512_zextsi256_si512(p->corr16);
    p->hm = _mm512_broadcast_i64x4(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(b)));
  }
  // Q2_K's fields plus 4 at bit 4(c / 2) + 2(c % 2) (+1 in the high half) of hmask[l].
  static __m512i chunk(const uint8_t* b, const Prep& p, int c) {
    const int bit = 4 * (c / 2) + 2 * (c % 2);
    const __m512i m =
        _mm512_mask_blend_epi8(0xFFFFFFFF00000000ull, _mm512_set1_epi8(char(1 << bit)),
                               _mm512_set1_epi8(char(1 << (bit + 1))));
    const __m512i v = crumbs64(b + 32, c);
    return _mm512_mask_add_epi8(v, _mm512_test_epi8_mask(p.hm, m), v, _mm512_set1_epi8(4));
  }
  static __m512i scales(const Prep& p, int c) { return scale_quads(p.sc16, c); }
};
struct IQ4_XS {
  static constexpr int kBytes = 136, kD = 0, kShift = -1;
  static constexpr bool kMin = false, kSigned = true;
  struct Prep {
    __m512i sc16;
  };
  static void prep(const uint8_t* b, Prep* p) {
    alignas(16) int16_t sc[8];
    const uint16_t sh = load_u16(b + 2);
    for (int j = 0; j < 8; ++j) sc[j] = int16_t(iq4_xs_scale(j, sh, b + 4) - 32);
    p->sc16 = _mm512_zextsi128_si512(_mm_load_si128(reinterpret_cast<const __m128i*>(sc)));
  }
  // Sub-blocks 2c and 2c + 1: the low then the high nibbles of each one's 16 bytes, as V.
  static __m512i chunk(const uint8_t* b, const Prep&, int c) {
    const __m256i y = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + 8 + 32 * c));
    const __m512i v = pair(y, _mm256_srli_epi16(y, 4));
    const __m512i n = _mm512_and_si512(_mm512_shuffle_i64x2(v, v, _MM_SHUFFLE(3, 1, 2, 0)),
                                       _mm512_set1_epi8(0x0F));
    const __m128i t = _mm_loadu_si128(reinterpret_cast<const __m128i*>(kIq4Values));
    return _mm512_shuffle_epi8(_mm512_broadcast_i32x4(t), n);
  }
  static __m512i scales(const Prep& p, int c) { return scale_pairs(p.sc16, c); }
};

// The 32 lanes of one K-quant dot product, one block contribution at a time. In memory for
// tiles (a store per block; the final vector load waits on those stores, but the tile has many
// blocks), in two registers for decode (kGemv), where a row is only a few blocks long.
template <bool kReg>
struct KLanes {
  alignas(64) float v[32] = {};
  void add(int64_t b, float c) { v[b & 31] = v[b & 31] + c; }
  __m512 lo() const { return _mm512_load_ps(v); }
  __m512 hi() const { return _mm512_load_ps(v + 16); }
};
template <>
struct KLanes<true> {
  // An explicit constructor: an implicit one would not be compiled for AVX-512.
  KLanes() : l(_mm512_setzero_ps()), h(_mm512_setzero_ps()) {}
  __m512 l, h;
  void add(int64_t b, float c) {
    const __mmask16 m = __mmask16(1u << (b & 15));
    if (b & 16) h = _mm512_mask_add_ps(h, m, h, _mm512_set1_ps(c));
    else l = _mm512_mask_add_ps(l, m, l, _mm512_set1_ps(c));
  }
  __m512 lo() const { return l; }
  __m512 hi() const { return h; }
};

template <class Q>
struct KK {
  template <int R, int T, bool kGemv = false>
  static void tile(const Args& a, int64_t row, int64_t tok) {
    const uint8_t* w[R];
    const A8KBlock* x[T];
    GALLEON_UNROLL
    for (int r = 0; r < R; ++r) w[r] = a.w + size_t(row + r) * a.wrb;
    GALLEON_UNROLL
    for (int t = 0; t < T; ++t) x[t] = reinterpret_cast<const A8KBlock*>(a.act + size_t(tok + t) * a.arb);
    KLanes<kGemv> lanes[R][T];
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
        __mmask64 neg[R];  // kSigned: the negative weights, multiplied as |w| times -a
        GALLEON_UNROLL
        for (int r = 0; r < R; ++r) {
          wz[r] = Q::chunk(wb[r], prep[r], c), sc[r] = Q::scales(prep[r], c);
          if constexpr (Q::kSigned)
            neg[r] = _mm512_movepi8_mask(wz[r]), wz[r] = _mm512_abs_epi8(wz[r]);
        }
        GALLEON_UNROLL
        for (int t = 0; t < T; ++t) {
          const __m512i az = _mm512_loadu_si512(x[t][b].q + 64 * c);
          GALLEON_UNROLL
          for (int r = 0; r < R; ++r) {
            __m512i ar = az;
            if constexpr (Q::kSigned)
              ar = _mm512_mask_sub_epi8(az, neg[r], _mm512_setzero_si512(), az);
            acc[r][t] = _mm512_dpwssd_epi32(acc[r][t], _mm512_maddubs_epi16(wz[r], ar), sc[r]);
          }
        }
      }
      GALLEON_UNROLL
      for (int t = 0; t < T; ++t) {
        const __m256i bs = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x[t][b].bsums));
        const float da = x[t][b].d;
        GALLEON_UNROLL
        for (int r = 0; r < R; ++r) {
          const float dw = _cvtsh_ss(load_u16(wb[r] + Q::kD));
          float c;
          if constexpr (Q::kShift >= 0) {
            // q = u - 2^kShift: subtract 2^kShift * sum_j sc_j * bsums_j.
            constexpr int kShift = Q::kShift < 0 ? 0 : Q::kShift;
            const __m256i corr = _mm256_madd_epi16(bs, prep[r].corr16);
            const __m512i corr32 = _mm512_zextsi256_si512(_mm256_slli_epi32(corr, kShift));
            const int32_t sumi = hsum(_mm512_sub_epi32(acc[r][t], corr32));
            c = (dw * da) * float(sumi);
          } else if constexpr (Q::kMin) {
            const float dmin = _cvtsh_ss(load_u16(wb[r] + Q::kD + 2));
            int32_t sumi, summ;
            hsum2(acc[r][t], _mm256_madd_epi16(bs, prep[r].mn16), &sumi, &summ);
            c = (dw * da) * float(sumi) - (dmin * da) * float(summ);
          } else {
            c = (dw * da) * float(hsum(acc[r][t]));
          }
          lanes[r][t].add(b, c);
        }
      }
    }
    GALLEON_UNROLL
    for (int t = 0; t < T; ++t)
      GALLEON_UNROLL
      for (int r = 0; r < R; ++r)
        put_lanes<kGemv>(a, tok + t, row + r, lanes[r][t].lo(), lanes[r][t].hi());
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

// Decode (one token): one row at a time. A single sequential weight stream is read from memory
// by one core about twice as fast as 2-4 interleaved row streams (measured on Zen4: f16 ~10 ->
// ~20 GB/s, q8_0 ~6 -> ~14), which outweighs sharing activation loads over rows.
// The tiles leave each row's 32 lanes in a scratch block; reduce_rows16 finishes 16 rows at once
// (one row's serial reduction tail, on every row, bounded the row rate).
template <class K>
void gemv_rows(const Args& a, int64_t r0, int64_t r1) {
  alignas(64) float lanes[16 * 32];
  Args p = a;
  p.y = lanes;
  for (int64_t r = r0; r < r1; r += 16) {
    const int m = r1 - r < 16 ? int(r1 - r) : 16;
    p.w = a.w + size_t(r) * a.wrb;
    for (int i = 0; i < m; ++i) K::template tile<1, 1, true>(p, i, 0);
    reduce_rows16(lanes, m, a.y + r);
  }
}

// The A8 kernels read an A8Prep copy of the activation row (one per thread and call).
template <class Q>
void gemv_a8(const Args& a, int64_t r0, int64_t r1) {
  thread_local std::vector<uint8_t> buf;
  const int64_t nb = a.n / 32;
  buf.resize(size_t((nb + 15) / 16) * A8Prep::kBytes);
  A8Prep::build<Q::kIlv, Q::kQuad>(reinterpret_cast<const A8Block*>(a.act), nb, buf.data());
  Args p = a;
  p.act = buf.data();
  gemv_rows<KA8<Q>>(p, r0, r1);
}

bool gemv(const Args& a, int64_t r0, int64_t r1) {
  switch (a.type) {
    case GgmlType::F32: return gemv_rows<KPlain<LoadF32>>(a, r0, r1), true;
    case GgmlType::F16: return gemv_rows<KPlain<LoadF16>>(a, r0, r1), true;
    case GgmlType::BF16: return gemv_rows<KPlain<LoadBF16>>(a, r0, r1), true;
    case GgmlType::Q8_0: return gemv_a8<Q8_0>(a, r0, r1), true;
    case GgmlType::Q4_0: return gemv_a8<Q4_0>(a, r0, r1), true;
    case GgmlType::Q4_1: return gemv_a8<Q4_1>(a, r0, r1), true;
    case GgmlType::Q5_0: return gemv_a8<Q5_0>(a, r0, r1), true;
    case GgmlType::Q5_1: return gemv_a8<Q5_1>(a, r0, r1), true;
    case GgmlType::Q4_K: return gemv_rows<KK<Q4_K>>(a, r0, r1), true;
    case GgmlType::Q5_K: return gemv_rows<KK<Q5_K>>(a, r0, r1), true;
    case GgmlType::Q6_K: return gemv_rows<KK<Q6_K>>(a, r0, r1), true;
    case GgmlType::IQ4_NL: return gemv_a8<IQ4_NL>(a, r0, r1), true;
    case GgmlType::Q2_K: return gemv_rows<KK<Q2_K>>(a, r0, r1), true;
    case GgmlType::Q3_K: return gemv_rows<KK<Q3_K>>(a, r0, r1), true;
    case GgmlType::IQ4_XS: return gemv_rows<KK<IQ4_XS>>(a, r0, r1), true;
    default: return false;
  }
}

void matmul(GgmlType wt, int64_t n, const void* W, size_t wrb, int64_t r0, int64_t r1,
            const void* act, size_t arb, int64_t ntok, float* y, size_t ys) {
  const Args a{wt, n, static_cast<const uint8_t*>(W), wrb, static_cast<const uint8_t*>(act), arb, y, ys};
  if (gemm(a, r0, r1, ntok)) return;
  if (ntok == 1 && gemv(a, r0, r1)) return;
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
    case GgmlType::IQ4_NL: return drive<KA8<IQ4_NL>, 4, 4, 2>(a, r0, r1, ntok);
    case GgmlType::Q2_K: return drive<KK<Q2_K>, 4, 4, 4>(a, r0, r1, ntok);
    case GgmlType::Q3_K: return drive<KK<Q3_K>, 4, 4, 4>(a, r0, r1, ntok);
    case GgmlType::IQ4_XS: return drive<KK<IQ4_XS>, 4, 4, 4>(a, r0, r1, ntok);
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

// Attention's weighted sum of V rows (docs/arithmetic.md section 9): lane j mod 32 adds e_j * v_j
// in increasing j; the lanes are combined by the binary counter of kernels_avx512_lanes.h, C
// registers of 16 columns at once, without a lane array in memory.
template <int C>
void lane_rows_c(const float* e, const float* v, int64_t vs, int64_t n, float* out) {
  __m512 res[1][C];
  lane_tree<1, C>(n, [&](int l, __m512(&cur)[1][C]) {
    const __m512 el = _mm512_set1_ps(e[l]);
    GALLEON_UNROLL
    for (int c = 0; c < C; ++c) cur[0][c] = _mm512_mul_ps(el, _mm512_loadu_ps(v + l * vs + 16 * c));
    for (int64_t j = l + 32; j < n; j += 32) {
      const __m512 ej = _mm512_set1_ps(e[j]);
      GALLEON_UNROLL
      for (int c = 0; c < C; ++c)
        cur[0][c] = _mm512_add_ps(cur[0][c], _mm512_mul_ps(ej, _mm512_loadu_ps(v + j * vs + 16 * c)));
    }
  }, res);
  GALLEON_UNROLL
  for (int c = 0; c < C; ++c) _mm512_storeu_ps(out + 16 * c, res[0][c]);
}

void lane_rows(const float* e, const float* v, int64_t vs, int64_t n, int64_t hd, float* lanes,
               float* out) {
  switch (hd) {
    case 16: return lane_rows_c<1>(e, v, vs, n, out);
    case 32: return lane_rows_c<2>(e, v, vs, n, out);
    case 48: return lane_rows_c<3>(e, v, vs, n, out);
    case 64: return lane_rows_c<4>(e, v, vs, n, out);
    case 80: return lane_rows_c<5>(e, v, vs, n, out);
    case 96: return lane_rows_c<6>(e, v, vs, n, out);
    case 112: return lane_rows_c<7>(e, v, vs, n, out);
    case 128: return lane_rows_c<8>(e, v, vs, n, out);
    default: return elem::lane_rows(e, v, vs, n, hd, lanes, out);
  }
}

}  // namespace

const Ops& table() {
  static const Ops t = {Isa::Avx512,     quantize_act,   matmul,         dot_f32,
                       sum_sq,        elem::add,      elem::axpy,     elem::scale,
                       elem::scale_mul, elem::exp_sub, elem::silu_mul,
                       elem::gelu_mul, lane_rows,      panel_bytes,
                       pack_panel,    matmul_panel};
  return t;
}

}  // namespace galleon::kern::avx512
GALLEON_ISA_END
