// Internal to the kernels: ggml block layouts, small scalar helpers (internal linkage, so every
// instruction-set file gets its own copy: ODR safe) and the per-ISA function tables.
#pragma once

#include <cstdint>
#include <cstring>

#include "runtime/kernels.h"

namespace galleon::kern {

// ggml block layouts (sizes checked below). fp16 fields are raw IEEE binary16 bits.
struct BlockQ4_0 { uint16_t d; uint8_t qs[16]; };
struct BlockQ4_1 { uint16_t d, m; uint8_t qs[16]; };
struct BlockQ5_0 { uint16_t d; uint8_t qh[4]; uint8_t qs[16]; };
struct BlockQ5_1 { uint16_t d, m; uint8_t qh[4]; uint8_t qs[16]; };
struct BlockQ8_0 { uint16_t d; int8_t qs[32]; };
struct BlockQ4_K { uint16_t d, dmin; uint8_t scales[12]; uint8_t qs[128]; };
struct BlockQ5_K { uint16_t d, dmin; uint8_t scales[12]; uint8_t qh[32]; uint8_t qs[128]; };
struct BlockQ6_K { uint8_t ql[128]; uint8_t qh[64]; int8_t scales[16]; uint16_t d; };
struct BlockQ2_K { uint8_t scales[16]; uint8_t qs[64]; uint16_t d, dmin; };
struct BlockQ3_K { uint8_t hmask[32]; uint8_t qs[64]; uint8_t scales[12]; uint16_t d; };
struct BlockIQ4_NL { uint16_t d; uint8_t qs[16]; };
struct BlockIQ4_XS { uint16_t d, scales_h; uint8_t scales_l[4]; uint8_t qs[128]; };
static_assert(sizeof(BlockQ4_0) == 18 && sizeof(BlockQ4_1) == 20 && sizeof(BlockQ5_0) == 22);
static_assert(sizeof(BlockQ5_1) == 24 && sizeof(BlockQ8_0) == 34 && sizeof(BlockQ4_K) == 144);
static_assert(sizeof(BlockQ5_K) == 176 && sizeof(BlockQ6_K) == 210 && sizeof(BlockQ2_K) == 84);
static_assert(sizeof(BlockQ3_K) == 110 && sizeof(BlockIQ4_NL) == 18 && sizeof(BlockIQ4_XS) == 136);

// IQ4_NL / IQ4_XS: a 4-bit index's value (ggml's kvalues_iq4nl).
inline constexpr int8_t kIq4Values[16] = {-127, -104, -83, -65, -49, -35, -22, -10,
                                          1,    13,   25,  38,  53,  69,  89,  113};
static_assert(sizeof(A8Block) == 40 && sizeof(A8KBlock) == 292);

namespace {

// ggml's get_scale_min_k4: 6-bit scale and min of sub-block j (0..7) of a Q4_K/Q5_K block.
inline void scale_min_k4(int j, const uint8_t* q, int* sc, int* m) {
  if (j < 4) {
    *sc = q[j] & 63;
    *m = q[j + 4] & 63;
  } else {
    *sc = (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4);
    *m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
  }
}

// Q3_K: sub-block j's (0..15) 6-bit scale as stored (the scale is that - 32): its low 4 bits
// are nibble j / 8 of scales[j % 8], its high 2 bits bits 2(j / 4).. of scales[8 + j % 4].
inline int q3_k_scale(int j, const uint8_t* s) {
  return ((s[j % 8] >> (4 * (j / 8))) & 15) | (((s[8 + j % 4] >> (2 * (j / 4))) & 3) << 4);
}
// IQ4_XS: sub-block j's (0..7) 6-bit scale as stored (the scale is that - 32).
inline int iq4_xs_scale(int j, uint16_t scales_h, const uint8_t* scales_l) {
  return ((scales_l[j / 2] >> (4 * (j % 2))) & 15) | (((scales_h >> (2 * j)) & 3) << 4);
}

inline uint32_t load_u32(const uint8_t* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}
inline uint16_t load_u16(const void* p) {
  uint16_t v;
  std::memcpy(&v, p, 2);
  return v;
}

// Any NaN result of a dot product is returned as this one quiet NaN (payloads differ by ISA).
inline float canonical_nan(float f) {
  if (f != f) {
    uint32_t u = 0x7fc00000u;
    std::memcpy(&f, &u, 4);
  }
  return f;
}

}  // namespace

// Per-ISA tables (defined in kernels_<isa>.cpp, present when the build compiles that file).
namespace sse2 { const Ops& table(); }
namespace avx2 { const Ops& table(); }
namespace avx512 { const Ops& table(); }
namespace neon { const Ops& table(); }

}  // namespace galleon::kern
