#include "runtime/ggml_type.h"

#include <cstring>
#include <limits>

namespace galleon {
namespace {

struct Entry {
  uint32_t id;
  TypeTraits traits;
};

constexpr Entry kTypes[] = {
    {0, {"f32", 1, 4, true}},        {1, {"f16", 1, 2, true}},
    {2, {"q4_0", 32, 18, true}},     {3, {"q4_1", 32, 20, true}},
    {6, {"q5_0", 32, 22, true}},     {7, {"q5_1", 32, 24, true}},
    {8, {"q8_0", 32, 34, true}},     {9, {"q8_1", 32, 36, false}},
    {10, {"q2_K", 256, 84, true}},   {11, {"q3_K", 256, 110, true}},
    {12, {"q4_K", 256, 144, true}},  {13, {"q5_K", 256, 176, true}},
    {14, {"q6_K", 256, 210, true}},  {15, {"q8_K", 256, 292, false}},
    {16, {"iq2_xxs", 256, 66, false}}, {17, {"iq2_xs", 256, 74, false}},
    {18, {"iq3_xxs", 256, 98, false}}, {19, {"iq1_s", 256, 50, false}},
    {20, {"iq4_nl", 32, 18, true}},   {21, {"iq3_s", 256, 110, false}},
    {22, {"iq2_s", 256, 82, false}},   {23, {"iq4_xs", 256, 136, true}},
    {24, {"i8", 1, 1, false}},         {25, {"i16", 1, 2, false}},
    {26, {"i32", 1, 4, false}},        {27, {"i64", 1, 8, false}},
    {28, {"f64", 1, 8, false}},        {29, {"iq1_m", 256, 56, false}},
    {30, {"bf16", 1, 2, true}},        {34, {"tq1_0", 256, 54, false}},
    {35, {"tq2_0", 256, 66, false}},
};

uint32_t f32_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
float bits_f32(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

}  // namespace

const TypeTraits* type_traits(uint32_t type_id) {
  for (const Entry& e : kTypes)
    if (e.id == type_id) return &e.traits;
  return nullptr;
}

const char* type_name(GgmlType t) {
  const TypeTraits* tr = type_traits(t);
  return tr ? tr->name : "unknown";
}

std::optional<GgmlType> type_from_name(const char* name) {
  for (const Entry& e : kTypes) {
    const char* a = e.traits.name;
    const char* b = name;
    while (*a && *b) {
      char x = *a, y = *b;
      if (x >= 'A' && x <= 'Z') x = char(x - 'A' + 'a');
      if (y >= 'A' && y <= 'Z') y = char(y - 'A' + 'a');
      if (x != y) break;
      ++a, ++b;
    }
    if (!*a && !*b) return static_cast<GgmlType>(e.id);
  }
  return std::nullopt;
}

bool row_bytes(GgmlType t, int64_t n, uint64_t* out) {
  const TypeTraits* tr = type_traits(t);
  if (!tr || n < 0 || n % tr->block_elems != 0) return false;
  uint64_t blocks = uint64_t(n / tr->block_elems);
  if (blocks > std::numeric_limits<uint64_t>::max() / uint64_t(tr->block_bytes)) return false;
  *out = blocks * uint64_t(tr->block_bytes);
  return true;
}

float fp16_to_f32(uint16_t h) {
  uint32_t sign = uint32_t(h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1f;
  uint32_t mant = h & 0x3ffu;
  if (exp == 0x1f) return bits_f32(sign | 0x7f800000u | (mant << 13));  // inf / nan
  if (exp == 0) {
    if (mant == 0) return bits_f32(sign);
    // Subnormal: value = mant * 2^-24, exactly representable in f32.
    int e = -1;
    do {
      mant <<= 1;
      ++e;
    } while ((mant & 0x400u) == 0);
    mant &= 0x3ffu;
    return bits_f32(sign | uint32_t(127 - 15 - e) << 23 | (mant << 13));
  }
  return bits_f32(sign | (exp + 127 - 15) << 23 | (mant << 13));
}

uint16_t f32_to_fp16(float f) {
  uint32_t x = f32_bits(f);
  uint32_t sign = (x >> 16) & 0x8000u;
  uint32_t exp = (x >> 23) & 0xff;
  uint32_t mant = x & 0x7fffffu;
  if (exp == 0xff) return uint16_t(sign | 0x7c00u | (mant ? 0x200u : 0));
  int32_t e = int32_t(exp) - 127 + 15;
  if (e >= 0x1f) return uint16_t(sign | 0x7c00u);
  if (e <= 0) {
    if (e < -10) return uint16_t(sign);
    mant |= 0x800000u;
    uint32_t shift = uint32_t(14 - e);
    uint32_t half = mant >> shift;
    uint32_t rem = mant & ((1u << shift) - 1);
    uint32_t mid = 1u << (shift - 1);
    if (rem > mid || (rem == mid && (half & 1))) ++half;
    return uint16_t(sign | half);
  }
  uint32_t half = uint32_t(e) << 10 | (mant >> 13);
  uint32_t rem = mant & 0x1fffu;
  if (rem > 0x1000u || (rem == 0x1000u && (half & 1))) ++half;  // may carry into inf: correct
  return uint16_t(sign | half);
}

float bf16_to_f32(uint16_t h) { return bits_f32(uint32_t(h) << 16); }

uint16_t f32_to_bf16(float f) {
  uint32_t x = f32_bits(f);
  if ((x & 0x7fffffffu) > 0x7f800000u) return uint16_t((x >> 16) | 0x40);  // quiet nan
  uint32_t rounding = 0x7fffu + ((x >> 16) & 1);
  return uint16_t((x + rounding) >> 16);
}

}  // namespace galleon
