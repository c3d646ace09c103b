#include <gtest/gtest.h>

#include <cmath>
#include <map>

#include "runtime/sampler.h"

namespace galleon {
namespace {

TEST(Rng, SameSeedSameStreamDifferentSeedDifferentStream) {
  Rng a(42), b(42), c(43);
  for (int i = 0; i < 100; ++i) {
    uint64_t x = a.next();
    EXPECT_EQ(x, b.next());
    EXPECT_NE(x, c.next());
  }
}

TEST(Rng, UniformIsInUnitIntervalAndCoversIt) {
  Rng r(7);
  float lo = 1, hi = 0;
  for (int i = 0; i < 100000; ++i) {
    float u = r.uniform();
    ASSERT_GE(u, 0.0f);
    ASSERT_LT(u, 1.0f);
    lo = std::min(lo, u), hi = std::max(hi, u);
  }
  EXPECT_LT(lo, 0.001f);
  EXPECT_GT(hi, 0.999f);
}

TEST(Sampler, GreedyPicksTheMaximumAndBreaksTiesByLowestId) {
  SamplerParams p;
  p.temperature = 0;
  Sampler s(p);
  float logits[] = {0.5f, 2.0f, -1.0f, 2.0f, 1.0f};
  EXPECT_EQ(s.sample(logits, 5), 1);
  float nan_first[] = {NAN, 0.1f, 0.3f};
  EXPECT_EQ(argmax(nan_first, 3), 2);
}

TEST(Sampler, TopKOneIsGreedy) {
  SamplerParams p;
  p.temperature = 1.5f;
  p.top_k = 1;
  Sampler s(p);
  float logits[] = {0.1f, 0.2f, 3.0f, 0.4f};
  for (int i = 0; i < 50; ++i) EXPECT_EQ(s.sample(logits, 4), 2);
}

TEST(Sampler, SeededDrawsAreReproducibleAndFollowTheDistribution) {
  SamplerParams p;
  p.temperature = 1.0f;
  p.top_k = 0;
  p.top_p = 1.0f;
  p.min_p = 0.0f;
  p.seed = 1234;
  float logits[] = {0.0f, std::log(2.0f), std::log(5.0f), -30.0f};
  Sampler a(p), b(p);
  std::map<int, int> counts;
  for (int i = 0; i < 8000; ++i) {
    int x = a.sample(logits, 4);
    ASSERT_EQ(x, b.sample(logits, 4));
    counts[x]++;
  }
  EXPECT_NEAR(counts[0] / 8000.0, 1.0 / 8, 0.02);
  EXPECT_NEAR(counts[1] / 8000.0, 2.0 / 8, 0.02);
  EXPECT_NEAR(counts[2] / 8000.0, 5.0 / 8, 0.02);
  EXPECT_EQ(counts[3], 0);
}

TEST(Sampler, MinPAndTopPCutTheTail) {
  SamplerParams p;
  p.temperature = 1.0f;
  p.top_k = 0;
  p.top_p = 1.0f;
  p.min_p = 0.5f;  // keeps tokens with p >= 0.5 * p_max
  float logits[] = {std::log(10.0f), std::log(6.0f), std::log(4.0f)};
  Sampler s(p);
  for (int i = 0; i < 200; ++i) EXPECT_NE(s.sample(logits, 3), 2);
  p.min_p = 0;
  p.top_p = 0.5f;  // 10/20 = 0.5 reached by the first token alone
  Sampler t(p);
  for (int i = 0; i < 200; ++i) EXPECT_EQ(t.sample(logits, 3), 0);
}

TEST(Sampler, RepeatPenaltyDemotesSeenTokens) {
  SamplerParams p;
  p.temperature = 0;
  p.repeat_penalty = 2.0f;
  Sampler s(p);
  float logits[] = {1.0f, 1.5f, 0.2f};
  EXPECT_EQ(s.sample(logits, 3), 1);
  s.accept(1);
  EXPECT_EQ(s.sample(logits, 3), 0);  // 1.5 / 2 = 0.75 < 1.0
}

}  // namespace
}  // namespace galleon
