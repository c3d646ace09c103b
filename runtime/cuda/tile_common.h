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
// weight type's activation format (arb bytes apart). pq and ps: the same weights packed for the
// tensor-core tiles (runtime/cuda/mma_tile.h, "Packed weights"; null where they are not), whose
// records may cover more rows than n_out (a group's first matrix).
struct GemmArgs {
  const uint8_t* w;
  size_t wrb;
  int64_t n, n_out;
  const uint8_t* act;
  size_t arb;
  int64_t ntok;
  const uint32_t* pq = nullptr;  // quant words
  const uint32_t* ps = nullptr;  // scale words
};

// Where the prompt tiles' results go. One launch may compute up to kMaxGemmParts matmuls of
// one input (a layer's Q, K and V projections; its gate and up) whose weights lie one after
// the other in GPU memory, as the rows of one matrix: rows first_row[i] .. of part i go to
// y[i], n_out[i] floats per token. One launch of them all keeps the GPU busier than one per
// part: a 256-row K projection alone gives a 512-token prompt a small part of an H100's warps.
// The part is picked per result, from the kernel's parameters, so that the tiles hold no more
// registers than with one output.
constexpr int kMaxGemmParts = 3;
struct GemmOut {
  float* y[kMaxGemmParts];
  int64_t first_row[kMaxGemmParts], n_out[kMaxGemmParts];
  int n_parts;
  // Where the result of row r (of all parts' rows) and token t goes.
  GALLEON_HDI float* at(int64_t r, int64_t t) const {
    float* to = y[0];
    int64_t first = 0, n = n_out[0];
#if defined(__CUDACC__)
#pragma unroll
#endif
    for (int i = 1; i < kMaxGemmParts; ++i)
      if (i < n_parts && r >= first_row[i]) to = y[i], first = first_row[i], n = n_out[i];
    return to + t * n + (r - first);
  }
};

// Bit-reversed p (5 bits): the lane that warp_tree's pairs put in position p of a binary
// counter (0, 16, 8, 24, ...); its own inverse.
GALLEON_HDI constexpr int bitrev5(int p) {
  return ((p & 1) << 4) | ((p & 2) << 2) | (p & 4) | ((p & 8) >> 2) | ((p & 16) >> 4);
}

}  // namespace galleon::cdev
