// The 32 canonical lanes of docs/arithmetic.md section 2 as a binary counter over zmm
// registers, shared by the AVX-512 GEMM and attention kernels (compiled with AVX-512 flags
// only; internal linkage in each file that includes it).
#pragma once

#include <immintrin.h>

#include <cstdint>

#ifndef GALLEON_UNROLL
#define GALLEON_UNROLL _Pragma("GCC unroll 16")
#endif

namespace galleon::kern::avx512 {
namespace {

constexpr int kRev5[32] = {0, 16, 8, 24, 4, 20, 12, 28, 2, 18, 10, 26, 6, 22, 14, 30,
                           1, 17, 9, 25, 5, 21, 13, 29, 3, 19, 11, 27, 7, 23, 15, 31};

// Sums the 32 canonical lanes of R x TV outputs with the fixed tree. lane(l, out) writes the sum
// of lane l's contributions (l < nb only).
template <int R, int TV, class Lane>
void lane_tree(int64_t nb, Lane lane, __m512 (&res)[R][TV]) {
  __m512 stk[6][R][TV];
  bool have[6] = {};
  for (int j = 0; j < 32; ++j) {
    const int l = kRev5[j];
    __m512 cur[R][TV];
    bool valid = l < nb;
    if (valid) lane(l, cur);
    int lvl = 0;
    for (; (j >> lvl) & 1; ++lvl) {
      if (!have[lvl]) continue;
      GALLEON_UNROLL
      for (int r = 0; r < R; ++r)
        GALLEON_UNROLL
        for (int t = 0; t < TV; ++t)
          cur[r][t] = valid ? _mm512_add_ps(stk[lvl][r][t], cur[r][t]) : stk[lvl][r][t];
      valid = true;
      have[lvl] = false;
    }
    if (valid) {
      GALLEON_UNROLL
      for (int r = 0; r < R; ++r)
        GALLEON_UNROLL
        for (int t = 0; t < TV; ++t) stk[lvl][r][t] = cur[r][t];
    }
    have[lvl] = valid;
  }
  GALLEON_UNROLL
  for (int r = 0; r < R; ++r)
    GALLEON_UNROLL
    for (int t = 0; t < TV; ++t) res[r][t] = _mm512_add_ps(stk[5][r][t], _mm512_setzero_ps());
}

}  // namespace
}  // namespace galleon::kern::avx512
