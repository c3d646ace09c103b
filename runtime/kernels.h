// Compute kernels with canonical arithmetic (docs/arithmetic.md): every instruction-set path
// gives the bits of the scalar reference. Selected per process with GALLEON_ISA.
#pragma once

#include <cstddef>
#include <cstdint>

#include "runtime/ggml_type.h"

namespace galleon::kern {

enum class Isa { Scalar = 0, Sse2 = 1, Avx2 = 2, Avx512 = 3, Neon = 4 };
const char* isa_name(Isa isa);
// True when this build has the path and this CPU can run it.
bool isa_available(Isa isa);
// The best available path.
Isa best_isa();
// GALLEON_ISA if set (scalar|sse2|avx2|avx512|neon), else best_isa(). An unknown name or a path
// this CPU/build lacks is an Error(Unsupported) that says which paths are available.
Isa isa_from_env();

// Activation formats. A weight type w is multiplied with activations converted to act_type(w):
//  F32, F16, BF16 weights   -> plain f32 activations
//  Q4_0 Q4_1 Q5_0 Q5_1 Q8_0 IQ4_NL -> A8  blocks of 32:  { float d; int32 sum; int8 q[32]; }
//  Q2_K Q3_K Q4_K Q5_K Q6_K IQ4_XS -> A8K blocks of 256:
//                                     { float d; int16 bsums[16]; int8 q[256]; }
enum class ActFormat { F32, A8, A8K };
ActFormat act_format(GgmlType weight_type);
// Bytes of one converted activation row of n elements for weights of type w.
size_t act_row_bytes(GgmlType weight_type, int64_t n);

struct A8Block {
  float d;
  int32_t sum;  // sum of q
  int8_t q[32];
};
struct A8KBlock {
  float d;
  int16_t bsums[16];  // sums of q[16*j .. 16*j+15]
  int8_t q[256];
};

// Function table of one instruction-set path.
struct Ops {
  Isa isa;
  // x (n floats) -> dst (act_row_bytes(w, n) bytes) in act_format(w).
  void (*quantize_act)(GgmlType w, const float* x, void* dst, int64_t n);
  // For t in [0, ntok), r in [r0, r1):
  //   y[t * y_stride + r] = canonical dot(row r of W, activation row t)
  // W rows are w_row_bytes apart; activation rows are act_row_bytes apart.
  // The value of each y element does not depend on ntok, r0, r1 or tiling.
  void (*matmul)(GgmlType w, int64_t n, const void* W, size_t w_row_bytes, int64_t r0,
                 int64_t r1, const void* act, size_t act_row_bytes, int64_t ntok, float* y,
                 size_t y_stride);
  // Canonical dot product of two f32 vectors, and canonical sum of squares.
  float (*dot_f32)(const float* a, const float* b, int64_t n);
  float (*sum_sq)(const float* x, int64_t n);
  // Elementwise (the value of each element is fixed; paths differ in speed only):
  void (*add)(float* x, const float* y, int64_t n);                              // x += y
  void (*axpy)(float* y, float a, const float* x, int64_t n);                    // y = y + a*x
  void (*scale)(float* x, float s, int64_t n);                                   // x = x*s
  void (*scale_mul)(float* y, const float* x, float s, const float* w, int64_t n);  // y = (x*s)*w
  void (*exp_sub)(float* e, const float* x, float m, int64_t n);                 // e = expf(x-m)
  void (*silu_mul)(float* g, const float* u, int64_t n);                         // g = silu(g)*u
  void (*gelu_mul)(float* g, const float* u, int64_t n);                         // g = gelu(g)*u
  // out[d] = canonical 32-lane sum over j < n of e[j] * v[j*v_stride + d] (lane j mod 32), d < hd;
  // lanes: scratch of 32*hd floats.
  void (*lane_rows)(const float* e, const float* v, int64_t v_stride, int64_t n, int64_t hd,
                    float* lanes, float* out);
  // Prompt GEMM on activations repacked once per matmul (paths without it leave these null).
  // panel_bytes(w, n, ntok): bytes of the panel, 0 when this path does not repack that case.
  // pack_panel packs token group `group` (16 tokens) of the activation rows into the panel;
  // matmul_panel then computes exactly what matmul computes from the same activation rows.
  size_t (*panel_bytes)(GgmlType w, int64_t n, int64_t ntok);
  void (*pack_panel)(GgmlType w, int64_t n, const void* act, size_t act_row_bytes, int64_t ntok,
                     int64_t group, void* panel);
  void (*matmul_panel)(GgmlType w, int64_t n, const void* W, size_t w_row_bytes, int64_t r0,
                       int64_t r1, const void* panel, int64_t ntok, float* y, size_t y_stride);
};

const Ops& ops(Isa isa);  // Error(Unsupported) when !isa_available(isa)

// Scalar reference of one row dot product (the definition every path must match).
float ref_dot(GgmlType w, int64_t n, const void* wrow, const void* act);

}  // namespace galleon::kern
