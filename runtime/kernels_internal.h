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
static_assert(sizeof(BlockQ4_0) == 18 && sizeof(BlockQ4_1) == 20 && sizeof(BlockQ5_0) == 22);
static_assert(sizeof(BlockQ5_1) == 24 && sizeof(BlockQ8_0) == 34 && sizeof(BlockQ4_K) == 144);
static_assert(sizeof(BlockQ5_K) == 176 && sizeof(BlockQ6_K) == 210);
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
