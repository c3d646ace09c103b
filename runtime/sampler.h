// Token sampling with our own PRNG and integer-to-float mapping (design brief section 6).
// Order: repetition penalty, then greedy when temperature <= 0, else top-k, top-p, min-p,
// temperature, draw. Ties always break towards the lower token id. docs/sampling.md.
#pragma once

#include <cstdint>
#include <deque>
#include <vector>

namespace galleon {

// xoshiro256** seeded through splitmix64.
class Rng {
 public:
  explicit Rng(uint64_t seed);
  uint64_t next();
  // Uniform in [0, 1): the top 24 bits of next() times 2^-24 (exact).
  float uniform();

 private:
  uint64_t s_[4];
};

struct SamplerParams {
  float temperature = 0.8f;
  int32_t top_k = 40;           // <= 0: off
  float top_p = 0.95f;          // >= 1: off
  float min_p = 0.05f;          // <= 0: off
  float repeat_penalty = 1.0f;  // 1: off
  int32_t repeat_last_n = 64;
  uint64_t seed = 0;
};

class Sampler {
 public:
  explicit Sampler(const SamplerParams& p);
  // Picks the next token from one row of logits (n_vocab floats).
  int32_t sample(const float* logits, int32_t n_vocab);
  // Records a token (prompt or generated) for the repetition penalty.
  void accept(int32_t token);

 private:
  SamplerParams p_;
  Rng rng_;
  std::deque<int32_t> recent_;
  std::vector<float> work_;
  std::vector<int32_t> ids_;
};

// Index of the largest value; ties -> lowest index; NaN never wins unless all are NaN.
int32_t argmax(const float* x, int32_t n);

}  // namespace galleon
