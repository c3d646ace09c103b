// What the prompt matmul tiles share (runtime/cuda/mma_tile.h, runtime/cuda/plain_tile.h):
// their operands, the bit-reversed lane order, and the inlining qualifier.
#pragma once

#include <cstddef>
#include <cstdint>

#include "runtime/cuda/canon_device.h"

// Inlined on the GPU, so that a tile's arrays stay in registers.
#if defined(__CUDACC__)
#define GALLEON_HDI __host__ __device__ __forceinline__
#else
#define GALLEON_HDI inline
#endif

namespace galleon::cdev {

// A matmul's operands: n_out rows of n weights (wrb bytes apart), ntok activation rows in the
// weight type's activation format (arb bytes apart).
struct GemmArgs {
  const uint8_t* w;
  size_t wrb;
  int64_t n, n_out;
  const uint8_t* act;
  size_t arb;
  int64_t ntok;
};

// Bit-reversed p (5 bits): the lane that warp_tree's pairs put in position p of a binary
// counter (0, 16, 8, 24, ...); its own inverse.
GALLEON_HDI constexpr int bitrev5(int p) {
  return ((p & 1) << 4) | ((p & 2) << 2) | (p & 4) | ((p & 8) >> 2) | ((p & 16) >> 4);
}

}  // namespace galleon::cdev
