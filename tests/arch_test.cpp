// Every architecture's forward pass against a plain double-precision reference written from the
// models' definitions (llama.cpp's graphs, the gemma papers), not from runtime/session.cpp: the
// windows, RoPE bases, soft caps, norms and activations of each architecture are restated here
// from the synthetic model's spec, so that a loader or forward-pass mistake shows as a logit far
// from the reference. Synthetic F32 models, small enough for the reference's plain loops.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <functional>
#include <string>
#include <vector>

#include "runtime/engine.h"
#include "runtime/error.h"
#include "runtime/gguf.h"
#include "runtime/model.h"
#include "runtime/synth.h"
#include "tests/synth_cases.h"
#include "tests/test_support.h"

namespace galleon {
namespace {

using Vec = std::vector<double>;

bool starts_with(const std::string& s, const char* p) { return s.rfind(p, 0) == 0; }

// y = W x for an F32 weight.
Vec matvec(const Weight& w, const Vec& x) {
  Vec y(size_t(w.n_out), 0.0);
  for (int64_t r = 0; r < w.n_out; ++r) {
    const float* row = reinterpret_cast<const float*>(w.data + size_t(r) * w.row_bytes);
    for (int64_t i = 0; i < w.n_in; ++i) y[size_t(r)] += double(row[i]) * x[size_t(i)];
  }
  return y;
}

// RMSNorm of x[off .. off + n) with weights w, in place.
void rms_norm(Vec& x, size_t off, size_t n, const std::vector<float>& w, double eps) {
  double ss = 0;
  for (size_t i = 0; i < n; ++i) ss += x[off + i] * x[off + i];
  const double s = 1.0 / std::sqrt(ss / double(n) + eps);
  for (size_t i = 0; i < n; ++i) x[off + i] = x[off + i] * s * double(w[i]);
}

double gelu(double x) {
  return 0.5 * x * (1.0 + std::tanh(std::sqrt(2.0 / M_PI) * (x + 0.044715 * x * x * x)));
}

double silu(double x) { return x / (1.0 + std::exp(-x)); }

// The reference's own reading of the spec: which layers are windowed, and their RoPE base.
struct ArchRules {
  explicit ArchRules(const SynthSpec& s) : spec(s) {}
  const SynthSpec& spec;
  bool gemma() const { return starts_with(spec.arch, "gemma"); }
  // gemma2: every other layer from the first; gemma3: five of every six; olmo2 with a window:
  // three of every four.
  // exaone4 of 64 layers (the 32B model; no other): three of every four.
  bool windowed(int64_t il) const {
    if (spec.arch == "gemma2") return il % 2 == 0;
    if (spec.arch == "gemma3") return il % 6 != 5;
    if (spec.arch == "olmo2") return spec.n_swa > 0 && il % 4 != 3;
    if (exaone4_32b()) return il % 4 != 3;
    return false;
  }
  bool exaone4_32b() const { return spec.arch == "exaone4" && spec.n_layer == 64; }
  bool olmo2() const { return spec.arch == "olmo2"; }
  // olmo2 and exaone4 norm no branch input.
  bool pre_norms() const { return !olmo2() && spec.arch != "exaone4"; }
  // Per-head Q/K norms (olmo2's: whole rows).
  bool head_qk_norms() const {
    return spec.arch == "qwen3" || spec.arch == "gemma3" || spec.arch == "exaone4";
  }
  // Rotated pairs (i, i + hd/2); llama, granite, smollm3, ernie4_5 and internlm2 rotate
  // (2i, 2i + 1) (llama.cpp's LLAMA_ROPE_TYPE_NORM list).
  bool neox() const {
    for (const char* a : {"llama", "granite", "smollm3", "ernie4_5", "internlm2"})
      if (spec.arch == a) return false;
    return true;
  }
  // smollm3: every fourth layer (3, 7, ...) has no RoPE; exaone4 32B RoPEs its windowed layers.
  bool rotates(int64_t il) const {
    return (spec.arch != "smollm3" && !exaone4_32b()) || il % 4 != 3;
  }
  double rope_base(int64_t il) const {
    return spec.arch == "gemma3" && windowed(il) ? 10000.0 : double(spec.rope_base);
  }
  double attn_cap() const { return spec.arch == "gemma2" ? double(spec.attn_softcap) : 0.0; }
  bool granite() const { return spec.arch == "granite"; }
  double embd_scale() const {
    return gemma() ? std::sqrt(double(spec.n_embd)) : granite() ? spec.granite_scales[0] : 1.0;
  }
  double residual_scale() const { return granite() ? spec.granite_scales[1] : 1.0; }
  double kq_scale(int64_t hd) const {
    return granite() ? spec.granite_scales[2] : 1.0 / std::sqrt(double(hd));
  }
  double logit_divisor() const { return granite() ? spec.granite_scales[3] : 1.0; }
  double final_cap() const { return spec.arch == "gemma2" ? double(spec.final_softcap) : 0.0; }
};

// Rotation of pair i by pos * base^(-2i/hd) / factors[i] (no factors: 1), cos and sin times
// mscale.
void rope(Vec& v, size_t off, int64_t hd, int64_t pos, double base, bool neox,
          const std::vector<float>& factors = {}, double mscale = 1.0) {
  const int64_t half = hd / 2;
  for (int64_t i = 0; i < half; ++i) {
    double ang = double(pos) * std::pow(base, -double(2 * i) / double(hd));
    if (!factors.empty()) ang /= double(factors[size_t(i)]);
    const double c = std::cos(ang) * mscale, s = std::sin(ang) * mscale;
    const size_t a = off + size_t(neox ? i : 2 * i), b = off + size_t(neox ? i + half : 2 * i + 1);
    const double x0 = v[a], x1 = v[b];
    v[a] = x0 * c - x1 * s;
    v[b] = x0 * s + x1 * c;
  }
}

// A 1-D F32 tensor of the model's file, or none.
std::vector<float> f32_tensor(const Model& m, const char* name) {
  const GgufTensorInfo* t = m.file().find_tensor(name);
  if (!t) return {};
  const float* p = reinterpret_cast<const float*>(m.file().tensor_data(*t));
  return std::vector<float>(p, p + t->n_elements);
}

// The logits of every position of `toks` (one sequence), rows of n_vocab, in a session of n_ctx
// positions (LongRoPE: past the spec's original context, the long factors).
std::vector<Vec> reference_logits(const Model& m, const SynthSpec& spec,
                                  const std::vector<int32_t>& toks, int64_t n_ctx) {
  const ArchRules rules(spec);
  const HParams& hp = m.hparams();
  const int64_t d = hp.n_embd, hd = hp.head_dim, nh = hp.n_head, nkv = hp.n_head_kv;
  const double eps = hp.rms_eps;
  const size_t T = toks.size();
  std::vector<float> factors;
  double mscale = 1.0;
  if (spec.longrope_orig_ctx > 0) {
    factors = f32_tensor(m, n_ctx > spec.longrope_orig_ctx ? "rope_factors_long.weight"
                                                           : "rope_factors_short.weight");
    mscale = double(1.19f);
  }
  std::vector<Vec> x(T, Vec(size_t(d)));
  const Weight& emb = m.token_embd();
  for (size_t t = 0; t < T; ++t) {  // F32 rows, scaled (gemma: by sqrt(n_embd))
    const float* row = reinterpret_cast<const float*>(emb.data + size_t(toks[t]) * emb.row_bytes);
    for (int64_t i = 0; i < d; ++i) x[t][size_t(i)] = double(row[i]) * rules.embd_scale();
  }
  for (int64_t il = 0; il < hp.n_layer; ++il) {
    const LayerWeights& L = m.layers()[size_t(il)];
    std::vector<Vec> q(T), k(T), v(T);
    for (size_t t = 0; t < T; ++t) {
      Vec xn = x[t];
      if (rules.pre_norms()) rms_norm(xn, 0, size_t(d), L.attn_norm, eps);
      q[t] = matvec(L.wq, xn), k[t] = matvec(L.wk, xn), v[t] = matvec(L.wv, xn);
      if (rules.olmo2()) {  // Q and K normed over the whole row
        rms_norm(q[t], 0, size_t(nh * hd), L.q_norm, eps);
        rms_norm(k[t], 0, size_t(nkv * hd), L.k_norm, eps);
      }
      const std::string blk = "blk." + std::to_string(il) + ".";
      const std::vector<float> bq = f32_tensor(m, (blk + "attn_q.bias").c_str());
      const std::vector<float> bk = f32_tensor(m, (blk + "attn_k.bias").c_str());
      const std::vector<float> bv = f32_tensor(m, (blk + "attn_v.bias").c_str());
      for (size_t i = 0; i < bq.size(); ++i) q[t][i] += bq[i];
      for (size_t i = 0; i < bk.size(); ++i) k[t][i] += bk[i];
      for (size_t i = 0; i < bv.size(); ++i) v[t][i] += bv[i];
      const bool qk_norm = rules.head_qk_norms();
      for (int64_t h = 0; h < nh; ++h) {
        if (qk_norm) rms_norm(q[t], size_t(h * hd), size_t(hd), L.q_norm, eps);
        if (rules.rotates(il))
          rope(q[t], size_t(h * hd), hd, int64_t(t), rules.rope_base(il), rules.neox(), factors,
               mscale);
      }
      for (int64_t h = 0; h < nkv; ++h) {
        if (qk_norm) rms_norm(k[t], size_t(h * hd), size_t(hd), L.k_norm, eps);
        if (rules.rotates(il))
          rope(k[t], size_t(h * hd), hd, int64_t(t), rules.rope_base(il), rules.neox(), factors,
               mscale);
      }
    }
    for (size_t t = 0; t < T; ++t) {
      Vec att(size_t(nh * hd), 0.0);
      for (int64_t h = 0; h < nh; ++h) {
        const size_t qo = size_t(h * hd), ko = size_t((h / (nh / nkv)) * hd);
        const size_t first = rules.windowed(il) && t + 1 > size_t(spec.n_swa)
                                 ? t + 1 - size_t(spec.n_swa) : 0;
        Vec s(t + 1, -INFINITY);
        double mx = -INFINITY;
        for (size_t j = first; j <= t; ++j) {
          double dot = 0;
          for (int64_t i = 0; i < hd; ++i) dot += q[t][qo + size_t(i)] * k[j][ko + size_t(i)];
          s[j] = dot * rules.kq_scale(hd);
          if (rules.attn_cap() > 0) s[j] = rules.attn_cap() * std::tanh(s[j] / rules.attn_cap());
          mx = std::max(mx, s[j]);
        }
        double sum = 0;
        for (size_t j = first; j <= t; ++j) sum += std::exp(s[j] - mx);
        for (size_t j = first; j <= t; ++j)
          for (int64_t i = 0; i < hd; ++i)
            att[qo + size_t(i)] += std::exp(s[j] - mx) / sum * v[j][ko + size_t(i)];
      }
      Vec o = matvec(L.wo, att);
      const std::vector<float> bo =
          f32_tensor(m, ("blk." + std::to_string(il) + ".attn_output.bias").c_str());
      for (size_t i = 0; i < bo.size(); ++i) o[i] += bo[i];
      if (!L.attn_post_norm.empty()) rms_norm(o, 0, size_t(d), L.attn_post_norm, eps);
      for (int64_t i = 0; i < d; ++i) x[t][size_t(i)] += o[size_t(i)] * rules.residual_scale();
      Vec xn = x[t];
      if (rules.pre_norms()) rms_norm(xn, 0, size_t(d), L.ffn_norm, eps);
      Vec g = matvec(L.w_gate, xn), u = matvec(L.w_up, xn);
      for (size_t i = 0; i < g.size(); ++i) g[i] = (rules.gemma() ? gelu(g[i]) : silu(g[i])) * u[i];
      Vec dn = matvec(L.w_down, g);
      if (!L.ffn_post_norm.empty()) rms_norm(dn, 0, size_t(d), L.ffn_post_norm, eps);
      for (int64_t i = 0; i < d; ++i) x[t][size_t(i)] += dn[size_t(i)] * rules.residual_scale();
    }
  }
  std::vector<Vec> out;
  for (size_t t = 0; t < T; ++t) {
    rms_norm(x[t], 0, size_t(d), m.output_norm(), eps);
    Vec l = matvec(m.output(), x[t]);
    for (double& z : l) z = z / rules.logit_divisor();
    if (rules.final_cap() > 0)
      for (double& z : l) z = rules.final_cap() * std::tanh(z / rules.final_cap());
    out.push_back(l);
  }
  return out;
}

class ArchReference : public ::testing::TestWithParam<const char*> {};

// Six layers (gemma3's sixth is its one global layer), a window of 5 in 20 positions, RoPE base
// 10^6 (gemma3's windowed layers: 10^4), soft caps small enough to bend most values, head size
// 32 with 4 heads on an embedding of 64 (Q wider than the embedding).
SynthSpec reference_spec(const char* arch) {
  SynthSpec spec;
  spec.arch = arch;
  spec.n_embd = 64;
  spec.n_layer = 6;
  spec.n_head = 4;
  spec.n_head_kv = 2;
  spec.head_dim = 32;
  spec.n_ff = 96;
  spec.n_vocab = 300;
  spec.n_ctx = 64;
  spec.rope_base = 1e6f;
  spec.tied_output = starts_with(arch, "gemma");
  spec.n_swa = std::string(arch) == "gemma2" || std::string(arch) == "gemma3" ? 5 : 0;
  if (std::string(arch) == "olmo2-swa") spec.arch = "olmo2", spec.n_swa = 5;
  // exaone4 of 64 layers: the 32B model's windows (3 of 4 layers) and RoPE on those only.
  if (std::string(arch) == "exaone4-32b")
    spec.arch = "exaone4", spec.n_layer = 64, spec.n_swa = 5;
  // LongRoPE: an original context of 32 in a training context of 64.
  if (std::string(arch).rfind("phi3-longrope", 0) == 0)
    spec.arch = "phi3", spec.longrope_orig_ctx = 32;
  if (std::string(arch) == "gemma2") spec.attn_softcap = 0.3f, spec.final_softcap = 1.0f;
  if (std::string(arch) == "phi3") spec.fused_qkv = true;
  // exaone with every attention bias; llama with them too ("llama-bias").
  if (std::string(arch) == "exaone") spec.attn_biases = true;
  if (std::string(arch) == "llama-bias") spec.arch = "llama", spec.attn_biases = true;
  return spec;
}

TEST_P(ArchReference, LogitsMatchADoublePrecisionReference) {
  const SynthSpec spec = reference_spec(GetParam());  // "olmo2-swa": olmo2 with a window
  testing::TempDir dir;
  LoadedModel m = testing::write_and_load(spec, dir);
  const std::vector<int32_t> toks = testing::synth_tokens(20, spec.n_vocab);
  SessionOptions o;
  // "phi3-longrope-short": a session within the original context (the short factors).
  if (std::string(GetParam()) == "phi3-longrope-short") o.n_ctx = spec.longrope_orig_ctx;
  Session s(*m.model, o);
  std::vector<float> got;
  s.eval(toks, got);
  const std::vector<Vec> want = reference_logits(*m.model, spec, toks, s.n_ctx());
  double worst = 0;
  for (size_t t = 0; t < toks.size(); ++t)
    for (size_t i = 0; i < want[t].size(); ++i) {
      const double g = got[t * want[t].size() + i];
      worst = std::max(worst, std::fabs(g - want[t][i]) / (1.0 + std::fabs(want[t][i])));
    }
  EXPECT_LT(worst, 1e-4) << GetParam() << ": largest difference from the reference";
  std::printf("%s: largest difference %.3g\n", GetParam(), worst);
}

// A model file's gemma, granite, olmo2, LongRoPE and MoE keys and tensors are checked by name:
// a refused file says which.
TEST(ArchKeys, ArchitectureKeysAndTensorsAreChecked) {
  testing::TempDir dir;
  auto set = [](const char* key, GgufValue v) {
    return [key, v](GgufWriter& w) { w.set(key, v); };
  };
  const auto none = [](GgufWriter&) {};
  struct Case {
    const char* arch;
    const char* drop;
    std::function<void(GgufWriter&)> edit;
    const char* expected;
    ErrorKind kind = ErrorKind::Invalid;
  };
  const float one = 1.0f;
  const Case cases[] = {
      {"gemma3", "gemma3.attention.sliding_window", none,
       "metadata key 'gemma3.attention.sliding_window' is missing"},
      {"gemma3", "", set("gemma3.attention.sliding_window", GgufValue::make_u32(0)),
       "'gemma3.attention.sliding_window' = 0, expected 1.."},
      {"gemma2", "", set("gemma2.attn_logit_softcapping", GgufValue::make_f32(-1)),
       "metadata key 'gemma2.attn_logit_softcapping' must be a finite number > 0"},
      {"gemma2", "", set("gemma2.final_logit_softcapping", GgufValue::make_f32(NAN)),
       "metadata key 'gemma2.final_logit_softcapping' must be a finite number > 0"},
      {"gemma3", "", set("gemma3.rope.freq_base_swa", GgufValue::make_f32(0.5f)),
       "rope.freq_base_swa must be a finite number > 1"},
      {"gemma2", "blk.1.post_ffw_norm.weight", none,
       "tensor 'blk.1.post_ffw_norm.weight' is missing"},
      {"gemma3", "blk.0.attn_k_norm.weight", none, "tensor 'blk.0.attn_k_norm.weight' is missing"},
      {"granite", "granite.logit_scale", none, "metadata key 'granite.logit_scale' is missing"},
      {"granite", "", set("granite.residual_scale", GgufValue::make_f32(-0.5f)),
       "metadata key 'granite.residual_scale' must be a finite number > 0"},
      {"granite", "", set("granite.rope.scaling.finetuned", GgufValue::make_bool(false)),
       "granite.rope.scaling.finetuned = false (no rotary embedding) is not supported",
       ErrorKind::Unsupported},
      {"granite", "",
       [&](GgufWriter& w) {
         w.add_tensor("blk.1.ffn_down.bias", GgmlType::F32, {1}, &one, sizeof one);
       },
       "tensor 'blk.1.ffn_down.bias' is not supported", ErrorKind::Unsupported},
      {"exaone", "blk.2.attn_k.bias",
       [&](GgufWriter& w) {  // a bias of the wrong length
         w.add_tensor("blk.2.attn_k.bias", GgmlType::F32, {1}, &one, sizeof one);
       },
       "tensor 'blk.2.attn_k.bias' has shape [1], expected [64]"},
      {"qwen2", "blk.0.attn_v.bias", none, "tensor 'blk.0.attn_v.bias' is missing"},
      {"exaone4", "blk.3.post_ffw_norm.weight", none,
       "tensor 'blk.3.post_ffw_norm.weight' is missing"},
      {"llama", "", set("general.architecture", GgufValue::make_string("mamba")),
       "general.architecture 'mamba' is not supported (expected llama, qwen2, qwen3, phi3, gemma, "
       "gemma2, gemma3, granite, olmo2, smollm3, exaone, ernie4_5, internlm2 or exaone4)",
       ErrorKind::Unsupported},
      {"llama", "", set("llama.expert_count", GgufValue::make_u32(8)),
       "llama.expert_count = 8: mixture-of-experts models are not supported",
       ErrorKind::Unsupported},
      {"phi3-longrope", "rope_factors_short.weight", none,
       "LongRoPE needs both rope_factors_long.weight and rope_factors_short.weight"},
      {"phi3-longrope", "", set("phi3.rope.scaling.attn_factor", GgufValue::make_f32(-1)),
       "metadata key 'phi3.rope.scaling.attn_factor' must be a finite number > 0"},
      {"olmo2", "blk.0.attn_q_norm.weight",
       [&](GgufWriter& w) {  // a per-head norm where olmo2 norms whole rows
         const std::vector<float> head(32, 1.0f);
         w.add_tensor("blk.0.attn_q_norm.weight", GgmlType::F32, {32}, head.data(), 32 * 4);
       },
       "tensor 'blk.0.attn_q_norm.weight' has shape [32], expected [128]"},
  };
  for (const Case& c : cases) {
    GgufWriter w;
    make_synthetic_model(reference_spec(c.arch), w);
    w.write_file(dir.file("good.gguf"));
    testing::rewrite_gguf(dir.file("good.gguf"), dir.file("bad.gguf"), c.drop, nullptr, c.edit);
    try {
      load_model(dir.file("bad.gguf"));
      ADD_FAILURE() << c.expected << ": loaded";
    } catch (const Error& e) {
      EXPECT_EQ(e.kind(), c.kind) << e.what();
      EXPECT_NE(std::string(e.what()).find(c.expected), std::string::npos) << e.what();
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Archs, ArchReference,
                         ::testing::Values("llama", "qwen2", "qwen3", "phi3", "gemma", "gemma2",
                                           "gemma3", "granite", "olmo2", "olmo2-swa", "smollm3",
                                           "phi3-longrope", "phi3-longrope-short", "exaone",
                                           "llama-bias", "ernie4_5", "internlm2", "exaone4",
                                           "exaone4-32b"),
                         [](const ::testing::TestParamInfo<const char*>& i) {
                           std::string name = i.param;
                           std::replace(name.begin(), name.end(), '-', '_');
                           return name;
                         });

}  // namespace
}  // namespace galleon
