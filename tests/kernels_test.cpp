// Tensor types (ggml block layouts, reference quantizer) and the kernels' canonical arithmetic:
// every instruction-set path must give the scalar reference's bits.
#include <gtest/gtest.h>

#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "runtime/error.h"
#include "runtime/ggml_type.h"
#include "runtime/kernels.h"
#include "runtime/quant.h"
#include "runtime/threadpool.h"

namespace galleon {
// How GoogleTest prints a type parameter (--gtest_list_tests, failures): its name.
void PrintTo(GgmlType t, std::ostream* os) { *os << type_name(t); }

namespace {

using kern::Isa;

uint32_t bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
float from_bits(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

const GgmlType kRunnable[] = {GgmlType::F32,  GgmlType::F16,  GgmlType::BF16, GgmlType::Q8_0,
                              GgmlType::Q4_0, GgmlType::Q4_1, GgmlType::Q5_0, GgmlType::Q5_1,
                              GgmlType::Q4_K, GgmlType::Q5_K, GgmlType::Q6_K, GgmlType::Q2_K,
                              GgmlType::Q3_K, GgmlType::IQ4_NL, GgmlType::IQ4_XS};

std::vector<Isa> available_isas() {
  std::vector<Isa> v;
  for (Isa isa : {Isa::Scalar, Isa::Sse2, Isa::Avx2, Isa::Avx512, Isa::Neon})
    if (kern::isa_available(isa)) v.push_back(isa);
  return v;
}

size_t wrow_bytes(GgmlType t, int64_t n) {
  uint64_t b = 0;
  EXPECT_TRUE(row_bytes(t, n, &b));
  return size_t(b);
}

void put16(std::vector<uint8_t>& v, size_t off, uint16_t h) { std::memcpy(&v[off], &h, 2); }

std::vector<float> deq(GgmlType t, const std::vector<uint8_t>& blk, int64_t n) {
  std::vector<float> y(static_cast<size_t>(n));
  dequantize_row(t, blk.data(), y.data(), n);
  return y;
}

// ------------------------------------------------------------ hand-built blocks

TEST(Dequantize, Q4_0NibbleOrder) {
  std::vector<uint8_t> b(18);
  put16(b, 0, f32_to_fp16(0.5f));
  for (int j = 0; j < 16; ++j) b[2 + j] = uint8_t(j | ((15 - j) << 4));
  auto y = deq(GgmlType::Q4_0, b, 32);
  for (int j = 0; j < 16; ++j) {
    EXPECT_EQ(y[j], float(j - 8) * 0.5f) << j;
    EXPECT_EQ(y[j + 16], float(7 - j) * 0.5f) << j;
  }
}

TEST(Dequantize, Q4_1) {
  std::vector<uint8_t> b(20);
  put16(b, 0, f32_to_fp16(0.25f));
  put16(b, 2, f32_to_fp16(-1.0f));
  for (int j = 0; j < 16; ++j) b[4 + j] = uint8_t(j | (3 << 4));
  auto y = deq(GgmlType::Q4_1, b, 32);
  for (int j = 0; j < 16; ++j) {
    EXPECT_EQ(y[j], float(j) * 0.25f - 1.0f);
    EXPECT_EQ(y[j + 16], 3 * 0.25f - 1.0f);
  }
}

TEST(Dequantize, Q5_0HighBits) {
  std::vector<uint8_t> b(22);
  put16(b, 0, f32_to_fp16(2.0f));
  const uint32_t qh = 0x8001F00Fu;  // high bit of elements 0-3, 12-16, 31
  std::memcpy(&b[2], &qh, 4);
  for (int j = 0; j < 16; ++j) b[6 + j] = uint8_t((j & 15) | ((j ^ 5) << 4));
  auto y = deq(GgmlType::Q5_0, b, 32);
  for (int e = 0; e < 32; ++e) {
    const int lo = e < 16 ? e : ((e - 16) ^ 5);
    const int q = lo + (((qh >> e) & 1) ? 16 : 0) - 16;
    EXPECT_EQ(y[e], float(q) * 2.0f) << e;
  }
}

TEST(Dequantize, Q5_1HighBits) {
  std::vector<uint8_t> b(24);
  put16(b, 0, f32_to_fp16(0.5f));
  put16(b, 2, f32_to_fp16(3.0f));
  const uint32_t qh = 0x12345678u;
  std::memcpy(&b[4], &qh, 4);
  for (int j = 0; j < 16; ++j) b[8 + j] = uint8_t((15 - j) | (j << 4));
  auto y = deq(GgmlType::Q5_1, b, 32);
  for (int e = 0; e < 32; ++e) {
    const int lo = e < 16 ? 15 - e : e - 16;
    const int q = lo + (((qh >> e) & 1) ? 16 : 0);
    EXPECT_EQ(y[e], float(q) * 0.5f + 3.0f) << e;
  }
}

TEST(Dequantize, Q8_0) {
  std::vector<uint8_t> b(34);
  put16(b, 0, f32_to_fp16(0.125f));
  for (int j = 0; j < 32; ++j) b[2 + j] = uint8_t(int8_t(j * 8 - 128));
  auto y = deq(GgmlType::Q8_0, b, 32);
  for (int j = 0; j < 32; ++j) EXPECT_EQ(y[j], float(j * 8 - 128) * 0.125f);
}

// Sub-block scales/mins of the K-quant tests: values above 15 exercise the packed high bits.
const int kSc[8] = {1, 63, 7, 32, 17, 48, 5, 60};
const int kMin[8] = {0, 5, 63, 16, 33, 2, 47, 31};

// Packs 6-bit scales/mins the way ggml stores them (written out byte by byte).
void pack_k_scales(uint8_t* s) {
  for (int k = 0; k < 4; ++k) {
    s[k] = uint8_t((kSc[k] & 63) | ((kSc[k + 4] >> 4) << 6));
    s[k + 4] = uint8_t((kMin[k] & 63) | ((kMin[k + 4] >> 4) << 6));
    s[k + 8] = uint8_t((kSc[k + 4] & 15) | ((kMin[k + 4] & 15) << 4));
  }
}

TEST(Dequantize, Q4_KScalePacking) {
  std::vector<uint8_t> b(144);
  put16(b, 0, f32_to_fp16(0.5f));
  put16(b, 2, f32_to_fp16(0.25f));
  pack_k_scales(&b[4]);
  // Hand-check two packed bytes: scales[0] = 1 | (17>>4)<<6 = 0x41; scales[8] = (17&15) | (33&15)<<4.
  EXPECT_EQ(b[4], 0x41);
  EXPECT_EQ(b[12], 0x11);
  for (int i = 0; i < 128; ++i) b[16 + i] = uint8_t((i * 7) & 0xFF);
  auto y = deq(GgmlType::Q4_K, b, 256);
  for (int e = 0; e < 256; ++e) {
    const int chunk = e / 64, l = e % 32, hi = (e % 64) / 32, j = e / 32;
    const uint8_t byte = uint8_t((32 * chunk + l) * 7);
    const int q = hi ? byte >> 4 : byte & 15;
    const float want = (0.5f * float(kSc[j])) * float(q) - 0.25f * float(kMin[j]);
    EXPECT_EQ(y[e], want) << e;
  }
}

TEST(Dequantize, Q5_KScalePackingAndHighBits) {
  std::vector<uint8_t> b(176);
  put16(b, 0, f32_to_fp16(0.75f));
  put16(b, 2, f32_to_fp16(0.125f));
  pack_k_scales(&b[4]);
  for (int l = 0; l < 32; ++l) b[16 + l] = uint8_t(l * 37 + 11);  // qh
  for (int i = 0; i < 128; ++i) b[48 + i] = uint8_t(i * 5 + 3);
  auto y = deq(GgmlType::Q5_K, b, 256);
  for (int e = 0; e < 256; ++e) {
    const int chunk = e / 64, l = e % 32, hi = (e % 64) / 32, j = e / 32;
    const uint8_t byte = uint8_t((32 * chunk + l) * 5 + 3);
    const uint8_t qh = uint8_t(l * 37 + 11);
    const int q = (hi ? byte >> 4 : byte & 15) + (((qh >> (2 * chunk + hi)) & 1) ? 16 : 0);
    const float want = (0.75f * float(kSc[j])) * float(q) - 0.125f * float(kMin[j]);
    EXPECT_EQ(y[e], want) << e;
  }
}

TEST(Dequantize, Q6_K) {
  std::vector<uint8_t> b(210);
  for (int i = 0; i < 128; ++i) b[i] = uint8_t(i * 13 + 1);        // ql
  for (int i = 0; i < 64; ++i) b[128 + i] = uint8_t(i * 29 + 7);   // qh
  const int8_t sc[16] = {1, -1, 127, -128, 5, 9, -17, 33, 64, -64, 2, 3, 100, -100, 0, 77};
  std::memcpy(&b[192], sc, 16);
  put16(b, 208, f32_to_fp16(0.0625f));
  auto y = deq(GgmlType::Q6_K, b, 256);
  for (int e = 0; e < 256; ++e) {
    const int half = e / 128, quad = (e % 128) / 32, l = e % 32;
    const uint8_t ql = uint8_t((64 * half + 32 * (quad % 2) + l) * 13 + 1);
    const uint8_t qh = uint8_t((32 * half + l) * 29 + 7);
    const int lo = quad < 2 ? ql & 15 : ql >> 4;
    const int q = (lo | (((qh >> (2 * quad)) & 3) << 4)) - 32;
    const float want = 0.0625f * float(sc[e / 16]) * float(q);
    EXPECT_EQ(y[e], want) << e;
  }
}

// Q2_K / Q3_K: element e = 128n + 32j + 16h + l, 2 bits 2j.. of qs[32n + 16h + l] (ggml's
// dequantize_row_q2_K loops, written out).
int q2_low_bits(const uint8_t* qs, int e) {
  const int n = e / 128, j = (e % 128) / 32, h = (e % 32) / 16, l = e % 16;
  return (qs[32 * n + 16 * h + l] >> (2 * j)) & 3;
}

TEST(Dequantize, Q2_K) {
  std::vector<uint8_t> b(84);
  for (int j = 0; j < 16; ++j) b[j] = uint8_t((j * 7 + 3) & 0xFF);  // scale j*7+3 & 15, min >> 4
  for (int i = 0; i < 64; ++i) b[16 + i] = uint8_t(i * 37 + 5);
  put16(b, 80, f32_to_fp16(0.5f));
  put16(b, 82, f32_to_fp16(0.125f));
  auto y = deq(GgmlType::Q2_K, b, 256);
  for (int e = 0; e < 256; ++e) {
    const int sc = b[e / 16];
    const float want = (0.5f * float(sc & 15)) * float(q2_low_bits(&b[16], e)) -
                       0.125f * float(sc >> 4);
    EXPECT_EQ(y[e], want) << e;
  }
}

TEST(Dequantize, Q3_KScalePackingAndHighBits) {
  std::vector<uint8_t> b(110);
  for (int i = 0; i < 32; ++i) b[i] = uint8_t(i * 53 + 17);       // hmask
  for (int i = 0; i < 64; ++i) b[32 + i] = uint8_t(i * 29 + 1);   // qs
  for (int i = 0; i < 12; ++i) b[96 + i] = uint8_t(i * 71 + 45);  // scales
  put16(b, 108, f32_to_fp16(0.25f));
  // ggml's unpacking of the 12 scale bytes into 16 bytes (4 little-endian words).
  uint32_t aux[4];
  std::memcpy(aux, &b[96], 12);
  const uint32_t tmp = aux[2], m2 = 0x0f0f0f0fu, m1 = 0x03030303u;
  aux[2] = ((aux[0] >> 4) & m2) | (((tmp >> 4) & m1) << 4);
  aux[3] = ((aux[1] >> 4) & m2) | (((tmp >> 6) & m1) << 4);
  aux[0] = (aux[0] & m2) | (((tmp >> 0) & m1) << 4);
  aux[1] = (aux[1] & m2) | (((tmp >> 2) & m1) << 4);
  int8_t sc[16];
  std::memcpy(sc, aux, 16);
  auto y = deq(GgmlType::Q3_K, b, 256);
  for (int e = 0; e < 256; ++e) {
    const int n = e / 128, j = (e % 128) / 32, l = e % 32;
    const int q = q2_low_bits(&b[32], e) - (((b[l] >> (4 * n + j)) & 1) ? 0 : 4);
    const float want = (0.25f * float(sc[e / 16] - 32)) * float(q);
    EXPECT_EQ(y[e], want) << e;
  }
}

const int kIq4[16] = {-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113};

TEST(Dequantize, IQ4_NL) {
  std::vector<uint8_t> b(18);
  put16(b, 0, f32_to_fp16(0.5f));
  for (int j = 0; j < 16; ++j) b[2 + j] = uint8_t(j | ((15 - j) << 4));
  auto y = deq(GgmlType::IQ4_NL, b, 32);
  for (int j = 0; j < 16; ++j) {
    EXPECT_EQ(y[j], 0.5f * float(kIq4[j])) << j;
    EXPECT_EQ(y[j + 16], 0.5f * float(kIq4[15 - j])) << j;
  }
}

TEST(Dequantize, IQ4_XSScalePacking) {
  std::vector<uint8_t> b(136);
  put16(b, 0, f32_to_fp16(0.125f));
  const int ls[8] = {0, 63, 32, 17, 48, 5, 60, 33};
  uint16_t sh = 0;
  for (int j = 0; j < 8; ++j) {
    b[4 + j / 2] = uint8_t(b[4 + j / 2] | ((ls[j] & 15) << (4 * (j % 2))));
    sh = uint16_t(sh | ((ls[j] >> 4) << (2 * j)));
  }
  put16(b, 2, sh);
  for (int i = 0; i < 128; ++i) b[8 + i] = uint8_t(i * 11 + 3);
  auto y = deq(GgmlType::IQ4_XS, b, 256);
  for (int e = 0; e < 256; ++e) {
    const int j = e / 32, l = e % 32;
    const uint8_t byte = b[8 + 16 * j + l % 16];
    const int v = kIq4[l < 16 ? byte & 15 : byte >> 4];
    EXPECT_EQ(y[e], (0.125f * float(ls[j] - 32)) * float(v)) << e;
  }
}

TEST(Dequantize, PlainTypes) {
  const float x[4] = {1.5f, -0.0f, 65504.0f, 1e-7f};
  for (GgmlType t : {GgmlType::F32, GgmlType::F16, GgmlType::BF16}) {
    std::vector<uint8_t> buf(16);
    quantize_row(t, x, buf.data(), 4);
    auto y = deq(t, buf, 4);
    for (int i = 0; i < 4; ++i) {
      const float want = t == GgmlType::F32   ? x[i]
                         : t == GgmlType::F16 ? fp16_to_f32(f32_to_fp16(x[i]))
                                              : bf16_to_f32(f32_to_bf16(x[i]));
      EXPECT_EQ(bits(y[i]), bits(want)) << type_name(t) << " " << i;
    }
  }
}

TEST(Dequantize, RejectsUnsupportedAndPartialBlocks) {
  float y[32];
  uint8_t b[64] = {};
  try {
    dequantize_row(GgmlType::IQ2_XXS, b, y, 256);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::Unsupported);
  }
  EXPECT_THROW(dequantize_row(GgmlType::Q8_0, b, y, 31), Error);
}

// ------------------------------------------------------------ round trip

TEST(Quantize, RoundTripErrorBounds) {
  std::mt19937 rng(7);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  const int64_t n = 1024;
  std::vector<float> x(n);
  for (auto& v : x) v = nd(rng);
  struct Case {
    GgmlType t;
    double max_rel;  // of the block's max |x|
    double rms;      // of the row's rms
  };
  const Case cases[] = {
      {GgmlType::F32, 0, 0},        {GgmlType::F16, 1e-3, 1e-3},   {GgmlType::BF16, 8e-3, 8e-3},
      {GgmlType::Q8_0, 0.006, 0.01}, {GgmlType::Q4_0, 0.1, 0.15},  {GgmlType::Q4_1, 0.07, 0.12},
      {GgmlType::Q5_0, 0.05, 0.07},  {GgmlType::Q5_1, 0.035, 0.06}, {GgmlType::Q4_K, 0.1, 0.15},
      {GgmlType::Q5_K, 0.05, 0.07},  {GgmlType::Q6_K, 0.05, 0.04},  {GgmlType::Q2_K, 0.3, 0.4},
      {GgmlType::Q3_K, 0.25, 0.2},   {GgmlType::IQ4_NL, 0.1, 0.1},   {GgmlType::IQ4_XS, 0.12, 0.1},
  };
  double amax = 0;
  double ss = 0;
  for (float v : x) amax = std::max(amax, double(std::fabs(v))), ss += double(v) * v;
  const double rms = std::sqrt(ss / n);
  for (const Case& c : cases) {
    std::vector<uint8_t> q(wrow_bytes(c.t, n));
    quantize_row(c.t, x.data(), q.data(), n);
    auto y = deq(c.t, q, n);
    double max_err = 0, es = 0;
    for (int64_t i = 0; i < n; ++i) {
      const double e = std::fabs(double(y[i]) - x[i]);
      max_err = std::max(max_err, e);
      es += e * e;
    }
    EXPECT_LE(max_err, c.max_rel * amax) << type_name(c.t);
    EXPECT_LE(std::sqrt(es / n), c.rms * rms) << type_name(c.t);
  }
}

TEST(Quantize, Deterministic) {
  std::vector<float> x(512);
  for (size_t i = 0; i < x.size(); ++i) x[i] = std::sin(float(i) * 0.37f) * float(i % 7);
  for (GgmlType t : kRunnable) {
    std::vector<uint8_t> a(wrow_bytes(t, 512)), b(a.size());
    quantize_row(t, x.data(), a.data(), 512);
    quantize_row(t, x.data(), b.data(), 512);
    EXPECT_EQ(a, b) << type_name(t);
  }
}

// ------------------------------------------------------------ ISA equivalence

std::vector<float> random_floats(std::mt19937& rng, int64_t n, float scale = 1.0f) {
  std::normal_distribution<float> nd(0.0f, scale);
  std::vector<float> v(static_cast<size_t>(n));
  for (auto& x : v) x = nd(rng);
  return v;
}

// A weight matrix of `rows` rows: either quantized random floats or random bytes (which hold
// extreme scales, inf and nan; still must match bit for bit).
std::vector<uint8_t> random_weights(std::mt19937& rng, GgmlType t, int64_t n, int64_t rows,
                                    bool raw_bytes) {
  const size_t rb = wrow_bytes(t, n);
  std::vector<uint8_t> w(rb * size_t(rows) + 64);
  if (raw_bytes && t != GgmlType::F32) {
    for (auto& b : w) b = uint8_t(rng());
    return w;
  }
  for (int64_t r = 0; r < rows; ++r) {
    auto x = random_floats(rng, n, 0.05f);
    quantize_row(t, x.data(), w.data() + size_t(r) * rb, n);
  }
  return w;
}

int64_t block_of(GgmlType t) { return type_traits(t)->block_elems; }

void check_matmul(GgmlType t, int64_t n, int64_t rows, int64_t ntok, bool raw, uint32_t seed) {
  SCOPED_TRACE(std::string(type_name(t)) + " n=" + std::to_string(n) + " rows=" +
               std::to_string(rows) + " ntok=" + std::to_string(ntok) + (raw ? " raw" : ""));
  std::mt19937 rng(seed);
  const size_t rb = wrow_bytes(t, n);
  auto w = random_weights(rng, t, n, rows, raw);
  const size_t ab = kern::act_row_bytes(t, n);
  std::vector<float> x = random_floats(rng, n * ntok);
  std::vector<uint8_t> act(ab * size_t(ntok));
  const auto& ref_ops = kern::ops(Isa::Scalar);
  for (int64_t i = 0; i < ntok; ++i)
    ref_ops.quantize_act(t, x.data() + n * i, act.data() + ab * size_t(i), n);
  const size_t ys = size_t(rows) + 3;
  std::vector<float> want(ys * size_t(ntok), -1.0f);
  for (int64_t i = 0; i < ntok; ++i)
    for (int64_t r = 0; r < rows; ++r)
      want[size_t(i) * ys + size_t(r)] = kern::ref_dot(t, n, w.data() + rb * size_t(r), act.data() + ab * size_t(i));
  for (Isa isa : available_isas()) {
    const auto& o = kern::ops(isa);
    std::vector<uint8_t> act2(ab * size_t(ntok));
    for (int64_t i = 0; i < ntok; ++i)
      o.quantize_act(t, x.data() + n * i, act2.data() + ab * size_t(i), n);
    ASSERT_EQ(act, act2) << "quantize_act differs on " << kern::isa_name(isa);
    // Odd row splits: [0, a), [a, b), [b, rows).
    std::vector<float> y(ys * size_t(ntok), -1.0f);
    const int64_t a = rows / 3, b = rows - 1;
    const int64_t splits[] = {0, a, b, rows};
    for (int s = 0; s < 3; ++s)
      o.matmul(t, n, w.data(), rb, splits[s], splits[s + 1], act2.data(), ab, ntok, y.data(), ys);
    for (size_t i = 0; i < y.size(); ++i)
      ASSERT_EQ(bits(y[i]), bits(want[i]))
          << kern::isa_name(isa) << " tok " << i / ys << " row " << i % ys << ": " << y[i]
          << " vs " << want[i];
    // Each token alone must give the same bits (batch invariance).
    if (ntok > 1) {
      std::vector<float> y1(ys, -1.0f);
      o.matmul(t, n, w.data(), rb, 0, rows, act2.data() + ab * size_t(ntok - 1), ab, 1, y1.data(), ys);
      for (int64_t r = 0; r < rows; ++r)
        ASSERT_EQ(bits(y1[size_t(r)]), bits(want[size_t(ntok - 1) * ys + size_t(r)])) << kern::isa_name(isa);
    }
  }
}

class PerType : public ::testing::TestWithParam<GgmlType> {};

TEST_P(PerType, MatmulBitIdenticalAcrossIsas) {
  const GgmlType t = GetParam();
  const int64_t blk = block_of(t);
  std::vector<int64_t> ns;
  if (blk == 1) ns = {1, 7, 31, 32, 33, 100, 256, 1000, 2051};
  // 32-blocks: also last lane groups of 16 + 8, 16 + 4 and 16 + 13 blocks (decode's half groups).
  else if (blk == 32) ns = {32, 64, 96, 256, 1024, 32 * 33, 32 * 70 + 32 * 7, 32 * 24, 32 * 20, 32 * 29};
  else ns = {256, 512, 768, 256 * 9, 256 * 33, 256 * 40};
  uint32_t seed = 1;
  for (int64_t n : ns)
    for (int64_t ntok : {1, 2, 3, 5, 8, 17, 40, 100}) check_matmul(t, n, 13, ntok, false, seed++);
  for (int64_t n : ns) check_matmul(t, n, 9, 5, true, seed++);
  check_matmul(t, blk == 1 ? 96 : blk * 3, 67, 17, false, seed++);
  // Rows long enough that the prompt GEMM walks them in several chunks (a few rows each).
  check_matmul(t, blk == 1 ? 8192 : blk == 32 ? 32 * 2000 : 256 * 250, 45, 20, false, seed++);
}

TEST_P(PerType, QuantizeActSpecialValues) {
  const GgmlType t = GetParam();
  const int64_t n = 512;
  std::vector<float> x(n);
  std::mt19937 rng(99);
  for (int64_t i = 0; i < n; ++i) x[size_t(i)] = std::normal_distribution<float>(0, 1)(rng);
  x[3] = INFINITY;
  x[40] = NAN;
  x[70] = -INFINITY;
  for (int i = 96; i < 128; ++i) x[size_t(i)] = from_bits(uint32_t(i * 977));  // subnormals
  x[130] = -0.0f;
  for (int i = 160; i < 192; ++i) x[size_t(i)] = 0.0f;
  x[300] = 1e38f, x[301] = -3e38f;
  const size_t ab = kern::act_row_bytes(t, n);
  std::vector<uint8_t> want(ab);
  kern::ops(Isa::Scalar).quantize_act(t, x.data(), want.data(), n);
  for (Isa isa : available_isas()) {
    std::vector<uint8_t> got(ab);
    kern::ops(isa).quantize_act(t, x.data(), got.data(), n);
    EXPECT_EQ(got, want) << kern::isa_name(isa);
  }
}

// The dot product's element order and scales are the dequantization's: ref_dot equals the sum
// of the dequantized weights times the activations as quantized (d * q), to float rounding.
TEST_P(PerType, DotAgreesWithDequantizedWeights) {
  const GgmlType t = GetParam();
  const int64_t n = 1024;
  std::mt19937 rng(5);
  for (int rep = 0; rep < 20; ++rep) {
    auto w = random_weights(rng, t, n, 1, false);
    std::vector<float> wd(n);
    dequantize_row(t, w.data(), wd.data(), n);
    const std::vector<float> x = random_floats(rng, n);
    std::vector<uint8_t> act(kern::act_row_bytes(t, n));
    kern::ops(Isa::Scalar).quantize_act(t, x.data(), act.data(), n);
    std::vector<double> xd(n);
    for (int64_t i = 0; i < n; ++i) {
      switch (kern::act_format(t)) {
        case kern::ActFormat::F32: xd[i] = x[i]; break;
        case kern::ActFormat::A8: {
          const auto& b = reinterpret_cast<const kern::A8Block*>(act.data())[i / 32];
          xd[i] = double(b.d) * b.q[i % 32];
          break;
        }
        case kern::ActFormat::A8K: {
          const auto& b = reinterpret_cast<const kern::A8KBlock*>(act.data())[i / 256];
          xd[i] = double(b.d) * b.q[i % 256];
          break;
        }
      }
    }
    double want = 0, mag = 0;
    for (int64_t i = 0; i < n; ++i) want += double(wd[i]) * xd[i], mag += std::fabs(wd[i] * xd[i]);
    const float got = kern::ref_dot(t, n, w.data(), act.data());
    EXPECT_NEAR(got, want, 1e-5 * mag + 1e-30) << type_name(t) << " rep " << rep;
  }
}

INSTANTIATE_TEST_SUITE_P(Types, PerType, ::testing::ValuesIn(kRunnable),
                         [](const auto& info) { return std::string(type_name(info.param)); });

TEST(Kernels, ActivationQuantizationRule) {
  float x[32];
  for (int j = 0; j < 32; ++j) x[j] = float(j - 16) * 0.5f;  // amax 8
  x[5] = 2.5f * 8.0f / 127.0f;                               // exactly halfway-ish values
  kern::A8Block b;
  kern::ops(Isa::Scalar).quantize_act(GgmlType::Q8_0, x, &b, 32);
  EXPECT_EQ(b.d, 8.0f / 127.0f);
  const float id = 1.0f / b.d;
  int sum = 0;
  for (int j = 0; j < 32; ++j) {
    EXPECT_EQ(b.q[j], int8_t(std::nearbyint(x[j] * id))) << j;
    sum += b.q[j];
  }
  EXPECT_EQ(b.sum, sum);
}

TEST(Kernels, DotF32SpecialValuesBitwise) {
  std::mt19937 rng(5);
  for (int64_t n : {1, 5, 31, 32, 33, 64, 100, 257, 1031}) {
    auto a = random_floats(rng, n), b = random_floats(rng, n);
    for (int variant = 0; variant < 6; ++variant) {
      auto aa = a, bb = b;
      const size_t k = size_t(n) / 2;
      if (variant == 1) aa[k] = INFINITY;
      if (variant == 2) aa[k] = NAN, bb[0] = -NAN;
      if (variant == 3) aa[k] = INFINITY, aa[size_t(n) - 1] = -INFINITY;  // inf - inf
      if (variant == 4)
        for (size_t i = 0; i < size_t(n); ++i) aa[i] = from_bits(uint32_t(i * 131 + 1)), bb[i] = 1e30f;
      if (variant == 5)
        for (size_t i = 0; i < size_t(n); ++i) aa[i] = -0.0f;
      const float want = kern::ops(Isa::Scalar).dot_f32(aa.data(), bb.data(), n);
      const float want_ss = kern::ops(Isa::Scalar).sum_sq(aa.data(), n);
      EXPECT_EQ(bits(want), bits(kern::ref_dot(GgmlType::F32, n, aa.data(), bb.data())));
      if (variant == 5) {
        EXPECT_EQ(bits(want), 0u);  // lanes never hold -0
      }
      for (Isa isa : available_isas()) {
        const auto& o = kern::ops(isa);
        EXPECT_EQ(bits(o.dot_f32(aa.data(), bb.data(), n)), bits(want)) << kern::isa_name(isa) << " n=" << n << " v=" << variant;
        EXPECT_EQ(bits(o.sum_sq(aa.data(), n)), bits(want_ss)) << kern::isa_name(isa) << " n=" << n;
        float y = -1;
        o.matmul(GgmlType::F32, n, aa.data(), size_t(n) * 4, 0, 1, bb.data(), size_t(n) * 4, 1, &y, 1);
        EXPECT_EQ(bits(y), bits(want)) << kern::isa_name(isa);
      }
    }
  }
}

TEST(Kernels, DotF32LaneOrderIsCanonical) {
  // 64 elements: lane i gets products i and i+32, then the fixed tree.
  std::vector<float> a(64), b(64, 1.0f);
  for (int i = 0; i < 64; ++i) a[size_t(i)] = (i % 3 == 0 ? 1e8f : 1.0f) * float(i + 1);
  float lane[32];
  for (int i = 0; i < 32; ++i) lane[i] = (0.0f + a[size_t(i)]) + a[size_t(i) + 32];
  for (int s = 16; s >= 1; s /= 2)
    for (int i = 0; i < s; ++i) lane[i] = lane[i] + lane[i + s];
  EXPECT_EQ(bits(kern::ref_dot(GgmlType::F32, 64, a.data(), b.data())), bits(lane[0]));
}

TEST(Kernels, IsaFromEnv) {
  const char* old = std::getenv("GALLEON_ISA");
  std::string saved = old ? old : "";
  setenv("GALLEON_ISA", "mmx9000", 1);
  try {
    kern::isa_from_env();
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::Unsupported);
    EXPECT_NE(e.message().find("scalar"), std::string::npos) << e.message();
  }
  setenv("GALLEON_ISA", "scalar", 1);
  EXPECT_EQ(kern::isa_from_env(), Isa::Scalar);
  for (Isa isa : {Isa::Sse2, Isa::Avx2, Isa::Avx512, Isa::Neon}) {
    setenv("GALLEON_ISA", kern::isa_name(isa), 1);
    if (kern::isa_available(isa)) {
      EXPECT_EQ(kern::isa_from_env(), isa);
    } else {
      EXPECT_THROW(kern::isa_from_env(), Error);
      EXPECT_THROW(kern::ops(isa), Error);
    }
  }
  unsetenv("GALLEON_ISA");
  EXPECT_EQ(kern::isa_from_env(), kern::best_isa());
  if (old) setenv("GALLEON_ISA", saved.c_str(), 1);
}

TEST(Kernels, ActRowBytes) {
  EXPECT_EQ(kern::act_row_bytes(GgmlType::F16, 100), 400u);
  EXPECT_EQ(kern::act_row_bytes(GgmlType::Q4_0, 64), 80u);
  EXPECT_EQ(kern::act_row_bytes(GgmlType::Q6_K, 512), 584u);
  EXPECT_EQ(kern::act_format(GgmlType::Q5_K), kern::ActFormat::A8K);
}

// Elementwise operations: every path gives the scalar reference's bits (any NaN where it gives
// NaN), on special values, the expf range edges and random inputs, at lengths that leave SIMD
// tails.
std::vector<float> elementwise_inputs() {
  std::vector<float> x = {0.0f, -0.0f, INFINITY, -INFINITY, NAN, -NAN, 1e-45f, -1e-45f, 1e-38f,
                          88.72283935546875f, 88.7228394f, 88.72284f, 89.0f, 1e30f,
                          -103.972084045410156f, -103.97208f, -103.9721f, -104.0f, -1e30f,
                          0.5f, -0.5f, 0.34657359f, -0.34657359f, 1.0f, -1.0f, 20.0f, -20.0f};
  std::mt19937 rng(7);
  for (int i = 0; i < 3000; ++i) x.push_back(std::uniform_real_distribution<float>(-120.0f, 120.0f)(rng));
  for (int i = 0; i < 1000; ++i) x.push_back(std::normal_distribution<float>(0.0f, 3.0f)(rng));
  for (int i = 0; i < 200; ++i) x.push_back(from_bits(uint32_t(rng())));
  return x;
}

void expect_same(const std::vector<float>& got, const std::vector<float>& want, const char* what, Isa isa) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i) {
    if (std::isnan(want[i])) {
      ASSERT_TRUE(std::isnan(got[i])) << what << " " << kern::isa_name(isa) << " at " << i;
      continue;
    }
    ASSERT_EQ(bits(got[i]), bits(want[i])) << what << " " << kern::isa_name(isa) << " at " << i
                                           << " want " << want[i] << " got " << got[i];
  }
}

TEST(Kernels, ElementwiseBitIdenticalAcrossIsas) {
  const std::vector<float> x = elementwise_inputs();
  std::vector<float> y(x.rbegin(), x.rend());
  const kern::Ops& ref = kern::ops(Isa::Scalar);
  for (int64_t n : {int64_t(1), int64_t(7), int64_t(16), int64_t(33), int64_t(x.size())}) {
    auto run = [&](const kern::Ops& o) {
      std::vector<std::vector<float>> out(7, std::vector<float>(x.begin(), x.begin() + n));
      o.add(out[0].data(), y.data(), n);
      o.axpy(out[1].data(), 0.37f, y.data(), n);
      o.scale(out[2].data(), -1.7f, n);
      o.scale_mul(out[3].data(), x.data(), 0.81f, y.data(), n);
      o.exp_sub(out[4].data(), x.data(), 0.25f, n);
      o.silu_mul(out[5].data(), y.data(), n);
      o.gelu_mul(out[6].data(), y.data(), n);
      return out;
    };
    const auto want = run(ref);
    for (Isa isa : available_isas()) {
      const auto got = run(kern::ops(isa));
      const char* names[] = {"add",     "axpy",     "scale",   "scale_mul",
                             "exp_sub", "silu_mul", "gelu_mul"};
      for (int k = 0; k < 7; ++k) expect_same(got[size_t(k)], want[size_t(k)], names[k], isa);
    }
  }
  // lane_rows: the 32-lane sums of e_j * v_jd for several lengths and head sizes (the register
  // paths and the generic loop), rows strided in a larger buffer (like the KV cache); special
  // cases: an infinity and a NaN in single columns, a column of -0.0 (every product -0.0: the
  // sum is +0.0) and a column of zeros of both signs.
  std::mt19937 rng(11);
  for (int64_t hd : {24, 16, 64, 112, 128})
  for (int64_t n : {int64_t(1), int64_t(5), int64_t(32), int64_t(33), int64_t(70), int64_t(200), int64_t(-200)}) {
    const bool special = n < 0;
    n = special ? -n : n;
    const int64_t stride = hd + 16;
    std::vector<float> e(static_cast<size_t>(n)), v(size_t(n * stride));
    for (auto& f : e) f = std::uniform_real_distribution<float>(0.0f, 1.0f)(rng);
    for (auto& f : v) f = std::normal_distribution<float>(0.0f, 10.0f)(rng);
    if (special) {
      v[size_t(3 * stride + 2)] = INFINITY, v[size_t(7 * stride + 5)] = NAN;
      for (int64_t j = 0; j < n; ++j) v[size_t(j * stride + 9)] = -0.0f;
      for (int64_t j = 0; j < n; ++j) v[size_t(j * stride + 11)] = j % 3 ? -0.0f : 0.0f;
    }
    std::vector<float> lanes(size_t(32 * hd)), want(static_cast<size_t>(hd)), got(static_cast<size_t>(hd));
    ref.lane_rows(e.data(), v.data(), stride, n, hd, lanes.data(), want.data());
    for (Isa isa : available_isas()) {
      kern::ops(isa).lane_rows(e.data(), v.data(), stride, n, hd, lanes.data(), got.data());
      expect_same(got, want, "lane_rows", isa);
    }
  }
  // The reference itself is canon::expf / canon::silu.
  std::vector<float> e(x.size());
  ref.exp_sub(e.data(), x.data(), 0.0f, int64_t(x.size()));
  EXPECT_EQ(bits(e[0]), bits(1.0f));
  EXPECT_EQ(bits(e[2]), bits(INFINITY));
  EXPECT_EQ(bits(e[3]), bits(0.0f));
}

// Every task runs exactly once, whatever the thread and task counts (fewer tasks than threads,
// uneven segments), also when one thread's segment is slow and the others take from its back.
TEST(ThreadPool, EveryTaskRunsExactlyOnce) {
  for (int threads : {1, 2, 3, 5})
    for (int64_t n : {int64_t(0), int64_t(1), int64_t(2), int64_t(3), int64_t(7), int64_t(64),
                      int64_t(1001)}) {
      ThreadPool pool(threads);
      std::vector<std::atomic<int>> runs(static_cast<size_t>(n));
      for (int rep = 0; rep < 3; ++rep)
        pool.parallel_for(n, [&](int64_t t) {
          if (t == 0) {  // a slow task: the other threads finish first and take from its back
            volatile uint64_t x = 0;
            for (int i = 0; i < 200000; ++i) x = x + uint64_t(i);
          }
          runs[size_t(t)].fetch_add(1);
        });
      for (int64_t t = 0; t < n; ++t)
        ASSERT_EQ(runs[size_t(t)].load(), 3) << threads << " threads, " << n << " tasks, task " << t;
    }
}

}  // namespace
}  // namespace galleon
