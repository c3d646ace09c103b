// AVX2 path (placeholder until the SIMD kernels land: the scalar reference).
#include "runtime/kernels_internal.h"
namespace galleon::kern::avx2 {
const Ops& table() {
  static const Ops t = [] { Ops o = ops(Isa::Scalar); o.isa = Isa::Avx2; return o; }();
  return t;
}
}  // namespace galleon::kern::avx2
