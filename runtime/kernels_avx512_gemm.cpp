// AVX-512 prompt GEMM for quantized weights (docs/arithmetic.md sections 2, 4-6).
//
// Tokens are vectorised: the activation rows are first repacked into panels of 16 tokens, where
// zmm register k of a block holds the 4 activation bytes of group k (elements 4k..4k+3) of 16
// tokens. A weight row's 4 bytes of group k, decoded to unsigned bytes, are broadcast to all 16
// dword lanes, so one vpdpbusd adds 4 products to the exact int32 block sum of 16 tokens at
// once; no horizontal reduction. The canonical float combination of the block sums is then
// done 16 tokens at a time, and the 32 canonical lanes (block b -> lane b mod 32) are visited
// in bit-reversed order so that the fixed summation tree 16, 8, 4, 2, 1 is built as a binary
// counter: lanes are summed exactly as the definition says, in another schedule.
//
// Unsigned weight bytes u: isum = sum(u * a) - (sum_a << shift) for signed kinds (u = w + 2^shift).
// Omitting the +0.0 a lane starts from, and skipping empty lanes, can only turn a +0.0 result
// into -0.0 (a sum is -0.0 only when every term is); adding +0.0 at the end restores it.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>

#include <algorithm>
#include <cstring>
#include <type_traits>
#include <new>
#include <vector>

#include "runtime/isa_region.h"
#include "runtime/kernels.h"

// Only what follows is compiled for AVX-512 (runtime/isa_region.h).
GALLEON_ISA_BEGIN("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,f16c,fma")
#include "runtime/kernels_avx512_lanes.h"
#include "runtime/kernels_internal.h"
#include "runtime/kernels_tiling.h"

namespace galleon::kern::avx512 {
namespace {

constexpr int kTokVec = 16;  // tokens per register

template <class T>
struct AlignedAlloc {  // 64-byte aligned storage for panels read with aligned loads
  using value_type = T;
  AlignedAlloc() = default;
  template <class U>
  AlignedAlloc(const AlignedAlloc<U>&) {}
  T* allocate(size_t n) {
    return static_cast<T*>(::operator new(n * sizeof(T), std::align_val_t(64)));
  }
  void deallocate(T* p, size_t) { ::operator delete(p, std::align_val_t(64)); }
  bool operator==(const AlignedAlloc&) const { return true; }
};

inline float half(const uint8_t* p) { return _cvtsh_ss(load_u16(p)); }
inline __m512i bcast(const uint8_t* p) { return _mm512_set1_epi32(int32_t(load_u32(p))); }

// ------------------------------------------------------------------ panels

// 32-element blocks (A8) of 16 tokens: q[k][i] = bytes 4k..4k+3 of token i.
struct alignas(64) PanelA8 {
  int8_t q[8][kTokVec][4];
  float d[kTokVec];
  int32_t sum[kTokVec];
};
// 256-element blocks (A8K) of 16 tokens; bsp[j][i] = bsums 2j, 2j+1 of token i as two int16.
struct alignas(64) PanelK {
  int8_t q[64][kTokVec][4];
  float d[kTokVec];
  int32_t bsp[8][kTokVec];
};
static_assert(sizeof(PanelA8) == 640 && sizeof(PanelK) == 4672);

// The panel of token group g: [block] of 16 tokens each; tokens past ntok are zero.
template <class P, class Fill>
void pack_blocks(const uint8_t* act, size_t arb, int64_t ntok, int64_t nb, int64_t g, uint8_t* dst,
                 Fill fill) {
  P* out = reinterpret_cast<P*>(dst);
  for (int64_t b = 0; b < nb; ++b) {
    P& p = out[b];
    std::memset(&p, 0, sizeof p);
    for (int i = 0; i < kTokVec && g * kTokVec + i < ntok; ++i)
      fill(p, i, act + size_t(g * kTokVec + i) * arb, b);
  }
}

void fill_a8(PanelA8& p, int i, const uint8_t* row, int64_t b) {
  const A8Block& blk = reinterpret_cast<const A8Block*>(row)[b];
  p.d[i] = blk.d;
  p.sum[i] = blk.sum;
  for (int k = 0; k < 8; ++k) std::memcpy(p.q[k][i], blk.q + 4 * k, 4);
}
void fill_k(PanelK& p, int i, const uint8_t* row, int64_t b) {
  const A8KBlock& blk = reinterpret_cast<const A8KBlock*>(row)[b];
  p.d[i] = blk.d;
  for (int k = 0; k < 64; ++k) std::memcpy(p.q[k][i], blk.q + 4 * k, 4);
  for (int j = 0; j < 8; ++j) std::memcpy(&p.bsp[j][i], &blk.bsums[2 * j], 4);
}

// ------------------------------------------------------------------ weight decoders

// 16 packed nibble bytes -> 32 unsigned bytes (low nibbles = elements 0-15, high = 16-31).
inline __m256i nibbles16(const uint8_t* p) {
  const __m128i x = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  const __m256i y = _mm256_inserti128_si256(_mm256_castsi128_si256(x), _mm_srli_epi16(x, 4), 1);
  return _mm256_and_si256(y, _mm256_set1_epi8(0x0F));
}
inline __m256i plus16_where(__m256i v, const uint8_t* qh) {  // bit e of qh: element e += 16
  return _mm256_mask_add_epi8(v, __mmask32(load_u32(qh)), v, _mm256_set1_epi8(16));
}
inline void store32(uint8_t* dst, __m256i v) {
  _mm256_store_si256(reinterpret_cast<__m256i*>(dst), v);
}

// A8 kinds: block bytes, offset of the min (kMin), correction shift (-1: none), decode to 32 u8.
struct DQ8_0 {
  static constexpr int kBytes = 34, kShift = 7;
  static constexpr bool kMin = false;
  static void decode(const uint8_t* b, uint8_t* u) {
    store32(u, _mm256_xor_si256(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + 2)),
                                _mm256_set1_epi8(char(0x80))));
  }
};
struct DQ4_0 {
  static constexpr int kBytes = 18, kShift = 3;
  static constexpr bool kMin = false;
  static void decode(const uint8_t* b, uint8_t* u) { store32(u, nibbles16(b + 2)); }
};
struct DQ4_1 {
  static constexpr int kBytes = 20, kShift = -1;
  static constexpr bool kMin = true;
  static void decode(const uint8_t* b, uint8_t* u) { store32(u, nibbles16(b + 4)); }
};
struct DQ5_0 {
  static constexpr int kBytes = 22, kShift = 4;
  static constexpr bool kMin = false;
  static void decode(const uint8_t* b, uint8_t* u) {
    store32(u, plus16_where(nibbles16(b + 6), b + 2));
  }
};
struct DQ5_1 {
  static constexpr int kBytes = 24, kShift = -1;
  static constexpr bool kMin = true;
  static void decode(const uint8_t* b, uint8_t* u) {
    store32(u, plus16_where(nibbles16(b + 8), b + 4));
  }
};
// IQ4_NL: u = V[nibble] + 128 (1..241), as Q8_0's q + 128.
inline __m128i iq4_table_u8() {
  return _mm_xor_si128(_mm_loadu_si128(reinterpret_cast<const __m128i*>(kIq4Values)),
                       _mm_set1_epi8(char(0x80)));
}
struct DIQ4_NL {
  static constexpr int kBytes = 18, kShift = 7;
  static constexpr bool kMin = false;
  static void decode(const uint8_t* b, uint8_t* u) {
    store32(u, _mm256_shuffle_epi8(_mm256_broadcastsi128_si256(iq4_table_u8()), nibbles16(b + 2)));
  }
};

// Lane l of R x TV outputs: contributions of blocks l, l+32, ... in increasing order.
template <int R, int TV, class Block>
inline void lane_sum(int64_t nb, int l, Block block, __m512 (&cur)[R][TV]) {
  block(int64_t(l), cur);
  for (int64_t b = l + 32; b < nb; b += 32) {
    __m512 c[R][TV];
    block(b, c);
    GALLEON_UNROLL
    for (int r = 0; r < R; ++r)
      GALLEON_UNROLL
      for (int t = 0; t < TV; ++t) cur[r][t] = _mm512_add_ps(cur[r][t], c[r][t]);
  }
}

// ------------------------------------------------------------------ A8 kinds

template <class Q>
struct BlockA8 {
  template <int R, int TV>
  static void run(const uint8_t* const* w, const PanelA8* pan, int64_t nb, int64_t b,
                  __m512 (&c)[R][TV]) {
    alignas(64) uint8_t u[R][32];
    GALLEON_UNROLL
    for (int r = 0; r < R; ++r) Q::decode(w[r] + b * Q::kBytes, u[r]);
    // Read the decoded bytes back from memory: broadcast loads need no shuffle unit.
    __asm__ volatile("" : : "r"(u) : "memory");
    const PanelA8* p[TV];
    __m512i acc[R][TV], init[TV];
    GALLEON_UNROLL
    for (int t = 0; t < TV; ++t) {
      p[t] = pan + t * nb + b;
      const __m512i s = _mm512_load_si512(p[t]->sum);
      init[t] = Q::kShift >= 0
                    ? _mm512_sub_epi32(_mm512_setzero_si512(),
                                       _mm512_slli_epi32(s, Q::kShift < 0 ? 0 : Q::kShift))
                    : _mm512_setzero_si512();
    }
    GALLEON_UNROLL
    for (int k = 0; k < 8; ++k) {
      __m512i wk[R];
      GALLEON_UNROLL
      for (int r = 0; r < R; ++r) wk[r] = bcast(u[r] + 4 * k);
      GALLEON_UNROLL
      for (int t = 0; t < TV; ++t) {
        const __m512i av = _mm512_load_si512(p[t]->q[k]);
        GALLEON_UNROLL
        for (int r = 0; r < R; ++r)
          acc[r][t] = _mm512_dpbusd_epi32(k == 0 ? init[t] : acc[r][t], wk[r], av);
      }
    }
    GALLEON_UNROLL
    for (int t = 0; t < TV; ++t) {
      const __m512 da = _mm512_load_ps(p[t]->d);
      __m512 dsa;
      if constexpr (Q::kMin)
        dsa = _mm512_mul_ps(da, _mm512_cvtepi32_ps(_mm512_load_si512(p[t]->sum)));
      GALLEON_UNROLL
      for (int r = 0; r < R; ++r) {
        const uint8_t* blk = w[r] + b * Q::kBytes;
        __m512 v = _mm512_mul_ps(_mm512_mul_ps(_mm512_set1_ps(half(blk)), da),
                                 _mm512_cvtepi32_ps(acc[r][t]));
        if constexpr (Q::kMin)
          v = _mm512_add_ps(v, _mm512_mul_ps(_mm512_set1_ps(half(blk + 2)), dsa));
        c[r][t] = v;
      }
    }
  }
};

// A kind of block-quantized weights: panel type P of kBlock-element blocks, tile of kR rows x kT
// token vectors, and Blk::run<R, TV> computing one block's contributions.
template <class P, int kBlock, int kR, int kT, void (*Fill)(P&, int, const uint8_t*, int64_t),
          class Blk>
struct GBlocks {
  static constexpr int kRows = kR, kTok = kT;
  static void pack(int64_t n, const uint8_t* act, size_t arb, int64_t ntok, int64_t g,
                   uint8_t* dst) {
    pack_blocks<P>(act, arb, ntok, n / kBlock, g, dst, Fill);
  }
  static size_t group_bytes(int64_t n) { return size_t(n / kBlock) * sizeof(P); }
  template <int R, int TV>
  static void tile(const Args& a, const uint8_t* const* w, const uint8_t* pan, size_t,
                   __m512 (&res)[R][TV]) {
    const int64_t nb = a.n / kBlock;
    const auto* p = reinterpret_cast<const P*>(pan);
    auto block = [&](int64_t b, __m512(&c)[R][TV]) { Blk::template run<R, TV>(w, p, nb, b, c); };
    lane_tree<R, TV>(
        nb, [&](int l, __m512(&cur)[R][TV]) { lane_sum<R, TV>(nb, l, block, cur); }, res);
  }
};

template <class Q>
using GA8 = GBlocks<PanelA8, 32, 4, 2, fill_a8, BlockA8<Q>>;

// ------------------------------------------------------------------ K kinds

// 8 six-bit scales and mins of a Q4_K/Q5_K block (get_scale_min_k4 for all j at once), as
// int32 scales and (m, m) int16 pairs.
inline void scales_k4(const uint8_t* s, int32_t* sc, int32_t* mpair) {
  const uint32_t a = load_u32(s), b = load_u32(s + 4), c = load_u32(s + 8);
  const uint32_t sc_hi = (c & 0x0F0F0F0Fu) | (((a >> 6) & 0x03030303u) << 4);
  const uint32_t mn_hi = ((c >> 4) & 0x0F0F0F0Fu) | (((b >> 6) & 0x03030303u) << 4);
  const __m128i scb =
      _mm_cvtsi64_si128(int64_t(uint64_t(a & 0x3F3F3F3Fu) | (uint64_t(sc_hi) << 32)));
  const __m128i mnb =
      _mm_cvtsi64_si128(int64_t(uint64_t(b & 0x3F3F3F3Fu) | (uint64_t(mn_hi) << 32)));
  _mm256_store_si256(reinterpret_cast<__m256i*>(sc), _mm256_cvtepu8_epi32(scb));
  const __m256i m = _mm256_cvtepu8_epi32(mnb);
  _mm256_store_si256(reinterpret_cast<__m256i*>(mpair),
                     _mm256_or_si256(m, _mm256_slli_epi32(m, 16)));
}
inline __m512i nibbles32(const uint8_t* p) {  // 32 bytes -> 64: low nibbles then high nibbles
  const __m256i y = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
  return _mm512_and_si512(_mm512_inserti64x4(_mm512_castsi256_si512(y), _mm256_srli_epi16(y, 4), 1),
                          _mm512_set1_epi8(0x0F));
}

// Decoded K block: 256 unsigned bytes, per-sub-block int32 scales, and the int16 pairs that
// multiply the activation bsums pairs (mins for Q4_K/Q5_K/Q2_K, scales for the offset types
// Q6_K/Q3_K/IQ4_XS). Each kind: kD, the offset of d (dmin follows it where kShift < 0, the
// pairs' sum then being the minimum term), and kShift, the log2 of the quants' offset.
struct alignas(64) KDec {
  uint8_t u[256];
  int32_t sc[16];
  int32_t pair[8];
};

struct DQ4_K {
  static constexpr int kBytes = 144, kSub = 8, kD = 0, kShift = -1;  // sub-blocks of 32
  static void decode(const uint8_t* b, KDec* o) {
    scales_k4(b + 4, o->sc, o->pair);
    for (int c = 0; c < 4; ++c) _mm512_store_si512(o->u + 64 * c, nibbles32(b + 16 + 32 * c));
  }
};
struct DQ5_K {
  static constexpr int kBytes = 176, kSub = 8, kD = 0, kShift = -1;
  static void decode(const uint8_t* b, KDec* o) {
    scales_k4(b + 4, o->sc, o->pair);
    const __m512i qh =
        _mm512_broadcast_i64x4(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + 16)));
    for (int c = 0; c < 4; ++c) {
      const __m512i v = nibbles32(b + 48 + 32 * c);
      const __m512i bit =
          _mm512_mask_blend_epi8(0xFFFFFFFF00000000ull, _mm512_set1_epi8(char(1 << (2 * c))),
                                 _mm512_set1_epi8(char(1 << (2 * c + 1))));
      _mm512_store_si512(o->u + 64 * c, _mm512_mask_add_epi8(v, _mm512_test_epi8_mask(qh, bit), v,
                                                             _mm512_set1_epi8(16)));
    }
  }
};
struct DQ6_K {
  static constexpr int kBytes = 210, kSub = 16, kD = 208, kShift = 5;  // sub-blocks of 16, q + 32
  static void decode(const uint8_t* b, KDec* o) {
    const __m128i sc = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b + 192));
    _mm512_store_si512(o->sc, _mm512_cvtepi8_epi32(sc));
    _mm256_store_si256(reinterpret_cast<__m256i*>(o->pair),
                       _mm256_cvtepi8_epi16(sc));  // (sc[2j], sc[2j+1])
    for (int c = 0; c < 4; ++c) {
      const int h = c / 2, odd = c % 2;
      const __m512i L = _mm512_loadu_si512(b + 64 * h);
      const __m256i qh = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + 128 + 32 * h));
      const __m512i Qh =
          _mm512_inserti64x4(_mm512_castsi256_si512(qh), _mm256_srli_epi16(qh, 2), 1);
      const __m512i lo = odd ? _mm512_srli_epi16(L, 4) : L;
      const __m512i hb = odd ? Qh : _mm512_slli_epi16(Qh, 4);
      _mm512_store_si512(o->u + 64 * c,
                         _mm512_or_si512(_mm512_and_si512(lo, _mm512_set1_epi8(0x0F)),
                                         _mm512_and_si512(hb, _mm512_set1_epi8(0x30))));
    }
  }
};

// Q2_K / Q3_K: elements 64c .. 64c + 63 are those of 2-bit fields 2(c % 2) and 2(c % 2) + 1 of
// qs[32(c / 2) ..] (in the low and high 256 bits).
inline __m512i crumbs64(const uint8_t* qs, int c) {
  const __m256i y = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(qs + 32 * (c / 2)));
  const int s = 4 * (c % 2);
  const __m512i v = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_srli_epi16(y, s)),
                                       _mm256_srli_epi16(y, s + 2), 1);
  return _mm512_and_si512(v, _mm512_set1_epi8(3));
}
struct DQ2_K {
  static constexpr int kBytes = 84, kSub = 16, kD = 80, kShift = -1;  // pairs: the mins
  static void decode(const uint8_t* b, KDec* o) {
    const __m128i s = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b));
    _mm512_store_si512(o->sc, _mm512_cvtepu8_epi32(_mm_and_si128(s, _mm_set1_epi8(15))));
    const __m128i mins = _mm_and_si128(_mm_srli_epi16(s, 4), _mm_set1_epi8(15));
    _mm256_store_si256(reinterpret_cast<__m256i*>(o->pair), _mm256_cvtepu8_epi16(mins));
    for (int c = 0; c < 4; ++c) _mm512_store_si512(o->u + 64 * c, crumbs64(b + 16, c));
  }
};
struct DQ3_K {
  static constexpr int kBytes = 110, kSub = 16, kD = 108, kShift = 2;  // u = q + 4
  static void decode(const uint8_t* b, KDec* o) {
    alignas(16) int8_t sc[16];
    for (int h = 0; h < 16; ++h) sc[h] = int8_t(q3_k_scale(h, b + 96) - 32);
    const __m128i s = _mm_load_si128(reinterpret_cast<const __m128i*>(sc));
    _mm512_store_si512(o->sc, _mm512_cvtepi8_epi32(s));
    _mm256_store_si256(reinterpret_cast<__m256i*>(o->pair), _mm256_cvtepi8_epi16(s));
    const __m512i hm =
        _mm512_broadcast_i64x4(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(b)));
    for (int c = 0; c < 4; ++c) {  // bit 4(c / 2) + 2(c % 2) (+1 in the high half) of hmask[l]
      const int bit = 4 * (c / 2) + 2 * (c % 2);
      const __m512i m =
          _mm512_mask_blend_epi8(0xFFFFFFFF00000000ull, _mm512_set1_epi8(char(1 << bit)),
                                 _mm512_set1_epi8(char(1 << (bit + 1))));
      const __m512i v = crumbs64(b + 32, c);
      const __mmask64 set = _mm512_test_epi8_mask(hm, m);
      _mm512_store_si512(o->u + 64 * c, _mm512_mask_add_epi8(v, set, v, _mm512_set1_epi8(4)));
    }
  }
};
struct DIQ4_XS {
  static constexpr int kBytes = 136, kSub = 8, kD = 0, kShift = 7;  // u = V[nibble] + 128
  static void decode(const uint8_t* b, KDec* o) {
    const uint16_t sh = load_u16(b + 2);
    for (int j = 0; j < 8; ++j) {
      o->sc[j] = iq4_xs_scale(j, sh, b + 4) - 32;
      o->pair[j] = int32_t(uint32_t(uint16_t(o->sc[j])) * 0x10001u);  // (sc_j, sc_j)
    }
    const __m512i table = _mm512_broadcast_i32x4(iq4_table_u8());
    for (int c = 0; c < 4; ++c) {  // sub-blocks 2c, 2c + 1: low then high nibbles of each 16
      const __m256i y = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + 8 + 32 * c));
      const __m512i v = _mm512_inserti64x4(_mm512_castsi256_si512(y), _mm256_srli_epi16(y, 4), 1);
      const __m512i n = _mm512_and_si512(_mm512_shuffle_i64x2(v, v, _MM_SHUFFLE(3, 1, 2, 0)),
                                         _mm512_set1_epi8(0x0F));
      _mm512_store_si512(o->u + 64 * c, _mm512_shuffle_epi8(table, n));
    }
  }
};

template <class Q>
struct BlockK {
  template <int R, int TV>
  static void run(const uint8_t* const* w, const PanelK* pan, int64_t nb, int64_t b,
                  __m512 (&c)[R][TV]) {
    KDec dec[R];
    GALLEON_UNROLL
    for (int r = 0; r < R; ++r) Q::decode(w[r] + b * Q::kBytes, &dec[r]);
    __asm__ volatile("" : : "r"(dec) : "memory");  // broadcast loads, as in BlockA8
    const PanelK* p[TV];
    GALLEON_UNROLL
    for (int t = 0; t < TV; ++t) p[t] = pan + t * nb + b;
    constexpr int kGroups = 64 / Q::kSub;  // 4-byte groups per sub-block
    __m512i sumi[R][TV];
    for (int j = 0; j < Q::kSub; ++j) {
      __m512i acc[R][TV];
      GALLEON_UNROLL
      for (int k = 0; k < kGroups; ++k) {
        const int g = j * kGroups + k;
        __m512i wk[R];
        GALLEON_UNROLL
        for (int r = 0; r < R; ++r) wk[r] = bcast(dec[r].u + 4 * g);
        GALLEON_UNROLL
        for (int t = 0; t < TV; ++t) {
          const __m512i av = _mm512_load_si512(p[t]->q[g]);
          GALLEON_UNROLL
          for (int r = 0; r < R; ++r)
            acc[r][t] = _mm512_dpbusd_epi32(k == 0 ? _mm512_setzero_si512() : acc[r][t], wk[r], av);
        }
      }
      GALLEON_UNROLL
      for (int r = 0; r < R; ++r) {
        const __m512i s = _mm512_set1_epi32(dec[r].sc[j]);
        GALLEON_UNROLL
        for (int t = 0; t < TV; ++t) {
          const __m512i v = _mm512_mullo_epi32(acc[r][t], s);
          sumi[r][t] = j == 0 ? v : _mm512_add_epi32(sumi[r][t], v);
        }
      }
    }
    // pairs: Q4_K/Q5_K summ = sum_j m_j * (bsums 2j + 2j+1), Q2_K summ = sum_j m_j * bsums_j;
    // Q6_K/Q3_K corr = sum_j sc_j * bsums_j, IQ4_XS corr = sum_j sc_j * (bsums 2j + 2j+1).
    __m512i pr[R][TV];
    GALLEON_UNROLL
    for (int r = 0; r < R; ++r)
      GALLEON_UNROLL
      for (int t = 0; t < TV; ++t) pr[r][t] = _mm512_setzero_si512();
    GALLEON_UNROLL
    for (int j = 0; j < 8; ++j)
      GALLEON_UNROLL
      for (int t = 0; t < TV; ++t) {
      const __m512i bs = _mm512_load_si512(p[t]->bsp[j]);
      GALLEON_UNROLL
      for (int r = 0; r < R; ++r)
        pr[r][t] = _mm512_dpwssd_epi32(pr[r][t], bs, _mm512_set1_epi32(dec[r].pair[j]));
    }
    GALLEON_UNROLL
    for (int t = 0; t < TV; ++t) {
      const __m512 da = _mm512_load_ps(p[t]->d);
      GALLEON_UNROLL
      for (int r = 0; r < R; ++r) {
        const uint8_t* blk = w[r] + b * Q::kBytes;
        if constexpr (Q::kShift >= 0) {
          constexpr int kShift = Q::kShift < 0 ? 0 : Q::kShift;
          const __m512i s = _mm512_sub_epi32(sumi[r][t], _mm512_slli_epi32(pr[r][t], kShift));
          c[r][t] = _mm512_mul_ps(_mm512_mul_ps(_mm512_set1_ps(half(blk + Q::kD)), da),
                                  _mm512_cvtepi32_ps(s));
        } else {
          const __m512 a = _mm512_mul_ps(_mm512_mul_ps(_mm512_set1_ps(half(blk + Q::kD)), da),
                                         _mm512_cvtepi32_ps(sumi[r][t]));
          const __m512 m = _mm512_mul_ps(_mm512_mul_ps(_mm512_set1_ps(half(blk + Q::kD + 2)), da),
                                         _mm512_cvtepi32_ps(pr[r][t]));
          c[r][t] = _mm512_sub_ps(a, m);
        }
      }
    }
  }
};

template <class Q>
using GK = GBlocks<PanelK, 256, 2, 4, fill_k, BlockK<Q>>;

// ------------------------------------------------------------------ plain weights (F32, F16, BF16)

// Panel of 16 tokens: element i = 32k + l at float offset (l * nk + k) * 16 (lane-major, so a
// lane's elements are contiguous), nk = ceil(n / 32); padding is zero.
inline int64_t plain_nk(int64_t n) { return (n + 31) / 32; }

// Weight row formats: convert(w, n, out) writes the row's n values as f32 (exactly).
struct WF32 {
  static void convert(const uint8_t* w, int64_t n, float* out) {
    std::memcpy(out, w, size_t(n) * 4);
  }
};
struct WF16 {
  static void convert(const uint8_t* w, int64_t n, float* out) {
    int64_t i = 0;
    for (; i + 16 <= n; i += 16)
      _mm512_storeu_ps(
          out + i,
          _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + 2 * i))));
    for (; i < n; ++i) out[i] = _cvtsh_ss(load_u16(w + 2 * i));
  }
};
struct WBF16 {
  static void convert(const uint8_t* w, int64_t n, float* out) {
    for (int64_t i = 0; i < n; ++i) {
      const uint32_t u = uint32_t(load_u16(w + 2 * i)) << 16;
      std::memcpy(out + i, &u, 4);
    }
  }
};
// Rows that run() has already written as f32 (the only rows the tiles read).
struct WDense {};

// x * (*w in all 16 lanes), the broadcast folded into the multiply's memory operand ({1to16}).
// Compilers hoist _mm512_set1_ps into a separate vbroadcastss, which takes a vector-pipe slot
// on Zen 4: folded, the F32/F16 tile runs 15-20% faster (same vmulps, same bits).
inline __m512 mul_bcast(const float* w, __m512 x) {
  __m512 y;
  asm("vmulps %1%{1to16%}, %2, %0" : "=v"(y) : "m"(*w), "v"(x));
  return y;
}

inline __m512d pd(__m512 v) { return _mm512_castps_pd(v); }

// r[i][j] -> r[j][i] for a 16 x 16 block of floats: pairs, then quads within 128-bit blocks,
// then the blocks.

inline void transpose16(__m512 (&r)[16]) {
  __m512 t[16], u[16];
  GALLEON_UNROLL
  for (int i = 0; i < 16; i += 2) {
    t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
    t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
  }
  GALLEON_UNROLL
  for (int i = 0; i < 16; i += 4) {  // u[i + m]: column 4q + m of rows i .. i + 3, block q
    u[i] = _mm512_castpd_ps(_mm512_unpacklo_pd(pd(t[i]), pd(t[i + 2])));
    u[i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(pd(t[i]), pd(t[i + 2])));
    u[i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(pd(t[i + 1]), pd(t[i + 3])));
    u[i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(pd(t[i + 1]), pd(t[i + 3])));
  }
  GALLEON_UNROLL
  for (int m = 0; m < 4; ++m) {
    const __m512 v0 = _mm512_shuffle_f32x4(u[m], u[4 + m], _MM_SHUFFLE(2, 0, 2, 0));
    const __m512 v1 = _mm512_shuffle_f32x4(u[m], u[4 + m], _MM_SHUFFLE(3, 1, 3, 1));
    const __m512 w0 = _mm512_shuffle_f32x4(u[8 + m], u[12 + m], _MM_SHUFFLE(2, 0, 2, 0));
    const __m512 w1 = _mm512_shuffle_f32x4(u[8 + m], u[12 + m], _MM_SHUFFLE(3, 1, 3, 1));
    r[m] = _mm512_shuffle_f32x4(v0, w0, _MM_SHUFFLE(2, 0, 2, 0));
    r[4 + m] = _mm512_shuffle_f32x4(v1, w1, _MM_SHUFFLE(2, 0, 2, 0));
    r[8 + m] = _mm512_shuffle_f32x4(v0, w0, _MM_SHUFFLE(3, 1, 3, 1));
    r[12 + m] = _mm512_shuffle_f32x4(v1, w1, _MM_SHUFFLE(3, 1, 3, 1));
  }
}

template <class W>
struct GPlain {
  static constexpr int kRows = 4, kTok = 4;
  // run() copies (F32) or converts (F16, BF16) a chunk of rows at a time to f32 and multiplies
  // them with GPlain<WDense>.
  static constexpr bool kConvertsRows = !std::is_same_v<W, WDense>;
  using Format = W;
  static void pack(int64_t n, const uint8_t* act, size_t arb, int64_t ntok, int64_t g,
                   uint8_t* dst) {
    const int64_t nk = plain_nk(n);
    float* p = reinterpret_cast<float*>(dst);
    // 16 elements of the group's 16 tokens at a time: 16 row loads (tokens past ntok and
    // elements past n are zero), a 16 x 16 transpose, then element e's 16 tokens to their
    // place (lane e mod 32, step e / 32).
    const int64_t t0 = g * kTokVec;
    const int tokens = int(std::min<int64_t>(kTokVec, ntok - t0));
    for (int64_t e0 = 0; e0 < 32 * nk; e0 += 16) {
      const int64_t left = n - e0;
      const __mmask16 m = left >= 16 ? __mmask16(0xFFFF) : left <= 0 ? __mmask16(0) : __mmask16((1u << left) - 1);
      __m512 r[16];
      GALLEON_UNROLL
      for (int i = 0; i < 16; ++i)
        r[i] = i < tokens ? _mm512_maskz_loadu_ps(m, reinterpret_cast<const float*>(act + size_t(t0 + i) * arb) + e0)
                          : _mm512_setzero_ps();
      transpose16(r);
      const int64_t k = e0 / 32, l0 = e0 % 32;
      GALLEON_UNROLL
      for (int j = 0; j < 16; ++j) _mm512_store_ps(p + ((l0 + j) * nk + k) * kTokVec, r[j]);
    }
  }
  static size_t group_bytes(int64_t n) { return size_t(32 * plain_nk(n) * kTokVec) * 4; }
  template <int R, int TV>
  static void tile(const Args& a, const uint8_t* const* w, const uint8_t* pan, size_t gbytes,
                   __m512 (&res)[R][TV]) {
    static_assert(std::is_same_v<W, WDense>, "tiles read rows run() has converted");
    const float* wf[R];
    GALLEON_UNROLL
    for (int r = 0; r < R; ++r) wf[r] = reinterpret_cast<const float*>(w[r]);
    const int64_t nk = plain_nk(a.n);
    const float* x[TV];
    GALLEON_UNROLL
    for (int t = 0; t < TV; ++t) x[t] = reinterpret_cast<const float*>(pan + t * gbytes);
    // Lane l: elements l, l+32, ... (contiguous in the panel, 32 apart in the weight rows).
    auto lane = [&](int l, __m512(&cur)[R][TV]) {
      const float* xp[TV];
      GALLEON_UNROLL
      for (int t = 0; t < TV; ++t) xp[t] = x[t] + l * nk * kTokVec;
      const int64_t cnt = (a.n - l + 31) / 32;
      auto step = [&](int64_t k, bool first) {
        GALLEON_UNROLL
        for (int t = 0; t < TV; ++t) {
          const __m512 xv = _mm512_load_ps(xp[t] + k * kTokVec);
          GALLEON_UNROLL
          for (int r = 0; r < R; ++r) {
            const __m512 c = mul_bcast(&wf[r][l + 32 * k], xv);
            cur[r][t] = first ? c : _mm512_add_ps(cur[r][t], c);
          }
        }
      };
      step(0, true);
      for (int64_t k = 1; k < cnt; ++k) step(k, false);
    };
    lane_tree<R, TV>(a.n, lane, res);
  }
};

// ------------------------------------------------------------------ driver

// One tile: rows [row, row+R) x token groups [g, g+TV); writes the tokens below ntok.
template <class G, int R, int TV>
void run_tile(const Args& a, const uint8_t* pan, size_t gbytes, int64_t row, int64_t g,
              int64_t ntok) {
  const uint8_t* w[R];
  GALLEON_UNROLL
  for (int r = 0; r < R; ++r) w[r] = a.w + size_t(row + r) * a.wrb;
  __m512 res[R][TV];
  G::template tile<R, TV>(a, w, pan + size_t(g) * gbytes, gbytes, res);
  GALLEON_UNROLL
  for (int t = 0; t < TV; ++t) {
    alignas(64) float out[R][kTokVec];
    GALLEON_UNROLL
    for (int r = 0; r < R; ++r) _mm512_store_ps(out[r], res[r][t]);
    const int64_t t0 = (g + t) * kTokVec;
    const int n = int(std::min<int64_t>(kTokVec, ntok - t0));
    for (int i = 0; i < n; ++i)
      GALLEON_UNROLL
      for (int r = 0; r < R; ++r)
        a.y[size_t(t0 + i) * a.ys + size_t(row + r)] = canonical_nan(out[r][i]);
  }
}

template <class G, int R, int TV>
void rows(const Args& a, const uint8_t* pan, size_t gbytes, int64_t r0, int64_t r1, int64_t g,
          int64_t ntok) {
  int64_t r = r0;
  for (; r + R <= r1; r += R) run_tile<G, R, TV>(a, pan, gbytes, r, g, ntok);
  for (; r < r1; ++r) run_tile<G, 1, TV>(a, pan, gbytes, r, g, ntok);
}

// The last rem (< the tile's width) token groups as one narrower tile.
template <class G, int R, int T>
void rows_rem(const Args& a, const uint8_t* pan, size_t gbytes, int64_t r0, int64_t r1, int64_t g,
              int64_t rem, int64_t ntok) {
  if constexpr (T >= 1) {
    if (rem == T) return rows<G, R, T>(a, pan, gbytes, r0, r1, g, ntok);
    rows_rem<G, R, T - 1>(a, pan, gbytes, r0, r1, g, rem, ntok);
  }
}

template <class G>
constexpr bool converts_rows() {
  if constexpr (requires { G::kConvertsRows; })
    return G::kConvertsRows;
  else
    return false;
}

// Rows per chunk: about 256 KB of them, a multiple of the tile's R rows. A chunk is read from
// memory once and then from L2 for every token group.
int64_t chunk_rows(size_t row_bytes, int R) {
  return std::max<int64_t>(int64_t((size_t(1) << 18) / row_bytes) / R * R, R);
}

template <class G, int R, int TV>
void run(const Args& a, const uint8_t* pan, int64_t r0, int64_t r1, int64_t ntok) {
  if constexpr (converts_rows<G>()) {
    // Each chunk of plain rows is written once as f32, then multiplied by GPlain<WDense>.
    using W = typename G::Format;
    const int64_t chunk = chunk_rows(size_t(a.n) * 4, R);
    thread_local std::vector<float, AlignedAlloc<float>> buf;
    if (buf.size() < size_t(chunk * a.n)) buf.resize(size_t(chunk * a.n));
    for (int64_t rc = r0; rc < r1; rc += chunk) {
      const int64_t m = std::min(chunk, r1 - rc);
      for (int64_t r = 0; r < m; ++r)
        W::convert(a.w + size_t(rc + r) * a.wrb, a.n, buf.data() + size_t(r * a.n));
      Args f = a;
      f.type = GgmlType::F32;
      f.w = reinterpret_cast<const uint8_t*>(buf.data());
      f.wrb = size_t(a.n) * 4;
      f.y = a.y + rc;
      run<GPlain<WDense>, R, TV>(f, pan, 0, m, ntok);
    }
  } else {
    const size_t gbytes = G::group_bytes(a.n);
    const int64_t ng = (ntok + kTokVec - 1) / kTokVec;
    const int64_t chunk = chunk_rows(a.wrb, R);
    for (int64_t rc = r0; rc < r1; rc += chunk) {
      const int64_t re = std::min(r1, rc + chunk);
      int64_t g = 0;
      for (; g + TV <= ng; g += TV) rows<G, R, TV>(a, pan, gbytes, rc, re, g, ntok);
      rows_rem<G, R, TV - 1>(a, pan, gbytes, rc, re, g, ng - g, ntok);
    }
  }
}

// Every supported weight type with its tile shape: f(kind) with kind a value of the GEMM type.
template <class F>
bool with_kind(GgmlType t, F&& f) {
  switch (t) {
    case GgmlType::Q8_0:
      return f(GA8<DQ8_0>{}), true;
    case GgmlType::Q4_0:
      return f(GA8<DQ4_0>{}), true;
    case GgmlType::Q4_1:
      return f(GA8<DQ4_1>{}), true;
    case GgmlType::Q5_0:
      return f(GA8<DQ5_0>{}), true;
    case GgmlType::Q5_1:
      return f(GA8<DQ5_1>{}), true;
    case GgmlType::Q4_K:
      return f(GK<DQ4_K>{}), true;
    case GgmlType::Q5_K:
      return f(GK<DQ5_K>{}), true;
    case GgmlType::Q6_K:
      return f(GK<DQ6_K>{}), true;
    case GgmlType::Q2_K:
      return f(GK<DQ2_K>{}), true;
    case GgmlType::Q3_K:
      return f(GK<DQ3_K>{}), true;
    case GgmlType::IQ4_XS:
      return f(GK<DIQ4_XS>{}), true;
    case GgmlType::IQ4_NL:
      return f(GA8<DIQ4_NL>{}), true;
    case GgmlType::F32:
      return f(GPlain<WF32>{}), true;
    case GgmlType::F16:
      return f(GPlain<WF16>{}), true;
    case GgmlType::BF16:
      return f(GPlain<WBF16>{}), true;
    default:
      return false;
  }
}

constexpr int64_t kMinTokens = 8;  // below this the row-vectorised kernels are faster

}  // namespace

size_t panel_bytes(GgmlType w, int64_t n, int64_t ntok) {
  size_t bytes = 0;
  if (ntok >= kMinTokens)
    with_kind(w, [&](auto k) {
      bytes = decltype(k)::group_bytes(n) * size_t((ntok + kTokVec - 1) / kTokVec);
    });
  return bytes;
}

void pack_panel(GgmlType w, int64_t n, const void* act, size_t arb, int64_t ntok, int64_t group,
                void* panel) {
  with_kind(w, [&](auto k) {
    using G = decltype(k);
    G::pack(n, static_cast<const uint8_t*>(act), arb, ntok, group,
            static_cast<uint8_t*>(panel) + size_t(group) * G::group_bytes(n));
  });
}

void matmul_panel(GgmlType w, int64_t n, const void* W, size_t wrb, int64_t r0, int64_t r1,
                  const void* panel, int64_t ntok, float* y, size_t ys) {
  const Args a{w, n, static_cast<const uint8_t*>(W), wrb, nullptr, 0, y, ys};
  with_kind(w, [&](auto k) {
    using G = decltype(k);
    run<G, G::kRows, G::kTok>(a, static_cast<const uint8_t*>(panel), r0, r1, ntok);
  });
}

bool gemm(const Args& a, int64_t r0, int64_t r1, int64_t ntok) {
  const size_t bytes = panel_bytes(a.type, a.n, ntok);
  if (bytes == 0) return false;
  thread_local std::vector<uint8_t, AlignedAlloc<uint8_t>> panel;
  if (panel.size() < bytes) panel.resize(bytes);
  for (int64_t g = 0; g * kTokVec < ntok; ++g)
    pack_panel(a.type, a.n, a.act, a.arb, ntok, g, panel.data());
  matmul_panel(a.type, a.n, a.w, a.wrb, r0, r1, panel.data(), ntok, a.y, a.ys);
  return true;
}

}  // namespace galleon::kern::avx512
GALLEON_ISA_END
