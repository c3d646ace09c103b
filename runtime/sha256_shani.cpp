// SHA-256 compression with the x86 SHA extensions (compiled for SHA, SSE4.1 and SSSE3 alone,
// runtime/isa_region.h; called only when the CPU has them, see sha256.cpp). Same results as Sha256::block, several times faster:
// logits_sha256 hashes every logits row (tens of MB for a long prompt).
#include <immintrin.h>

#include <cstddef>
#include <cstdint>

#include "runtime/isa_region.h"

GALLEON_ISA_BEGIN("sha,sse4.1,ssse3")
namespace galleon::sha256_shani {

void blocks(uint32_t h[8], const uint8_t* p, size_t n, const uint32_t k[64]) {
  const __m128i bswap = _mm_set_epi64x(0x0c0d0e0f08090a0bULL, 0x0405060700010203ULL);
  // h[0..7] = a..h -> the register layout of sha256rnds2: state0 = ABEF, state1 = CDGH.
  __m128i t = _mm_shuffle_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(h)), 0xB1);
  __m128i s1 = _mm_shuffle_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(h + 4)), 0x1B);
  __m128i s0 = _mm_alignr_epi8(t, s1, 8);
  s1 = _mm_blend_epi16(s1, t, 0xF0);
  for (; n > 0; --n, p += 64) {
    const __m128i save0 = s0, save1 = s1;
    __m128i w[4];
    for (int i = 0; i < 4; ++i)
      w[i] = _mm_shuffle_epi8(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 16 * i)), bswap);
    for (int i = 0; i < 16; ++i) {
      const __m128i msg =
          _mm_add_epi32(w[i & 3], _mm_loadu_si128(reinterpret_cast<const __m128i*>(k + 4 * i)));
      s1 = _mm_sha256rnds2_epu32(s1, s0, msg);
      s0 = _mm_sha256rnds2_epu32(s0, s1, _mm_shuffle_epi32(msg, 0x0E));
      if (i < 12) {  // message words 4(i+4) .. 4(i+4)+3
        __m128i next = _mm_sha256msg1_epu32(w[i & 3], w[(i + 1) & 3]);
        next = _mm_add_epi32(next, _mm_alignr_epi8(w[(i + 3) & 3], w[(i + 2) & 3], 4));
        w[i & 3] = _mm_sha256msg2_epu32(next, w[(i + 3) & 3]);
      }
    }
    s0 = _mm_add_epi32(s0, save0);
    s1 = _mm_add_epi32(s1, save1);
  }
  t = _mm_shuffle_epi32(s0, 0x1B);
  s1 = _mm_shuffle_epi32(s1, 0xB1);
  s0 = _mm_blend_epi16(t, s1, 0xF0);
  s1 = _mm_alignr_epi8(s1, t, 8);
  _mm_storeu_si128(reinterpret_cast<__m128i*>(h), s0);
  _mm_storeu_si128(reinterpret_cast<__m128i*>(h + 4), s1);
}

}  // namespace galleon::sha256_shani
GALLEON_ISA_END
