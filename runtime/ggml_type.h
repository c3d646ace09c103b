// Tensor element types as numbered by GGUF/ggml, their block layouts, and exact fp16/bf16
// conversions. Layouts: docs/gguf.md and docs/arithmetic.md.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>

namespace galleon {

enum class GgmlType : uint32_t {
  F32 = 0, F16 = 1, Q4_0 = 2, Q4_1 = 3, Q5_0 = 6, Q5_1 = 7, Q8_0 = 8, Q8_1 = 9,
  Q2_K = 10, Q3_K = 11, Q4_K = 12, Q5_K = 13, Q6_K = 14, Q8_K = 15,
  IQ2_XXS = 16, IQ2_XS = 17, IQ3_XXS = 18, IQ1_S = 19, IQ4_NL = 20, IQ3_S = 21, IQ2_S = 22,
  IQ4_XS = 23, I8 = 24, I16 = 25, I32 = 26, I64 = 27, F64 = 28, IQ1_M = 29, BF16 = 30,
  TQ1_0 = 34, TQ2_0 = 35,
};

struct TypeTraits {
  const char* name;      // "f32", "q4_K", ... as ggml names them
  int64_t block_elems;   // elements per block (1 for plain types)
  int64_t block_bytes;   // bytes per block
  bool runnable;         // the engine can compute with weights of this type
};

// Traits of a type id read from a file; nullptr when the id is unknown.
const TypeTraits* type_traits(uint32_t type_id);
inline const TypeTraits* type_traits(GgmlType t) { return type_traits(static_cast<uint32_t>(t)); }
const char* type_name(GgmlType t);
// Parses "f32", "q4_K", "Q4_K" (case-insensitive); nullopt when unknown.
std::optional<GgmlType> type_from_name(const char* name);

// Bytes taken by a row of n elements of type t. Returns false when n is not a whole number of
// blocks or the size overflows.
bool row_bytes(GgmlType t, int64_t n, uint64_t* out);

// Exact conversions (IEEE binary16 / bfloat16 <-> binary32). f32 -> f16/bf16 rounds to nearest
// even; NaN stays NaN.
float fp16_to_f32(uint16_t h);
uint16_t f32_to_fp16(float f);
float bf16_to_f32(uint16_t h);
uint16_t f32_to_bf16(float f);

}  // namespace galleon
