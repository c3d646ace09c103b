// Tiling driver shared by the SIMD kernel files. A kernel K (a type inside an ISA namespace, so
// every instantiation is ISA-local and ODR safe) provides
//   template <int R, int T> static void tile(const Args&, int64_t row, int64_t tok);
// computing y for rows [row, row+R) x tokens [tok, tok+T). Tiling never changes a y element.
#pragma once

#include <cstddef>
#include <cstdint>

#include "runtime/ggml_type.h"

namespace galleon::kern {

struct Args {
  GgmlType type;
  int64_t n;
  const uint8_t* w;  // weight row 0
  size_t wrb;        // bytes between weight rows
  const uint8_t* act;  // activation row of token 0
  size_t arb;          // bytes between activation rows
  float* y;
  size_t ys;  // y[t * ys + r]
};

template <class K, int R, int TM>
inline void drive_tokens(const Args& a, int64_t r, int64_t t, int64_t tend) {
  for (; t + TM <= tend; t += TM) K::template tile<R, TM>(a, r, t);
  const int64_t left = tend - t;
  if constexpr (TM > 1)
    if (left == 1) K::template tile<R, 1>(a, r, t);
  if constexpr (TM > 2)
    if (left == 2) K::template tile<R, 2>(a, r, t);
  if constexpr (TM > 3)
    if (left == 3) K::template tile<R, 3>(a, r, t);
  if constexpr (TM > 4)
    static_assert(TM <= 4, "token tile up to 4");
}

// Rows in tiles of RM (GEMM: tokens in tiles of TM, in token blocks of kTokBlock so the weights
// of a row tile stay in L1 while the activations of a block stay in L2); decode: rows in GV.
template <class K, int GV, int RM, int TM>
inline void drive(const Args& a, int64_t r0, int64_t r1, int64_t ntok) {
  if (ntok == 1) {
    int64_t r = r0;
    for (; r + GV <= r1; r += GV) K::template tile<GV, 1>(a, r, 0);
    for (; r < r1; ++r) K::template tile<1, 1>(a, r, 0);
    return;
  }
  constexpr int64_t kTokBlock = 64;
  for (int64_t tb = 0; tb < ntok; tb += kTokBlock) {
    const int64_t tend = tb + kTokBlock < ntok ? tb + kTokBlock : ntok;
    int64_t r = r0;
    for (; r + RM <= r1; r += RM) drive_tokens<K, RM, TM>(a, r, tb, tend);
    for (; r < r1; ++r) drive_tokens<K, 1, TM>(a, r, tb, tend);
  }
}

// AVX-512 prompt GEMM (kernels_avx512_gemm.cpp): tokens vectorised 16 per register. gemm()
// packs the activations itself and returns false (nothing written) for types it does not
// handle; the others are the Ops panel entries.
namespace avx512 {
bool gemm(const Args& a, int64_t r0, int64_t r1, int64_t ntok);
size_t panel_bytes(GgmlType w, int64_t n, int64_t ntok);
void pack_panel(GgmlType w, int64_t n, const void* act, size_t arb, int64_t ntok, int64_t group, void* panel);
void matmul_panel(GgmlType w, int64_t n, const void* W, size_t wrb, int64_t r0, int64_t r1,
                  const void* panel, int64_t ntok, float* y, size_t ys);
}

}  // namespace galleon::kern
