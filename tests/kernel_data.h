// Random kernel inputs with special values, shared by cuda_emu_test (the CPU emulation) and
// cuda_test (the GPU kernels): weight rows of every type and activation rows.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <iterator>
#include <random>
#include <vector>

#include "runtime/cuda/canon_device.h"
#include "runtime/ggml_type.h"

namespace galleon::testing::kernel_data {

inline const GgmlType kTypes[] = {GgmlType::F32,  GgmlType::F16,  GgmlType::BF16, GgmlType::Q8_0,
                                  GgmlType::Q4_0, GgmlType::Q4_1, GgmlType::Q5_0, GgmlType::Q5_1,
                                  GgmlType::Q4_K, GgmlType::Q5_K, GgmlType::Q6_K, GgmlType::Q2_K,
                                  GgmlType::Q3_K, GgmlType::IQ4_NL, GgmlType::IQ4_XS};

// Special f32 values (NaN with payloads, infinities, signed zeros, subnormals, extremes).
inline const uint32_t kSpecial[] = {0x7fc00000u, 0xffc00001u, 0x7f800001u, 0x7f800000u,
                                    0xff800000u, 0x00000000u, 0x80000000u, 0x00000001u,
                                    0x807fffffu, 0x00400000u, 0x7f7fffffu, 0xff7fffffu,
                                    0x00800000u, 0x3f800000u};

// Activations: mostly N(0, scale), some specials; sometimes a first block of 32 subnormals (so
// that 1/d overflows).
inline std::vector<float> make_activations(std::mt19937& rng, int64_t n, bool specials) {
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::uniform_int_distribution<int> pick(0, 99);
  std::vector<float> x(static_cast<size_t>(n));
  const float scale = std::ldexp(1.0f, int(rng() % 20) - 10);
  for (auto& v : x) v = nd(rng) * scale;
  if (!specials) return x;
  for (auto& v : x)
    if (pick(rng) < 3) v = cdev::from_bits(kSpecial[rng() % std::size(kSpecial)]);
  if (n >= 64 && pick(rng) < 50)
    for (int64_t j = 0; j < 32; ++j) x[size_t(j)] = cdev::from_bits(uint32_t(rng() % 0x7fffffu) | (rng() & 1u) << 31);
  return x;
}

// Weight rows: random bytes, with the fp16 scale fields mostly set to ordinary values (random
// bytes make a NaN or inf scale in one block of 32).
inline std::vector<uint8_t> make_weights(std::mt19937& rng, GgmlType t, int64_t n, int64_t rows) {
  const TypeTraits* tr = type_traits(t);
  const size_t row = size_t(n / tr->block_elems * tr->block_bytes);
  std::vector<uint8_t> w(row * size_t(rows));
  for (auto& b : w) b = uint8_t(rng());
  std::normal_distribution<float> nd(0.0f, 0.02f);
  std::uniform_int_distribution<int> pick(0, 99);
  auto put_half = [&](size_t off) {
    if (pick(rng) < 95) {
      const uint16_t h = f32_to_fp16(nd(rng));
      std::memcpy(&w[off], &h, 2);
    }
  };
  const size_t nblocks = w.size() / size_t(tr->block_bytes);
  for (size_t b = 0; b < nblocks; ++b) {
    const size_t o = b * size_t(tr->block_bytes);
    switch (t) {
      case GgmlType::F32: {
        const float f = pick(rng) < 98 ? nd(rng) : cdev::from_bits(kSpecial[rng() % std::size(kSpecial)]);
        std::memcpy(&w[o], &f, 4);
        break;
      }
      case GgmlType::F16: case GgmlType::Q8_0: case GgmlType::Q4_0: case GgmlType::Q5_0:
      case GgmlType::IQ4_NL: case GgmlType::IQ4_XS:
        put_half(o);
        break;
      case GgmlType::BF16: {
        const uint16_t h = f32_to_bf16(nd(rng));
        if (pick(rng) < 95) std::memcpy(&w[o], &h, 2);
        break;
      }
      case GgmlType::Q4_1: case GgmlType::Q5_1: case GgmlType::Q4_K: case GgmlType::Q5_K:
        put_half(o);
        put_half(o + 2);
        break;
      case GgmlType::Q6_K: put_half(o + 208); break;
      case GgmlType::Q3_K: put_half(o + 108); break;
      case GgmlType::Q2_K:
        put_half(o + 80);
        put_half(o + 82);
        break;
      default: break;
    }
  }
  return w;
}

}  // namespace galleon::testing::kernel_data
