// SSE2 path (any x86-64). The 32 canonical lanes are eight xmm registers for f32/f16/bf16
// weights. Quantized weights: exact int32 block sums with pmaddwd on int16-widened values, then
// the canonical float combination per block (scalar IEEE ops, the same as the reference).
#include <emmintrin.h>

#include "runtime/kernels_elem.h"
#include "runtime/kernels_internal.h"
#include "runtime/kernels_tiling.h"

namespace galleon::kern::sse2 {
namespace {

inline float tree(float* l) {  // the canonical lane tree over l[0..32)
  for (int s = 16; s >= 1; s /= 2)
    for (int i = 0; i < s; ++i) l[i] = l[i] + l[i + s];
  return canonical_nan(l[0]);
}
inline int32_t hsum(__m128i v) {
  v = _mm_add_epi32(v, _mm_shuffle_epi32(v, _MM_SHUFFLE(1, 0, 3, 2)));
  v = _mm_add_epi32(v, _mm_shuffle_epi32(v, _MM_SHUFFLE(2, 3, 0, 1)));
  return _mm_cvtsi128_si32(v);
}

// ------------------------------------------------------------------ f32 / f16 / bf16 weights

struct LoadF32 {
  static constexpr int kSize = 4;
  static __m128 load(const uint8_t* p) { return _mm_loadu_ps(reinterpret_cast<const float*>(p)); }
};
struct LoadF16 {
  static constexpr int kSize = 2;
  // Exact binary16 -> binary32 with integer ops: place exponent/mantissa, scale by 2^112
  // (exact, also for subnormals), then inf/nan and the sign.
  static __m128 load(const uint8_t* p) {
    const __m128i h = _mm_unpacklo_epi16(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)),
                                         _mm_setzero_si128());
    const __m128i em = _mm_and_si128(h, _mm_set1_epi32(0x7fff));
    const __m128i sign = _mm_slli_epi32(_mm_xor_si128(h, em), 16);
    const __m128 fin = _mm_mul_ps(_mm_castsi128_ps(_mm_slli_epi32(em, 13)),
                                  _mm_castsi128_ps(_mm_set1_epi32(0x77800000)));  // 2^112
    const __m128i special = _mm_cmpgt_epi32(em, _mm_set1_epi32(0x7bff));
    const __m128i infnan = _mm_or_si128(_mm_set1_epi32(0x7f800000),
                                        _mm_slli_epi32(_mm_and_si128(em, _mm_set1_epi32(0x3ff)), 13));
    const __m128i v = _mm_or_si128(_mm_andnot_si128(special, _mm_castps_si128(fin)),
                                   _mm_and_si128(special, infnan));
    return _mm_castsi128_ps(_mm_or_si128(v, sign));
  }
};
struct LoadBF16 {
  static constexpr int kSize = 2;
  static __m128 load(const uint8_t* p) {
    const __m128i h = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(p));
    return _mm_castsi128_ps(_mm_unpacklo_epi16(_mm_setzero_si128(), h));
  }
};

template <class L>
struct KPlain {
  static void chunk(const uint8_t* w, const uint8_t* x, __m128 (&acc)[8]) {
    for (int k = 0; k < 8; ++k)
      acc[k] = _mm_add_ps(acc[k], _mm_mul_ps(L::load(w + 4 * k * L::kSize), LoadF32::load(x + 16 * k)));
  }
  template <int R, int T>
  static void tile(const Args& a, int64_t row, int64_t tok) {
    static_assert(R == 1 && T == 1);
    const uint8_t* w = a.w + size_t(row) * a.wrb;
    const uint8_t* x = a.act + size_t(tok) * a.arb;
    __m128 acc[8];
    for (auto& v : acc) v = _mm_setzero_ps();
    const int64_t n = a.n, full = n / 32 * 32;
    for (int64_t i = 0; i < full; i += 32) chunk(w + i * L::kSize, x + i * 4, acc);
    if (full < n) {  // zero-padded tail
      alignas(16) uint8_t wt[32 * L::kSize] = {};
      alignas(16) uint8_t xt[128] = {};
      std::memcpy(wt, w + full * L::kSize, size_t(n - full) * L::kSize);
      std::memcpy(xt, x + full * 4, size_t(n - full) * 4);
      chunk(wt, xt, acc);
    }
    alignas(16) float l[32];
    for (int k = 0; k < 8; ++k) _mm_store_ps(l + 4 * k, acc[k]);
    a.y[size_t(tok) * a.ys + size_t(row)] = tree(l);
  }
};

// ------------------------------------------------------------------ integer block sums

inline __m128i sext8(__m128i v, bool hi) {  // int8 -> int16 of the low or high 8 bytes
  const __m128i d = hi ? _mm_unpackhi_epi8(v, v) : _mm_unpacklo_epi8(v, v);
  return _mm_srai_epi16(d, 8);
}
// Partial int32 sums of 16 weight bytes (unsigned, or signed when sw) times 16 int8 activations.
inline __m128i dot16(__m128i w, bool sw, const int8_t* a) {
  const __m128i av = _mm_loadu_si128(reinterpret_cast<const __m128i*>(a));
  const __m128i z = _mm_setzero_si128();
  const __m128i w0 = sw ? sext8(w, false) : _mm_unpacklo_epi8(w, z);
  const __m128i w1 = sw ? sext8(w, true) : _mm_unpackhi_epi8(w, z);
  return _mm_add_epi32(_mm_madd_epi16(w0, sext8(av, false)), _mm_madd_epi16(w1, sext8(av, true)));
}
inline __m128i load16(const uint8_t* p) { return _mm_loadu_si128(reinterpret_cast<const __m128i*>(p)); }
inline __m128i low_nib(__m128i v) { return _mm_and_si128(v, _mm_set1_epi8(0x0F)); }
inline __m128i high_nib(__m128i v) { return _mm_and_si128(_mm_srli_epi16(v, 4), _mm_set1_epi8(0x0F)); }
// 0x10 in byte j where bit j of the 16-bit value h is set.
inline __m128i high_bits16(uint32_t h) {
  const __m128i bytes = _mm_or_si128(_mm_and_si128(_mm_set1_epi8(char(h & 0xFF)), _mm_set_epi64x(0, -1)),
                                     _mm_andnot_si128(_mm_set_epi64x(0, -1), _mm_set1_epi8(char(h >> 8))));
  const __m128i bit = _mm_set1_epi64x(0x8040201008040201LL);
  return _mm_and_si128(_mm_cmpeq_epi8(_mm_and_si128(bytes, bit), bit), _mm_set1_epi8(0x10));
}

// Block kinds: raw integer sum of one 32-block and its scale terms.
struct Q8_0 {
  static constexpr int kBytes = 34, kCorr = 0;
  static constexpr bool kMin = false;
  static int32_t raw(const uint8_t* b, const int8_t* a) {
    return hsum(_mm_add_epi32(dot16(load16(b + 2), true, a), dot16(load16(b + 18), true, a + 16)));
  }
};
struct Q4_0 {
  static constexpr int kBytes = 18, kCorr = 8;
  static constexpr bool kMin = false;
  static int32_t raw(const uint8_t* b, const int8_t* a) {
    const __m128i q = load16(b + 2);
    return hsum(_mm_add_epi32(dot16(low_nib(q), false, a), dot16(high_nib(q), false, a + 16)));
  }
};
struct Q4_1 {
  static constexpr int kBytes = 20, kCorr = 0;
  static constexpr bool kMin = true;
  static int32_t raw(const uint8_t* b, const int8_t* a) {
    const __m128i q = load16(b + 4);
    return hsum(_mm_add_epi32(dot16(low_nib(q), false, a), dot16(high_nib(q), false, a + 16)));
  }
};
inline int32_t raw5(const uint8_t* qs, const uint8_t* qh4, const int8_t* a) {
  const __m128i q = load16(qs);
  const uint32_t h = load_u32(qh4);
  const __m128i lo = _mm_or_si128(low_nib(q), high_bits16(h & 0xFFFF));
  const __m128i hi = _mm_or_si128(high_nib(q), high_bits16(h >> 16));
  return hsum(_mm_add_epi32(dot16(lo, false, a), dot16(hi, false, a + 16)));
}
struct Q5_0 {
  static constexpr int kBytes = 22, kCorr = 16;
  static constexpr bool kMin = false;
  static int32_t raw(const uint8_t* b, const int8_t* a) { return raw5(b + 6, b + 2, a); }
};
struct Q5_1 {
  static constexpr int kBytes = 24, kCorr = 0;
  static constexpr bool kMin = true;
  static int32_t raw(const uint8_t* b, const int8_t* a) { return raw5(b + 8, b + 4, a); }
};

template <class Q>
struct KA8 {
  template <int R, int T>
  static void tile(const Args& a, int64_t row, int64_t tok) {
    static_assert(R == 1 && T == 1);
    const uint8_t* w = a.w + size_t(row) * a.wrb;
    const A8Block* x = reinterpret_cast<const A8Block*>(a.act + size_t(tok) * a.arb);
    float l[32] = {};
    for (int64_t b = 0; b < a.n / 32; ++b) {
      const uint8_t* wb = w + b * Q::kBytes;
      const int32_t isum = Q::raw(wb, x[b].q) - Q::kCorr * x[b].sum;
      float c = (fp16_to_f32(load_u16(wb)) * x[b].d) * float(isum);
      if constexpr (Q::kMin) c = c + fp16_to_f32(load_u16(wb + 2)) * (x[b].d * float(x[b].sum));
      l[b & 31] = l[b & 31] + c;
    }
    a.y[size_t(tok) * a.ys + size_t(row)] = tree(l);
  }
};

// ------------------------------------------------------------------ K-quants

template <int kLevels>  // 4: Q4_K, 5: Q5_K
struct KKmin {
  template <int R, int T>
  static void tile(const Args& a, int64_t row, int64_t tok) {
    static_assert(R == 1 && T == 1);
    constexpr int kBytes = kLevels == 4 ? 144 : 176, kQs = kLevels == 4 ? 16 : 48;
    const uint8_t* w = a.w + size_t(row) * a.wrb;
    const A8KBlock* x = reinterpret_cast<const A8KBlock*>(a.act + size_t(tok) * a.arb);
    float l[32] = {};
    for (int64_t b = 0; b < a.n / 256; ++b) {
      const uint8_t* wb = w + b * kBytes;
      int32_t sumi = 0, summ = 0;
      for (int j = 0; j < 8; ++j) {
        const uint8_t* qs = wb + kQs + 32 * (j / 2);
        __m128i v[2];
        for (int h = 0; h < 2; ++h) {
          const __m128i q = load16(qs + 16 * h);
          v[h] = j % 2 ? high_nib(q) : low_nib(q);
          if constexpr (kLevels == 5) {
            const __m128i qh = load16(wb + 16 + 16 * h), bit = _mm_set1_epi8(char(1 << j));
            v[h] = _mm_or_si128(v[h], _mm_and_si128(_mm_cmpeq_epi8(_mm_and_si128(qh, bit), bit),
                                                    _mm_set1_epi8(0x10)));
          }
        }
        const int8_t* aq = x[b].q + 32 * j;
        const int32_t isum = hsum(_mm_add_epi32(dot16(v[0], false, aq), dot16(v[1], false, aq + 16)));
        int sc, m;
        scale_min_k4(j, wb + 4, &sc, &m);
        sumi += sc * isum;
        summ += m * (x[b].bsums[2 * j] + x[b].bsums[2 * j + 1]);
      }
      const float d = fp16_to_f32(load_u16(wb)), dmin = fp16_to_f32(load_u16(wb + 2));
      const float c = (d * x[b].d) * float(sumi) - (dmin * x[b].d) * float(summ);
      l[b & 31] = l[b & 31] + c;
    }
    a.y[size_t(tok) * a.ys + size_t(row)] = tree(l);
  }
};

struct KQ6 {
  template <int R, int T>
  static void tile(const Args& a, int64_t row, int64_t tok) {
    static_assert(R == 1 && T == 1);
    const uint8_t* w = a.w + size_t(row) * a.wrb;
    const A8KBlock* x = reinterpret_cast<const A8KBlock*>(a.act + size_t(tok) * a.arb);
    float l[32] = {};
    for (int64_t b = 0; b < a.n / 256; ++b) {
      const uint8_t* wb = w + b * 210;
      const int8_t* sc = reinterpret_cast<const int8_t*>(wb + 192);
      int32_t sumi = 0;
      for (int j = 0; j < 16; ++j) {  // elements 16j..16j+15: half h, quadrant k, l0 = 16*(j%2)
        const int h = j / 8, k = (j % 8) / 2, l0 = 16 * (j % 2);
        const __m128i ql = load16(wb + 64 * h + 32 * (k & 1) + l0);
        const __m128i qh = load16(wb + 128 + 32 * h + l0);
        const __m128i lo = k < 2 ? low_nib(ql) : high_nib(ql);
        __m128i hb;
        switch (k) {
          case 0: hb = _mm_slli_epi16(qh, 4); break;
          case 1: hb = _mm_slli_epi16(qh, 2); break;
          case 2: hb = qh; break;
          default: hb = _mm_srli_epi16(qh, 2); break;
        }
        const __m128i u = _mm_or_si128(lo, _mm_and_si128(hb, _mm_set1_epi8(0x30)));
        const int32_t isum = hsum(dot16(u, false, x[b].q + 16 * j)) - 32 * x[b].bsums[j];
        sumi += sc[j] * isum;
      }
      const float c = (fp16_to_f32(load_u16(wb + 208)) * x[b].d) * float(sumi);
      l[b & 31] = l[b & 31] + c;
    }
    a.y[size_t(tok) * a.ys + size_t(row)] = tree(l);
  }
};

// ------------------------------------------------------------------ activations

inline float amax_of(const float* x, int n) {
  const __m128 sign = _mm_set1_ps(-0.0f);
  __m128 m = _mm_setzero_ps();
  for (int i = 0; i < n; i += 4)  // max(|x|, m): a NaN |x| yields m
    m = _mm_max_ps(_mm_andnot_ps(sign, _mm_loadu_ps(x + i)), m);
  m = _mm_max_ps(m, _mm_movehl_ps(m, m));
  m = _mm_max_ss(m, _mm_shuffle_ps(m, m, 1));
  return _mm_cvtss_f32(m);
}
// 16 floats -> 16 int8; returns their sum.
inline int32_t quant16(const float* x, float id, int8_t* q) {
  __m128i i[4];
  for (int k = 0; k < 4; ++k) {
    __m128 v = _mm_mul_ps(_mm_loadu_ps(x + 4 * k), _mm_set1_ps(id));
    v = _mm_and_ps(v, _mm_cmpord_ps(v, v));  // NaN -> 0
    v = _mm_min_ps(_mm_max_ps(v, _mm_set1_ps(-127.0f)), _mm_set1_ps(127.0f));
    i[k] = _mm_cvtps_epi32(v);  // nearest even
  }
  const __m128i b = _mm_packs_epi16(_mm_packs_epi32(i[0], i[1]), _mm_packs_epi32(i[2], i[3]));
  _mm_storeu_si128(reinterpret_cast<__m128i*>(q), b);
  return hsum(_mm_add_epi32(_mm_add_epi32(i[0], i[1]), _mm_add_epi32(i[2], i[3])));
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
        out[b].d = scale_of(amax_of(x, 32), &id);
        out[b].sum = quant16(x, id, out[b].q) + quant16(x + 16, id, out[b].q + 16);
      }
      return;
    }
    case ActFormat::A8K: {
      A8KBlock* out = static_cast<A8KBlock*>(dst);
      for (int64_t b = 0; b < n / 256; ++b, x += 256) {
        float id;
        out[b].d = scale_of(amax_of(x, 256), &id);
        for (int g = 0; g < 16; ++g) out[b].bsums[g] = int16_t(quant16(x + 16 * g, id, out[b].q + 16 * g));
      }
      return;
    }
  }
}

void matmul(GgmlType wt, int64_t n, const void* W, size_t wrb, int64_t r0, int64_t r1,
            const void* act, size_t arb, int64_t ntok, float* y, size_t ys) {
  const Args a{wt, n, static_cast<const uint8_t*>(W), wrb, static_cast<const uint8_t*>(act), arb, y, ys};
  switch (wt) {
    case GgmlType::F32: return drive<KPlain<LoadF32>, 1, 1, 1>(a, r0, r1, ntok);
    case GgmlType::F16: return drive<KPlain<LoadF16>, 1, 1, 1>(a, r0, r1, ntok);
    case GgmlType::BF16: return drive<KPlain<LoadBF16>, 1, 1, 1>(a, r0, r1, ntok);
    case GgmlType::Q8_0: return drive<KA8<Q8_0>, 1, 1, 1>(a, r0, r1, ntok);
    case GgmlType::Q4_0: return drive<KA8<Q4_0>, 1, 1, 1>(a, r0, r1, ntok);
    case GgmlType::Q4_1: return drive<KA8<Q4_1>, 1, 1, 1>(a, r0, r1, ntok);
    case GgmlType::Q5_0: return drive<KA8<Q5_0>, 1, 1, 1>(a, r0, r1, ntok);
    case GgmlType::Q5_1: return drive<KA8<Q5_1>, 1, 1, 1>(a, r0, r1, ntok);
    case GgmlType::Q4_K: return drive<KKmin<4>, 1, 1, 1>(a, r0, r1, ntok);
    case GgmlType::Q5_K: return drive<KKmin<5>, 1, 1, 1>(a, r0, r1, ntok);
    case GgmlType::Q6_K: return drive<KQ6, 1, 1, 1>(a, r0, r1, ntok);
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
  static const Ops t = {Isa::Sse2,     quantize_act,   matmul,         dot_f32,
                       sum_sq,        elem::add,      elem::axpy,     elem::scale,
                       elem::scale_mul, elem::exp_sub, elem::silu_mul,
                       elem::gelu_mul, elem::lane_rows, nullptr,
                       nullptr,       nullptr};
  return t;
}

}  // namespace galleon::kern::sse2
