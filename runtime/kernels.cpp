// ISA selection, activation formats and the scalar reference (docs/arithmetic.md).
#include "runtime/kernels.h"

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <string>

#include "runtime/canon_math.h"
#include "runtime/error.h"
#include "runtime/kernels_elem.h"
#include "runtime/kernels_internal.h"

#if defined(__x86_64__) || defined(_M_X64)
#include <cpuid.h>
#define GALLEON_X86 1
#endif

namespace galleon::kern {
namespace {

// ---------------------------------------------------------------- CPU features

#if GALLEON_X86
uint64_t xgetbv0() {
  uint32_t lo, hi;
  __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
  return (uint64_t(hi) << 32) | lo;
}

struct X86Features {
  bool avx2 = false, avx512 = false;
};

X86Features detect_x86() {
  X86Features f;
  unsigned a, b, c, d;
  if (!__get_cpuid(1, &a, &b, &c, &d)) return f;
  const bool osxsave = c & (1u << 27), avx = c & (1u << 28), f16c = c & (1u << 29),
             fma = c & (1u << 12);
  if (!osxsave || !avx) return f;
  const uint64_t xcr0 = xgetbv0();
  const bool os_avx = (xcr0 & 0x6) == 0x6;                // XMM and YMM state
  const bool os_avx512 = os_avx && (xcr0 & 0xe0) == 0xe0;  // opmask, ZMM_Hi256, Hi16_ZMM
  if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return f;
  const bool avx2 = b & (1u << 5), f512 = b & (1u << 16), dq = b & (1u << 17),
             bw = b & (1u << 30), vl = b & (1u << 31), vnni = c & (1u << 11);
  f.avx2 = os_avx && avx2 && f16c && fma;
  f.avx512 = f.avx2 && os_avx512 && f512 && dq && bw && vl && vnni;
  return f;
}

const X86Features& x86() {
  static const X86Features f = detect_x86();
  return f;
}
#endif

// ---------------------------------------------------------------- scalar reference

// The 32 logical accumulators and their fixed reduction tree.
struct Lanes {
  float l[32] = {};
  void add(int64_t i, float c) { l[i & 31] = l[i & 31] + c; }
  float reduce() {
    for (int s = 16; s >= 1; s /= 2)
      for (int i = 0; i < s; ++i) l[i] = l[i] + l[i + s];
    return canonical_nan(l[0]);
  }
};

// Activation quantization: q = round-to-nearest-even(x * id), NaN -> 0, clamped to +-127.
int8_t quant_one(float x, float id) {
  float v = x * id;
  if (!(v == v)) v = 0.0f;
  if (v > 127.0f) v = 127.0f;
  if (v < -127.0f) v = -127.0f;
  // |v| <= 127: adding 1.5*2^23 rounds to an integer (nearest even) exactly.
  const float r = (v + 12582912.0f) - 12582912.0f;
  return int8_t(int(r));
}

float block_scale(const float* x, int n, float* id) {
  float amax = 0.0f;
  for (int j = 0; j < n; ++j) {
    const float a = std::fabs(x[j]);
    if (a > amax) amax = a;  // NaN never compares greater: ignored
  }
  const float d = amax / 127.0f;
  *id = d != 0.0f ? 1.0f / d : 0.0f;
  return d;
}

void quantize_a8(const float* x, A8Block* out, int64_t nb) {
  for (int64_t b = 0; b < nb; ++b, x += 32) {
    float id;
    out[b].d = block_scale(x, 32, &id);
    int32_t sum = 0;
    for (int j = 0; j < 32; ++j) sum += out[b].q[j] = quant_one(x[j], id);
    out[b].sum = sum;
  }
}

void quantize_a8k(const float* x, A8KBlock* out, int64_t nb) {
  for (int64_t b = 0; b < nb; ++b, x += 256) {
    float id;
    out[b].d = block_scale(x, 256, &id);
    for (int g = 0; g < 16; ++g) {
      int sum = 0;
      for (int j = 0; j < 16; ++j) sum += out[b].q[16 * g + j] = quant_one(x[16 * g + j], id);
      out[b].bsums[g] = int16_t(sum);
    }
  }
}

void scalar_quantize_act(GgmlType w, const float* x, void* dst, int64_t n) {
  switch (act_format(w)) {
    case ActFormat::F32: std::memcpy(dst, x, size_t(n) * 4); return;
    case ActFormat::A8: quantize_a8(x, static_cast<A8Block*>(dst), n / 32); return;
    case ActFormat::A8K: quantize_a8k(x, static_cast<A8KBlock*>(dst), n / 256); return;
  }
}

float h2f(uint16_t h) { return fp16_to_f32(h); }

// Signed quant values of one 32-element block, as ggml defines them.
void unpack_q4_0(const BlockQ4_0& b, int* q) {
  for (int j = 0; j < 16; ++j) q[j] = (b.qs[j] & 0xF) - 8, q[j + 16] = (b.qs[j] >> 4) - 8;
}
void unpack_q4_1(const BlockQ4_1& b, int* q) {
  for (int j = 0; j < 16; ++j) q[j] = b.qs[j] & 0xF, q[j + 16] = b.qs[j] >> 4;
}
void unpack_5(const uint8_t* qs, const uint8_t* qh4, int offset, int* q) {
  const uint32_t qh = load_u32(qh4);
  for (int j = 0; j < 16; ++j) {
    q[j] = int((qs[j] & 0xF) | (((qh >> j) & 1) << 4)) - offset;
    q[j + 16] = int((qs[j] >> 4) | (((qh >> (j + 16)) & 1) << 4)) - offset;
  }
}

int32_t idot32(const int* q, const int8_t* a) {
  int32_t s = 0;
  for (int j = 0; j < 32; ++j) s += q[j] * a[j];
  return s;
}

template <class B, class F>
float ref_a8(int64_t n, const void* wrow, const void* act, F contribution) {
  const B* w = static_cast<const B*>(wrow);
  const A8Block* a = static_cast<const A8Block*>(act);
  Lanes lanes;
  for (int64_t b = 0; b < n / 32; ++b) lanes.add(b, contribution(w[b], a[b]));
  return lanes.reduce();
}

float ref_q8_0(int64_t n, const void* w, const void* a) {
  return ref_a8<BlockQ8_0>(n, w, a, [](const BlockQ8_0& b, const A8Block& x) {
    int q[32];
    for (int j = 0; j < 32; ++j) q[j] = b.qs[j];
    return (h2f(b.d) * x.d) * float(idot32(q, x.q));
  });
}
float ref_q4_0(int64_t n, const void* w, const void* a) {
  return ref_a8<BlockQ4_0>(n, w, a, [](const BlockQ4_0& b, const A8Block& x) {
    int q[32];
    unpack_q4_0(b, q);
    return (h2f(b.d) * x.d) * float(idot32(q, x.q));
  });
}
float ref_q5_0(int64_t n, const void* w, const void* a) {
  return ref_a8<BlockQ5_0>(n, w, a, [](const BlockQ5_0& b, const A8Block& x) {
    int q[32];
    unpack_5(b.qs, b.qh, 16, q);
    return (h2f(b.d) * x.d) * float(idot32(q, x.q));
  });
}
float ref_q4_1(int64_t n, const void* w, const void* a) {
  return ref_a8<BlockQ4_1>(n, w, a, [](const BlockQ4_1& b, const A8Block& x) {
    int q[32];
    unpack_q4_1(b, q);
    return (h2f(b.d) * x.d) * float(idot32(q, x.q)) + h2f(b.m) * (x.d * float(x.sum));
  });
}
float ref_q5_1(int64_t n, const void* w, const void* a) {
  return ref_a8<BlockQ5_1>(n, w, a, [](const BlockQ5_1& b, const A8Block& x) {
    int q[32];
    unpack_5(b.qs, b.qh, 0, q);
    return (h2f(b.d) * x.d) * float(idot32(q, x.q)) + h2f(b.m) * (x.d * float(x.sum));
  });
}

// Q4_K / Q5_K: q[256] unsigned quants in element order, then the canonical combination.
float kmin_contribution(uint16_t d, uint16_t dmin, const uint8_t* scales, const int* q,
                        const A8KBlock& x) {
  int32_t sumi = 0, summ = 0;
  for (int j = 0; j < 8; ++j) {
    int sc, m;
    scale_min_k4(j, scales, &sc, &m);
    int32_t isum = 0;
    for (int l = 0; l < 32; ++l) isum += q[32 * j + l] * x.q[32 * j + l];
    sumi += sc * isum;
    summ += m * (x.bsums[2 * j] + x.bsums[2 * j + 1]);
  }
  return (h2f(d) * x.d) * float(sumi) - (h2f(dmin) * x.d) * float(summ);
}

template <class B, class F>
float ref_a8k(int64_t n, const void* wrow, const void* act, F contribution) {
  const B* w = static_cast<const B*>(wrow);
  const A8KBlock* a = static_cast<const A8KBlock*>(act);
  Lanes lanes;
  for (int64_t b = 0; b < n / 256; ++b) lanes.add(b, contribution(w[b], a[b]));
  return lanes.reduce();
}

float ref_q4_k(int64_t n, const void* w, const void* a) {
  return ref_a8k<BlockQ4_K>(n, w, a, [](const BlockQ4_K& b, const A8KBlock& x) {
    int q[256];
    for (int c = 0; c < 4; ++c)
      for (int l = 0; l < 32; ++l)
        q[64 * c + l] = b.qs[32 * c + l] & 0xF, q[64 * c + 32 + l] = b.qs[32 * c + l] >> 4;
    return kmin_contribution(b.d, b.dmin, b.scales, q, x);
  });
}
float ref_q5_k(int64_t n, const void* w, const void* a) {
  return ref_a8k<BlockQ5_K>(n, w, a, [](const BlockQ5_K& b, const A8KBlock& x) {
    int q[256];
    for (int c = 0; c < 4; ++c)
      for (int l = 0; l < 32; ++l) {
        q[64 * c + l] = (b.qs[32 * c + l] & 0xF) | (((b.qh[l] >> (2 * c)) & 1) << 4);
        q[64 * c + 32 + l] = (b.qs[32 * c + l] >> 4) | (((b.qh[l] >> (2 * c + 1)) & 1) << 4);
      }
    return kmin_contribution(b.d, b.dmin, b.scales, q, x);
  });
}
float ref_q6_k(int64_t n, const void* w, const void* a) {
  return ref_a8k<BlockQ6_K>(n, w, a, [](const BlockQ6_K& b, const A8KBlock& x) {
    int q[256];
    for (int e = 0; e < 256; ++e) {
      const int h = e / 128, k = (e % 128) / 32, l = e % 32;
      const uint8_t ql = b.ql[64 * h + 32 * (k & 1) + l];
      const int lo = k < 2 ? (ql & 0xF) : (ql >> 4);
      q[e] = (lo | (((b.qh[32 * h + l] >> (2 * k)) & 3) << 4)) - 32;
    }
    int32_t sumi = 0;
    for (int j = 0; j < 16; ++j) {
      int32_t isum = 0;
      for (int l = 0; l < 16; ++l) isum += q[16 * j + l] * x.q[16 * j + l];
      sumi += b.scales[j] * isum;
    }
    return (h2f(b.d) * x.d) * float(sumi);
  });
}

// Q2_K / Q3_K: element e = 128n + 32j + l (l < 32) has bits 2j..2j+1 of qs[32n + l]; sub-block
// e / 16. Q3_K subtracts 4 where bit 4n + j of hmask[l] is clear.
int q2_bits(const uint8_t* qs, int e) {
  return (qs[32 * (e / 128) + e % 32] >> (2 * ((e / 32) % 4))) & 3;
}
int32_t isum16(const int* q, const A8KBlock& x, int j) {
  int32_t s = 0;
  for (int l = 0; l < 16; ++l) s += q[16 * j + l] * x.q[16 * j + l];
  return s;
}
float ref_q2_k(int64_t n, const void* w, const void* a) {
  return ref_a8k<BlockQ2_K>(n, w, a, [](const BlockQ2_K& b, const A8KBlock& x) {
    int q[256];
    for (int e = 0; e < 256; ++e) q[e] = q2_bits(b.qs, e);
    int32_t sumi = 0, summ = 0;
    for (int j = 0; j < 16; ++j) {
      sumi += (b.scales[j] & 0xF) * isum16(q, x, j);
      summ += (b.scales[j] >> 4) * x.bsums[j];
    }
    return (h2f(b.d) * x.d) * float(sumi) - (h2f(b.dmin) * x.d) * float(summ);
  });
}
float ref_q3_k(int64_t n, const void* w, const void* a) {
  return ref_a8k<BlockQ3_K>(n, w, a, [](const BlockQ3_K& b, const A8KBlock& x) {
    int q[256];
    for (int e = 0; e < 256; ++e)
      q[e] = q2_bits(b.qs, e) - (((b.hmask[e % 32] >> (4 * (e / 128) + (e / 32) % 4)) & 1) ? 0 : 4);
    int32_t sumi = 0;
    for (int j = 0; j < 16; ++j) sumi += (q3_k_scale(j, b.scales) - 32) * isum16(q, x, j);
    return (h2f(b.d) * x.d) * float(sumi);
  });
}
// IQ4: 32 values of nibbles qs[16] (low nibbles elements 0..15, high 16..31).
void unpack_iq4(const uint8_t* qs, int* q) {
  for (int j = 0; j < 16; ++j) q[j] = kIq4Values[qs[j] & 0xF], q[j + 16] = kIq4Values[qs[j] >> 4];
}
float ref_iq4_nl(int64_t n, const void* w, const void* a) {
  return ref_a8<BlockIQ4_NL>(n, w, a, [](const BlockIQ4_NL& b, const A8Block& x) {
    int q[32];
    unpack_iq4(b.qs, q);
    return (h2f(b.d) * x.d) * float(idot32(q, x.q));
  });
}
float ref_iq4_xs(int64_t n, const void* w, const void* a) {
  return ref_a8k<BlockIQ4_XS>(n, w, a, [](const BlockIQ4_XS& b, const A8KBlock& x) {
    int32_t sumi = 0;
    for (int j = 0; j < 8; ++j) {
      int q[32];
      unpack_iq4(b.qs + 16 * j, q);
      sumi += (iq4_xs_scale(j, b.scales_h, b.scales_l) - 32) * idot32(q, x.q + 32 * j);
    }
    return (h2f(b.d) * x.d) * float(sumi);
  });
}

template <class Conv>
float ref_plain(int64_t n, const uint16_t* w, const float* x, Conv conv) {
  Lanes lanes;
  for (int64_t i = 0; i < n; ++i) lanes.add(i, conv(load_u16(w + i)) * x[i]);
  return lanes.reduce();
}

float scalar_dot_f32(const float* a, const float* b, int64_t n) {
  Lanes lanes;
  for (int64_t i = 0; i < n; ++i) lanes.add(i, a[i] * b[i]);
  return lanes.reduce();
}

float scalar_sum_sq(const float* x, int64_t n) { return scalar_dot_f32(x, x, n); }

void scalar_matmul(GgmlType w, int64_t n, const void* W, size_t w_row_bytes, int64_t r0,
                   int64_t r1, const void* act, size_t act_row_bytes, int64_t ntok, float* y,
                   size_t y_stride) {
  const uint8_t* wb = static_cast<const uint8_t*>(W);
  const uint8_t* ab = static_cast<const uint8_t*>(act);
  for (int64_t t = 0; t < ntok; ++t)
    for (int64_t r = r0; r < r1; ++r)
      y[size_t(t) * y_stride + size_t(r)] =
          ref_dot(w, n, wb + size_t(r) * w_row_bytes, ab + size_t(t) * act_row_bytes);
}

// Elementwise: the shared loops of kernels_elem.h; lane_rows below is written independently
// (one output at a time with canon::reduce_lanes) as the reference for the vectorised ones.
void scalar_lane_rows(const float* e, const float* v, int64_t v_stride, int64_t n, int64_t hd,
                      float* lanes, float* out) {
  (void)lanes;
  for (int64_t d = 0; d < hd; ++d) {
    float l[32] = {};
    for (int64_t j = 0; j < n; ++j) l[j % 32] = l[j % 32] + e[j] * v[j * v_stride + d];
    out[d] = canon::reduce_lanes(l);
  }
}

const Ops kScalarOps = {Isa::Scalar,    scalar_quantize_act, scalar_matmul,  scalar_dot_f32,
                        scalar_sum_sq,  elem::add,           elem::axpy,     elem::scale,
                        elem::scale_mul, elem::exp_sub, elem::silu_mul,
                        elem::gelu_mul, scalar_lane_rows, nullptr,
                        nullptr,        nullptr};

const Isa kAllIsas[] = {Isa::Scalar, Isa::Sse2, Isa::Avx2, Isa::Avx512, Isa::Neon};

}  // namespace

// ---------------------------------------------------------------- public API

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::Scalar: return "scalar";
    case Isa::Sse2: return "sse2";
    case Isa::Avx2: return "avx2";
    case Isa::Avx512: return "avx512";
    case Isa::Neon: return "neon";
  }
  return "unknown";
}

bool isa_available(Isa isa) {
  switch (isa) {
    case Isa::Scalar: return true;
#if GALLEON_X86
    case Isa::Sse2: return true;
    case Isa::Avx2: return x86().avx2;
    case Isa::Avx512: return x86().avx512;
#endif
#if defined(__aarch64__) && defined(GALLEON_HAVE_NEON)
    case Isa::Neon: return true;
#endif
    default: return false;
  }
}

Isa best_isa() {
  for (Isa isa : {Isa::Avx512, Isa::Avx2, Isa::Neon, Isa::Sse2})
    if (isa_available(isa)) return isa;
  return Isa::Scalar;
}

Isa isa_from_env() {
  const char* env = std::getenv("GALLEON_ISA");
  if (!env || !*env) return best_isa();
  std::string available;
  for (Isa isa : kAllIsas) {
    if (!isa_available(isa)) continue;
    if (!available.empty()) available += ", ";
    available += isa_name(isa);
  }
  for (Isa isa : kAllIsas) {
    if (std::string(env) != isa_name(isa)) continue;
    if (isa_available(isa)) return isa;
    fail(ErrorKind::Unsupported, std::string("GALLEON_ISA=") + env +
                                     ": this CPU or build cannot run it; available: " + available);
  }
  fail(ErrorKind::Unsupported, std::string("GALLEON_ISA=") + env +
                                   ": unknown instruction set path; available: " + available);
}

ActFormat act_format(GgmlType w) {
  switch (w) {
    case GgmlType::Q4_0:
    case GgmlType::Q4_1:
    case GgmlType::Q5_0:
    case GgmlType::Q5_1:
    case GgmlType::Q8_0:
    case GgmlType::IQ4_NL: return ActFormat::A8;
    case GgmlType::Q2_K:
    case GgmlType::Q3_K:
    case GgmlType::IQ4_XS:
    case GgmlType::Q4_K:
    case GgmlType::Q5_K:
    case GgmlType::Q6_K: return ActFormat::A8K;
    default: return ActFormat::F32;
  }
}

size_t act_row_bytes(GgmlType w, int64_t n) {
  switch (act_format(w)) {
    case ActFormat::A8: return size_t(n / 32) * sizeof(A8Block);
    case ActFormat::A8K: return size_t(n / 256) * sizeof(A8KBlock);
    case ActFormat::F32: break;
  }
  return size_t(n) * 4;
}

const Ops& ops(Isa isa) {
  if (!isa_available(isa))
    fail(ErrorKind::Unsupported, std::string("instruction set path ") + isa_name(isa) +
                                     " is not available on this CPU or build");
  switch (isa) {
#if GALLEON_X86
    case Isa::Sse2: return sse2::table();
    case Isa::Avx2: return avx2::table();
    case Isa::Avx512: return avx512::table();
#endif
#if defined(__aarch64__) && defined(GALLEON_HAVE_NEON)
    case Isa::Neon: return neon::table();
#endif
    default: return kScalarOps;
  }
}

float ref_dot(GgmlType w, int64_t n, const void* wrow, const void* act) {
  const float* x = static_cast<const float*>(act);
  switch (w) {
    case GgmlType::F32: return scalar_dot_f32(static_cast<const float*>(wrow), x, n);
    case GgmlType::F16:
      return ref_plain(n, static_cast<const uint16_t*>(wrow), x, fp16_to_f32);
    case GgmlType::BF16:
      return ref_plain(n, static_cast<const uint16_t*>(wrow), x, bf16_to_f32);
    case GgmlType::Q8_0: return ref_q8_0(n, wrow, act);
    case GgmlType::Q4_0: return ref_q4_0(n, wrow, act);
    case GgmlType::Q4_1: return ref_q4_1(n, wrow, act);
    case GgmlType::Q5_0: return ref_q5_0(n, wrow, act);
    case GgmlType::Q5_1: return ref_q5_1(n, wrow, act);
    case GgmlType::Q4_K: return ref_q4_k(n, wrow, act);
    case GgmlType::Q5_K: return ref_q5_k(n, wrow, act);
    case GgmlType::Q6_K: return ref_q6_k(n, wrow, act);
    case GgmlType::Q2_K: return ref_q2_k(n, wrow, act);
    case GgmlType::Q3_K: return ref_q3_k(n, wrow, act);
    case GgmlType::IQ4_NL: return ref_iq4_nl(n, wrow, act);
    case GgmlType::IQ4_XS: return ref_iq4_xs(n, wrow, act);
    default: break;
  }
  fail(ErrorKind::Unsupported, std::string("no kernel for weight type ") + type_name(w));
}

}  // namespace galleon::kern
