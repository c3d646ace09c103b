// Canonical math: accuracy against libm (loose bounds: libm is not the definition), exact special
// cases, and the own SHA-256 against FIPS 180-4 vectors.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>

#include "runtime/canon_math.h"
#include "runtime/sha256.h"

namespace galleon {
namespace {

uint32_t bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

TEST(CanonMath, ExpfIsCloseToLibmAcrossTheRange) {
  int64_t worst = 0;
  for (float x = -103.0f; x < 88.7f; x += 0.0137f) {
    const float ours = canon::expf(x);
    const double ref = std::exp(double(x));
    if (ref < 1e-37) continue;  // subnormal results: relative error is meaningless
    const int64_t ulps = std::llabs(int64_t(bits(ours)) - int64_t(bits(float(ref))));
    worst = std::max(worst, ulps);
  }
  EXPECT_LE(worst, 2);
}

TEST(CanonMath, ExpfSpecialValues) {
  EXPECT_EQ(canon::expf(0.0f), 1.0f);
  EXPECT_EQ(canon::expf(-INFINITY), 0.0f);
  EXPECT_EQ(canon::expf(INFINITY), INFINITY);
  EXPECT_EQ(canon::expf(89.0f), INFINITY);
  EXPECT_EQ(canon::expf(-104.0f), 0.0f);
  EXPECT_TRUE(std::isnan(canon::expf(NAN)));
  EXPECT_GT(canon::expf(-100.0f), 0.0f);  // subnormal range still reached
}

TEST(CanonMath, SiluMatchesDefinition) {
  for (float x : {-20.0f, -3.5f, -1.0f, 0.0f, 0.5f, 2.0f, 30.0f})
    EXPECT_NEAR(canon::silu(x), x / (1.0 + std::exp(-double(x))), 1e-6 * (1 + std::fabs(x)));
}

// tanh, GELU (tanh form) and the soft cap against double precision; the limits exact.
TEST(CanonMath, TanhGeluSoftcapMatchDefinitions) {
  for (float x = -12.0f; x < 12.0f; x += 0.0371f) {
    EXPECT_NEAR(canon::tanh(x), std::tanh(double(x)), 2e-7) << x;
    const double y = std::sqrt(2.0 / M_PI) * (double(x) + 0.044715 * double(x) * x * x);
    EXPECT_NEAR(canon::gelu(x), 0.5 * x * (1.0 + std::tanh(y)), 1e-6 * (1 + std::fabs(x))) << x;
    EXPECT_NEAR(canon::softcap(40.0f * x, 30.0f), 30.0 * std::tanh(40.0 * x / 30.0), 1e-5) << x;
  }
  EXPECT_EQ(canon::tanh(0.0f), 0.0f);
  EXPECT_TRUE(std::signbit(canon::tanh(-0.0f)));
  EXPECT_EQ(canon::tanh(INFINITY), 1.0f);
  EXPECT_EQ(canon::tanh(-100.0f), -1.0f);
  EXPECT_TRUE(std::isnan(canon::tanh(NAN)));
  EXPECT_EQ(canon::gelu(50.0f), 50.0f);
  EXPECT_EQ(canon::gelu(-50.0f), 0.0f);
  EXPECT_EQ(canon::softcap(1e30f, 50.0f), 50.0f);
}

TEST(CanonMath, DoubleFunctionsAreAccurate) {
  for (double x = -700; x < 700; x += 3.7)
    EXPECT_NEAR(canon::exp(x) / std::exp(x), 1.0, 1e-14) << x;
  for (double x = 1e-300; x < 1e300; x *= 17.3)
    EXPECT_NEAR(canon::log(x), std::log(x), 1e-13 * std::max(1.0, std::fabs(std::log(x)))) << x;
  EXPECT_NEAR(canon::pow(10000.0, -0.25), std::pow(10000.0, -0.25), 1e-15);
  for (double x = -2e5; x < 2e5; x += 123.456) {
    double s, c;
    canon::sincos(x, &s, &c);
    EXPECT_NEAR(s, std::sin(x), 1e-10) << x;
    EXPECT_NEAR(c, std::cos(x), 1e-10) << x;
  }
}

TEST(CanonMath, ReduceLanesIsTheFixedTree) {
  float lanes[32];
  for (int i = 0; i < 32; ++i) lanes[i] = float(1 << (i % 8)) + (i == 31 ? 1e-8f : 0.0f);
  float copy[32];
  std::memcpy(copy, lanes, sizeof copy);
  // Pairwise by halves: the same as summing (i, i+16), then (i, i+8), ...
  for (int s = 16; s >= 1; s /= 2)
    for (int i = 0; i < s; ++i) copy[i] += copy[i + s];
  EXPECT_EQ(bits(canon::reduce_lanes(lanes)), bits(copy[0]));
}

TEST(Sha256, KnownVectors) {
  auto hex = [](const std::string& s) {
    Sha256 h;
    h.update(s.data(), s.size());
    return h.finish_hex();
  };
  EXPECT_EQ(hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  // One million 'a', fed in uneven pieces.
  Sha256 h;
  std::string chunk(997, 'a');
  size_t left = 1000000;
  while (left) {
    size_t n = std::min(left, chunk.size());
    h.update(chunk.data(), n);
    left -= n;
  }
  EXPECT_EQ(h.finish_hex(), "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

}  // namespace
}  // namespace galleon
