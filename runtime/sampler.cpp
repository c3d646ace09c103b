#include "runtime/sampler.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "runtime/canon_math.h"

namespace galleon {
namespace {

uint64_t splitmix64(uint64_t& x) {
  uint64_t z = (x += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

inline uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

}  // namespace

Rng::Rng(uint64_t seed) {
  for (auto& s : s_) s = splitmix64(seed);
}

uint64_t Rng::next() {
  const uint64_t result = rotl(s_[1] * 5, 7) * 9;
  const uint64_t t = s_[1] << 17;
  s_[2] ^= s_[0];
  s_[3] ^= s_[1];
  s_[1] ^= s_[2];
  s_[0] ^= s_[3];
  s_[2] ^= t;
  s_[3] = rotl(s_[3], 45);
  return result;
}

float Rng::uniform() { return float(next() >> 40) * (1.0f / 16777216.0f); }

int32_t argmax(const float* x, int32_t n) {
  int32_t best = 0;
  for (int32_t i = 1; i < n; ++i)
    if (x[i] > x[best] || (x[best] != x[best] && x[i] == x[i])) best = i;
  return best;
}

Sampler::Sampler(const SamplerParams& p) : p_(p), rng_(p.seed) {}

void Sampler::accept(int32_t token) {
  if (p_.repeat_last_n <= 0) return;
  recent_.push_back(token);
  while (int32_t(recent_.size()) > p_.repeat_last_n) recent_.pop_front();
}

int32_t Sampler::sample(const float* logits, int32_t n_vocab) {
  work_.assign(logits, logits + n_vocab);
  if (p_.repeat_penalty != 1.0f) {
    std::vector<int32_t> seen(recent_.begin(), recent_.end());
    std::sort(seen.begin(), seen.end());
    seen.erase(std::unique(seen.begin(), seen.end()), seen.end());
    for (int32_t id : seen) {
      if (id < 0 || id >= n_vocab) continue;
      float& l = work_[size_t(id)];
      l = l > 0.0f ? l / p_.repeat_penalty : l * p_.repeat_penalty;
    }
  }
  if (p_.temperature <= 0.0f) return argmax(work_.data(), n_vocab);

  // Candidates sorted by logit (descending), ties by id.
  ids_.resize(size_t(n_vocab));
  std::iota(ids_.begin(), ids_.end(), 0);
  auto better = [&](int32_t a, int32_t b) {
    const float la = work_[size_t(a)], lb = work_[size_t(b)];
    return la > lb || (la == lb && a < b);
  };
  size_t n = ids_.size();
  if (p_.top_k > 0 && size_t(p_.top_k) < n) {
    std::partial_sort(ids_.begin(), ids_.begin() + p_.top_k, ids_.end(), better);
    n = size_t(p_.top_k);
  } else {
    std::sort(ids_.begin(), ids_.end(), better);
  }
  // Softmax of the candidates at temperature 1 for top-p and min-p (sequential sums in rank
  // order: a fixed order).
  std::vector<float> prob(n);
  const float mx = work_[size_t(ids_[0])];
  float sum = 0.0f;
  for (size_t i = 0; i < n; ++i) {
    prob[i] = canon::expf(work_[size_t(ids_[i])] - mx);
    sum = sum + prob[i];
  }
  for (size_t i = 0; i < n; ++i) prob[i] = prob[i] / sum;
  if (p_.top_p < 1.0f) {
    float cum = 0.0f;
    size_t keep = n;
    for (size_t i = 0; i < n; ++i) {
      cum = cum + prob[i];
      if (cum >= p_.top_p) {
        keep = i + 1;
        break;
      }
    }
    n = keep;
  }
  if (p_.min_p > 0.0f) {
    const float threshold = prob[0] * p_.min_p;
    size_t keep = 1;
    while (keep < n && prob[keep] >= threshold) ++keep;
    n = keep;
  }
  // Temperature, then draw.
  float total = 0.0f;
  for (size_t i = 0; i < n; ++i) {
    prob[i] = canon::expf((work_[size_t(ids_[i])] - mx) / p_.temperature);
    total = total + prob[i];
  }
  const float r = rng_.uniform() * total;
  float cum = 0.0f;
  for (size_t i = 0; i < n; ++i) {
    cum = cum + prob[i];
    if (r < cum) return ids_[i];
  }
  return ids_[n - 1];
}

}  // namespace galleon
