// AVX-512 path (placeholder until the SIMD kernels land: the scalar reference).
#include "runtime/kernels_internal.h"
namespace galleon::kern::avx512 {
const Ops& table() {
  static const Ops t = [] { Ops o = ops(Isa::Scalar); o.isa = Isa::Avx512; return o; }();
  return t;
}
}  // namespace galleon::kern::avx512
