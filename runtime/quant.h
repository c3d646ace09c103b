// Row conversion between f32 and the ggml tensor types the engine runs (F32, F16, BF16, Q8_0,
// Q4_0, Q4_1, Q5_0, Q5_1, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, IQ4_NL, IQ4_XS). Block layouts are
// ggml's, byte for byte (docs/arithmetic.md); dequantization gives the values ggml gives.
#pragma once

#include <cstdint>

#include "runtime/ggml_type.h"

namespace galleon {

// n must be a whole number of blocks of t. Error(Unsupported) for types not listed above.
void dequantize_row(GgmlType t, const void* src, float* dst, int64_t n);
// Reference quantizer (deterministic, simple min/max per sub-block); used to make test models.
void quantize_row(GgmlType t, const float* src, void* dst, int64_t n);

}  // namespace galleon
