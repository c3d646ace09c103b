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

// Up to kMaxGemmParts matmuls of one input in one launch (a layer's Q, K and V projections; its
// gate and up): weights of one type and input width, each with its own rows and output (y,
// n_out floats per token). The launch's row blocks (x dimension) are the first part's, then
// the second's, ...: part i's start at block first_block. One launch of all of them keeps the
// GPU busier than one per part: a 256-row K projection alone gives a 512-token prompt a small
// part of an H100's warps.
constexpr int kMaxGemmParts = 3;
struct GemmPart {
  const uint8_t* w = nullptr;
  size_t wrb = 0;
  int64_t n_out = 0;
  float* y = nullptr;
  int64_t first_block = 0;
};
struct GemmLaunch {
  GemmPart part[kMaxGemmParts];
  int n_parts;
  int64_t n;
  const uint8_t* act;
  size_t arb;
  int64_t ntok;
};
// What row block `block` of a launch computes: its part's operands and output, and its row
// block within the part.
struct GemmTask {
  GemmArgs p;
  float* y;
  int64_t row_block;
};
GALLEON_HDI GemmTask gemm_task(const GemmLaunch& l, int64_t block) {
  GemmPart q = l.part[0];
#if defined(__CUDACC__)
#pragma unroll
#endif
  for (int i = 1; i < kMaxGemmParts; ++i)
    if (i < l.n_parts && block >= l.part[i].first_block) q = l.part[i];
  return {{q.w, q.wrb, l.n, q.n_out, l.act, l.arb, l.ntok}, q.y, block - q.first_block};
}

// Bit-reversed p (5 bits): the lane that warp_tree's pairs put in position p of a binary
// counter (0, 16, 8, 24, ...); its own inverse.
GALLEON_HDI constexpr int bitrev5(int p) {
  return ((p & 1) << 4) | ((p & 2) << 2) | (p & 4) | ((p & 8) >> 2) | ((p & 16) >> 4);
}

}  // namespace galleon::cdev
