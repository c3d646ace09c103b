#include "runtime/model.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <iterator>
#include <optional>

#include "runtime/canon_math.h"
#include "runtime/error.h"
#include "runtime/gguf.h"
#include "runtime/quant.h"

namespace galleon {
namespace {

std::string key(const HParams& hp, const char* suffix) { return hp.arch + "." + suffix; }

int64_t positive_key(const GgufFile& f, const std::string& k, std::optional<uint64_t> dflt,
                     uint64_t max_value = (uint64_t(1) << 31)) {
  std::optional<uint64_t> v = f.get_u64_opt(k);
  if (!v) {
    if (!dflt) fail(ErrorKind::Invalid, f.name() + ": metadata key '" + k + "' is missing");
    v = dflt;
  }
  if (*v == 0 || *v > max_value)
    fail(ErrorKind::Invalid, f.name() + ": metadata key '" + k + "' = " + std::to_string(*v) +
                                 ", expected 1.." + std::to_string(max_value));
  return int64_t(*v);
}

// A soft cap: the key's value (> 0, finite) or dflt.
float softcap_key(const GgufFile& f, const std::string& k, float dflt) {
  const float cap = f.get_f32_opt(k).value_or(dflt);
  if (!(cap > 0.0f) || !std::isfinite(cap))
    fail(ErrorKind::Invalid, f.name() + ": metadata key '" + k + "' must be a finite number > 0");
  return cap;
}

// The gemma family's differences from llama (as llama.cpp's gemma, gemma2 and gemma3 graphs):
// embeddings times sqrt(n_embd) and a GELU FFN (ArchTraits::gemma, in read_hparams); gemma2
// soft caps and every other layer windowed; gemma3 five of six layers windowed, those with their
// own RoPE base (10000, unscaled). The 27B models' query_pre_attn_scalar is n_embd / n_head
// (llama.cpp knows them by depth: 46 and 62 layers).
void query_scale_27b(HParams& hp, int64_t n_layer_27b) {
  if (hp.n_layer == n_layer_27b) hp.kq_scale = 1.0f / std::sqrt(float(hp.n_embd / hp.n_head));
}
void read_gemma2(const GgufFile& f, HParams& hp) {
  query_scale_27b(hp, 46);
  hp.attn_softcap = softcap_key(f, key(hp, "attn_logit_softcapping"), 50.0f);
  hp.final_softcap = softcap_key(f, key(hp, "final_logit_softcapping"), 30.0f);
  hp.n_swa = positive_key(f, key(hp, "attention.sliding_window"), 4096, 1 << 24);
  hp.swa_pattern = 2;
}
void read_gemma3(const GgufFile& f, HParams& hp) {
  query_scale_27b(hp, 62);
  hp.n_swa = positive_key(f, key(hp, "attention.sliding_window"), std::nullopt, 1 << 24);
  hp.swa_pattern = 6;
  const float base = f.get_f32_opt(key(hp, "rope.freq_base_swa")).value_or(10000.0f);
  if (!(base > 1.0f) || !std::isfinite(base))
    fail(ErrorKind::Invalid, f.name() + ": rope.freq_base_swa must be a finite number > 1");
  hp.rope_base_swa = base;
}

// A multiplier: the key's value (> 0, finite), or nullopt where the key is absent or 0 (llama.cpp:
// no multiplier) and not required.
std::optional<float> scale_key(const GgufFile& f, const std::string& k, bool required) {
  const std::optional<float> v = f.get_f32_opt(k);
  if (!v && required)
    fail(ErrorKind::Invalid, f.name() + ": metadata key '" + k + "' is missing");
  if (!v || (*v == 0.0f && !required)) return std::nullopt;
  if (!(*v > 0.0f) || !std::isfinite(*v))
    fail(ErrorKind::Invalid, f.name() + ": metadata key '" + k + "' must be a finite number > 0");
  return v;
}

// granite's four multipliers (as llama.cpp's granite graph): the embeddings', the attention
// scores' (in place of 1 / sqrt(head_dim)), each branch output's before its residual, and the
// logits' divisor (required).
void read_granite(const GgufFile& f, HParams& hp) {
  if (f.get_bool_opt(key(hp, "rope.scaling.finetuned")).value_or(true) == false)
    fail(ErrorKind::Unsupported, f.name() + ": " + key(hp, "rope.scaling.finetuned") +
                                     " = false (no rotary embedding) is not supported");
  if (auto s = scale_key(f, key(hp, "embedding_scale"), false)) hp.embd_scale = *s;
  if (auto s = scale_key(f, key(hp, "attention.scale"), false)) hp.kq_scale = *s;
  if (auto s = scale_key(f, key(hp, "residual_scale"), false)) hp.residual_scale = *s;
  hp.logit_scale = 1.0f / *scale_key(f, key(hp, "logit_scale"), true);
}

// olmo2: a window on 3 of 4 layers where one is given and not 0.
void read_olmo2(const GgufFile& f, HParams& hp) {
  if (f.get_u64_opt(key(hp, "attention.sliding_window")).value_or(0) > 0) {
    hp.n_swa = positive_key(f, key(hp, "attention.sliding_window"), std::nullopt, 1 << 24);
    hp.swa_pattern = 4;
  }
}

// exaone4 (as llama.cpp: a window only for the 32B model's 64 layers): the window (default
// 4096) on 3 of 4 layers, RoPE on those only.
void read_exaone4(const GgufFile& f, HParams& hp) {
  if (hp.n_layer != 64) return;
  hp.n_swa = positive_key(f, key(hp, "attention.sliding_window"), 4096, 1 << 24);
  hp.swa_pattern = 4;
  hp.no_rope_step = 4;
}

// LongRoPE (Phi-3.5, Phi-4-mini and the Phi-3 128k models: both factor tensors present): the
// context past which the long factors apply (rope.scaling.original_context_length, default the
// training context, as llama.cpp's n_ctx_orig_yarn) and the cos/sin multiplier
// (rope.scaling.attn_factor, default 1).
void read_longrope(const GgufFile& f, HParams& hp) {
  const bool has_long = f.find_tensor("rope_factors_long.weight") != nullptr;
  if (has_long != (f.find_tensor("rope_factors_short.weight") != nullptr))
    fail(ErrorKind::Invalid, f.name() + ": LongRoPE needs both rope_factors_long.weight and "
                                        "rope_factors_short.weight");
  if (!has_long) return;
  if (f.find_tensor("rope_freqs.weight"))
    fail(ErrorKind::Invalid, f.name() + ": rope_freqs.weight and LongRoPE factors together");
  hp.rope_orig_ctx = positive_key(f, key(hp, "rope.scaling.original_context_length"),
                                  uint64_t(hp.n_ctx_train), 1 << 24);
  if (const auto a = f.get_f32_opt(key(hp, "rope.scaling.attn_factor"))) {
    if (!(*a > 0.0f) || !std::isfinite(*a))
      fail(ErrorKind::Invalid, f.name() + ": metadata key '" + key(hp, "rope.scaling.attn_factor") +
                                   "' must be a finite number > 0");
    hp.rope_attn_factor = *a;
  }
}

// The architectures galleon runs.
constexpr ArchTraits kArchs[] = {
    {.name = "llama", .rope_neox = false},
    {.name = "qwen2", .qkv_bias = true},
    {.name = "qwen3", .qk_norms = true},
    {.name = "phi3", .fused_up = true},
    {.name = "gemma", .gemma = true},
    {.name = "gemma2", .post_norms = true, .gemma = true, .read_keys = read_gemma2},
    {.name = "gemma3", .qk_norms = true, .post_norms = true, .gemma = true,
     .read_keys = read_gemma3},
    {.name = "granite", .rope_neox = false, .read_keys = read_granite},
    {.name = "olmo2", .pre_norms = false, .qk_norms = true, .qk_norm_whole = true,
     .post_norms = true, .read_keys = read_olmo2},
    {.name = "smollm3", .rope_neox = false, .no_rope_step = 4},  // as llama.cpp: no key says it
    {.name = "exaone"},  // EXAONE 3/3.5: llama's graph with NeoX pairs
    {.name = "ernie4_5", .rope_neox = false},   // ERNIE 4.5 (dense): llama's graph
    {.name = "internlm2", .rope_neox = false},  // InternLM2/2.5/3: llama's graph
    {.name = "exaone4", .pre_norms = false, .qk_norms = true, .post_norms = true,
     .read_keys = read_exaone4},
};

HParams read_hparams(const GgufFile& f) {
  HParams hp;
  hp.arch = f.get_string("general.architecture");
  const ArchTraits* at = arch_traits(hp.arch);
  if (!at)
    fail(ErrorKind::Unsupported, f.name() + ": general.architecture '" + hp.arch +
                                     "' is not supported (expected " + supported_archs() + ")");
  if (const auto experts = f.get_u64_opt(key(hp, "expert_count")); experts && *experts > 0)
    fail(ErrorKind::Unsupported, f.name() + ": " + key(hp, "expert_count") + " = " +
                                     std::to_string(*experts) +
                                     ": mixture-of-experts models are not supported");
  hp.n_embd = positive_key(f, key(hp, "embedding_length"), std::nullopt, 1 << 20);
  hp.n_layer = positive_key(f, key(hp, "block_count"), std::nullopt, 4096);
  hp.n_ff = positive_key(f, key(hp, "feed_forward_length"), std::nullopt, 1 << 22);
  hp.n_head = positive_key(f, key(hp, "attention.head_count"), std::nullopt, 4096);
  hp.n_head_kv = positive_key(f, key(hp, "attention.head_count_kv"), uint64_t(hp.n_head), 4096);
  hp.n_ctx_train = positive_key(f, key(hp, "context_length"), std::nullopt, 1 << 24);
  if (hp.n_head % hp.n_head_kv != 0)
    fail(ErrorKind::Invalid, f.name() + ": attention.head_count " + std::to_string(hp.n_head) +
                                 " is not a multiple of head_count_kv " +
                                 std::to_string(hp.n_head_kv));
  uint64_t default_hd = uint64_t(hp.n_embd / hp.n_head);
  if (hp.n_embd % hp.n_head != 0 && !f.find(key(hp, "attention.key_length")))
    fail(ErrorKind::Invalid, f.name() + ": embedding_length is not a multiple of head_count");
  hp.head_dim = positive_key(f, key(hp, "attention.key_length"), default_hd, 1 << 16);
  int64_t v_len = positive_key(f, key(hp, "attention.value_length"), uint64_t(hp.head_dim), 1 << 16);
  if (v_len != hp.head_dim)
    fail(ErrorKind::Unsupported, f.name() + ": attention.value_length differs from key_length");
  hp.n_rot = positive_key(f, key(hp, "rope.dimension_count"), uint64_t(hp.head_dim), 1 << 16);
  if (hp.n_rot > hp.head_dim || hp.n_rot % 2 != 0)
    fail(ErrorKind::Invalid, f.name() + ": rope.dimension_count " + std::to_string(hp.n_rot) +
                                 " must be even and at most the head size " +
                                 std::to_string(hp.head_dim));
  if (auto base = f.get_f32_opt(key(hp, "rope.freq_base"))) {
    if (!(*base > 1.0f) || !std::isfinite(*base))
      fail(ErrorKind::Invalid, f.name() + ": rope.freq_base must be a finite number > 1");
    hp.rope_base = *base;
  }
  std::string scaling = f.get_string_opt(key(hp, "rope.scaling.type")).value_or("none");
  if (scaling == "linear") {
    float factor = f.get_f32_opt(key(hp, "rope.scaling.factor")).value_or(1.0f);
    if (!(factor >= 1.0f) || !std::isfinite(factor))
      fail(ErrorKind::Invalid, f.name() + ": rope.scaling.factor must be >= 1");
    hp.rope_linear_scale = factor;
  } else if (scaling != "none") {
    fail(ErrorKind::Unsupported, f.name() + ": rope.scaling.type '" + scaling +
                                     "' is not supported (none, linear)");
  }
  if (auto eps = f.get_f32_opt(key(hp, "attention.layer_norm_rms_epsilon"))) {
    if (!(*eps > 0.0f) || !std::isfinite(*eps))
      fail(ErrorKind::Invalid, f.name() + ": attention.layer_norm_rms_epsilon must be > 0");
    hp.rms_eps = *eps;
  }
  hp.rope_neox = at->rope_neox;
  hp.no_rope_step = at->no_rope_step;
  hp.qk_norm_whole = at->qk_norm_whole;
  hp.kq_scale = 1.0f / std::sqrt(float(hp.head_dim));
  if (at->gemma) {
    hp.embd_scale = std::sqrt(float(hp.n_embd));
    hp.ffn_gelu = true;
  }
  if (at->read_keys) at->read_keys(f, hp);
  read_longrope(f, hp);
  return hp;
}

std::string shape_str(const std::vector<int64_t>& d) {
  std::string s = "[";
  for (size_t i = 0; i < d.size(); ++i) s += (i ? ", " : "") + std::to_string(d[i]);
  return s + "]";
}

const GgufTensorInfo& require_tensor(const GgufFile& f, const std::string& name,
                                     const std::vector<int64_t>& dims) {
  const GgufTensorInfo* t = f.find_tensor(name);
  if (!t) fail(ErrorKind::Invalid, f.name() + ": tensor '" + name + "' is missing");
  if (t->dims != dims)
    fail(ErrorKind::Invalid, f.name() + ": tensor '" + name + "' has shape " +
                                 shape_str(t->dims) + ", expected " + shape_str(dims));
  return *t;
}

Weight load_weight(const GgufFile& f, const std::string& name, int64_t n_in, int64_t n_out) {
  const GgufTensorInfo& t = require_tensor(f, name, {n_in, n_out});
  const TypeTraits* tr = type_traits(t.type);
  if (!tr || !tr->runnable)
    fail(ErrorKind::Unsupported, f.name() + ": tensor '" + name + "' has type " +
                                     type_name(t.type) + ", which this engine cannot run");
  Weight w;
  w.name = name;
  w.type = t.type;
  w.data = f.tensor_data(t);
  w.n_in = n_in;
  w.n_out = n_out;
  uint64_t rb = 0;
  if (!row_bytes(t.type, n_in, &rb))
    fail(ErrorKind::Invalid, f.name() + ": tensor '" + name + "': row length " +
                                 std::to_string(n_in) + " is not a whole number of blocks");
  w.row_bytes = size_t(rb);
  return w;
}

// Rows [first, first + count) of w, as a matrix of its own.
Weight rows_of(const Weight& w, int64_t first, int64_t count, const char* part) {
  Weight r = w;
  r.name = w.name + " (" + part + ")";
  r.data = w.data + size_t(first) * w.row_bytes;
  r.n_out = count;
  return r;
}

// A 1-D tensor of n elements converted to f32.
std::vector<float> load_vector(const GgufFile& f, const std::string& name, int64_t n) {
  const GgufTensorInfo& t = require_tensor(f, name, {n});
  const TypeTraits* tr = type_traits(t.type);
  if (!tr || !tr->runnable)
    fail(ErrorKind::Unsupported, f.name() + ": tensor '" + name + "' has type " +
                                     type_name(t.type) + ", which this engine cannot run");
  std::vector<float> v(static_cast<size_t>(n));
  dequantize_row(t.type, f.tensor_data(t), v.data(), n);
  return v;
}

// Q, K and V: three matrices, or the rows of one fused attn_qkv (phi3; any architecture's file
// may hold one, as llama.cpp reads either).
void load_qkv(const GgufFile& f, const HParams& hp, const std::string& p, LayerWeights& L) {
  const int64_t q_dim = hp.n_head * hp.head_dim, kv_dim = hp.n_head_kv * hp.head_dim;
  if (f.find_tensor(p + "attn_qkv.weight")) {
    const Weight qkv = load_weight(f, p + "attn_qkv.weight", hp.n_embd, q_dim + 2 * kv_dim);
    L.wq = rows_of(qkv, 0, q_dim, "Q");
    L.wk = rows_of(qkv, q_dim, kv_dim, "K");
    L.wv = rows_of(qkv, q_dim + kv_dim, kv_dim, "V");
    return;
  }
  L.wq = load_weight(f, p + "attn_q.weight", hp.n_embd, q_dim);
  L.wk = load_weight(f, p + "attn_k.weight", hp.n_embd, kv_dim);
  L.wv = load_weight(f, p + "attn_v.weight", hp.n_embd, kv_dim);
}

// A bias vector where the tensor exists or `required`; else empty (none).
std::vector<float> load_bias(const GgufFile& f, const std::string& name, int64_t n,
                             bool required) {
  if (!required && !f.find_tensor(name)) return {};
  return load_vector(f, name, n);
}

LayerWeights load_layer(const GgufFile& f, const HParams& hp, int64_t i) {
  const std::string p = "blk." + std::to_string(i) + ".";
  const int64_t q_dim = hp.n_head * hp.head_dim;
  const ArchTraits& at = *arch_traits(hp.arch);
  LayerWeights L;
  if (at.pre_norms) {  // else (olmo2) the branches read the residual stream unnormed
    L.attn_norm = load_vector(f, p + "attn_norm.weight", hp.n_embd);
    L.ffn_norm = load_vector(f, p + "ffn_norm.weight", hp.n_embd);
  }
  load_qkv(f, hp, p, L);
  // Biases (as llama.cpp's graphs: each where present; qwen2's required), added to Q, K and V
  // before their norms and RoPE, and to the attention's output.
  L.bq = load_bias(f, p + "attn_q.bias", q_dim, at.qkv_bias);
  L.bk = load_bias(f, p + "attn_k.bias", hp.n_head_kv * hp.head_dim, at.qkv_bias);
  L.bv = load_bias(f, p + "attn_v.bias", hp.n_head_kv * hp.head_dim, at.qkv_bias);
  if (at.qk_norms) {
    const int64_t heads = hp.qk_norm_whole ? hp.n_head : 1;
    const int64_t kv_heads = hp.qk_norm_whole ? hp.n_head_kv : 1;
    L.q_norm = load_vector(f, p + "attn_q_norm.weight", hp.head_dim * heads);
    L.k_norm = load_vector(f, p + "attn_k_norm.weight", hp.head_dim * kv_heads);
  }
  if (at.post_norms) {
    L.attn_post_norm = load_vector(f, p + "post_attention_norm.weight", hp.n_embd);
    L.ffn_post_norm = load_vector(f, p + "post_ffw_norm.weight", hp.n_embd);
  }
  L.wo = load_weight(f, p + "attn_output.weight", q_dim, hp.n_embd);
  L.bo = load_bias(f, p + "attn_output.bias", hp.n_embd, false);
  for (const char* b : {"ffn_gate.bias", "ffn_up.bias", "ffn_down.bias"})
    if (f.find_tensor(p + b))
      fail(ErrorKind::Unsupported, f.name() + ": tensor '" + p + b + "' is not supported");
  if (at.fused_up) {  // one ffn_up of 2 n_ff rows: the gate's, then the up projection's
    const Weight up = load_weight(f, p + "ffn_up.weight", hp.n_embd, 2 * hp.n_ff);
    L.w_gate = rows_of(up, 0, hp.n_ff, "gate");
    L.w_up = rows_of(up, hp.n_ff, hp.n_ff, "up");
  } else {
    L.w_gate = load_weight(f, p + "ffn_gate.weight", hp.n_embd, hp.n_ff);
    L.w_up = load_weight(f, p + "ffn_up.weight", hp.n_embd, hp.n_ff);
  }
  L.w_down = load_weight(f, p + "ffn_down.weight", hp.n_ff, hp.n_embd);
  return L;
}

// Frequencies divided by the per-pair factors of tensor `factors_name` where it exists (llama3's
// rope_freqs, phi3's rope_factors_short/long); swa: the SWA layers' (base rope_base_swa, no
// factors, no scaling).
std::vector<double> rope_frequencies(const GgufFile& f, const HParams& hp, bool swa = false,
                                     const char* factors_name = "rope_freqs.weight") {
  const int64_t n_pairs = hp.n_rot / 2;
  std::vector<double> freq(static_cast<size_t>(n_pairs));
  std::vector<float> factors;
  if (!swa && f.find_tensor(factors_name)) factors = load_vector(f, factors_name, n_pairs);
  const double log_base = canon::log(swa ? hp.rope_base_swa : hp.rope_base);
  for (int64_t i = 0; i < n_pairs; ++i) {
    double fr = canon::exp(-(double(2 * i) / double(hp.n_rot)) * log_base);
    if (!factors.empty()) {
      if (!(factors[size_t(i)] > 0.0f))
        fail(ErrorKind::Invalid,
             f.name() + ": " + factors_name + " has a factor that is not a positive number");
      fr = fr / double(factors[size_t(i)]);
    }
    freq[size_t(i)] = swa ? fr : fr / hp.rope_linear_scale;
  }
  return freq;
}

}  // namespace

const ArchTraits* arch_traits(const std::string& name) {
  for (const ArchTraits& a : kArchs)
    if (name == a.name) return &a;
  return nullptr;
}

std::string supported_archs() {
  std::string s;
  const size_t n = std::size(kArchs);
  for (size_t i = 0; i < n; ++i)
    s += std::string(i == 0 ? "" : i + 1 == n ? " or " : ", ") + kArchs[i].name;
  return s;
}

std::unique_ptr<Model> Model::load(const GgufFile& f) {
  std::unique_ptr<Model> m(new Model());
  m->file_ = &f;
  HParams& hp = m->hp_;
  hp = read_hparams(f);
  const GgufTensorInfo* emb = f.find_tensor("token_embd.weight");
  if (!emb) fail(ErrorKind::Invalid, f.name() + ": tensor 'token_embd.weight' is missing");
  if (emb->dims.size() != 2 || emb->dims[0] != hp.n_embd)
    fail(ErrorKind::Invalid, f.name() + ": tensor 'token_embd.weight' has shape " +
                                 shape_str(emb->dims) + ", expected [" +
                                 std::to_string(hp.n_embd) + ", n_vocab]");
  hp.n_vocab = emb->dims[1];
  m->token_embd_ = load_weight(f, "token_embd.weight", hp.n_embd, hp.n_vocab);
  m->output_norm_ = load_vector(f, "output_norm.weight", hp.n_embd);
  m->output_ = f.find_tensor("output.weight")
                   ? load_weight(f, "output.weight", hp.n_embd, hp.n_vocab)
                   : m->token_embd_;
  for (int64_t i = 0; i < hp.n_layer; ++i) m->layers_.push_back(load_layer(f, hp, i));
  if (hp.rope_orig_ctx > 0) {  // LongRoPE: the short factors' frequencies, and the long ones'
    m->rope_freq_ = rope_frequencies(f, hp, false, "rope_factors_short.weight");
    m->rope_freq_long_ = rope_frequencies(f, hp, false, "rope_factors_long.weight");
  } else {
    m->rope_freq_ = rope_frequencies(f, hp);
  }
  if (hp.rope_base_swa > 0) m->rope_freq_swa_ = rope_frequencies(f, hp, true);
  for (const GgufTensorInfo& t : f.tensors()) m->n_params_ += t.n_elements;
  return m;
}

void check_eval_tokens(const HParams& hp, int64_t n_past, int64_t n_ctx,
                       const std::vector<int32_t>& tokens) {
  const int64_t n_tok = int64_t(tokens.size());
  if (n_past + n_tok > n_ctx)
    fail(ErrorKind::Invalid, "context limit exceeded: " + std::to_string(n_past + n_tok) +
                                 " tokens, the context holds " + std::to_string(n_ctx) +
                                 " (the model's context_length is " +
                                 std::to_string(hp.n_ctx_train) + ")");
  for (int32_t id : tokens)
    if (id < 0 || id >= hp.n_vocab)
      fail(ErrorKind::Invalid, "token id " + std::to_string(id) + " is outside the vocabulary (" +
                                   std::to_string(hp.n_vocab) + " tokens)");
}

void rope_table_rows(const Model& m, int64_t n_ctx, bool swa, int64_t from, int64_t to,
                     std::vector<float>& cos_t, std::vector<float>& sin_t) {
  const int64_t half = m.hparams().n_rot / 2;
  const std::vector<double>& freq = m.rope_freq(swa, n_ctx);
  const double mscale = swa ? 1.0 : m.hparams().rope_attn_factor;
  cos_t.resize(size_t(to * half));
  sin_t.resize(size_t(to * half));
  for (int64_t p = from; p < to; ++p)
    for (int64_t i = 0; i < half; ++i) {
      double sn, cs;
      canon::sincos(double(p) * freq[size_t(i)], &sn, &cs);
      cos_t[size_t(p * half + i)] = float(cs * mscale);
      sin_t[size_t(p * half + i)] = float(sn * mscale);
    }
}

void embed_token(const Model& m, int32_t token, float* out) {
  const Weight& emb = m.token_embd();
  const HParams& hp = m.hparams();
  dequantize_row(emb.type, emb.data + size_t(token) * emb.row_bytes, out, hp.n_embd);
  if (hp.embd_scale != 1.0f)
    for (int64_t i = 0; i < hp.n_embd; ++i) out[i] = out[i] * hp.embd_scale;
}

void embed_tokens(const Model& m, const std::vector<int32_t>& tokens, std::vector<float>& rows) {
  const size_t d = size_t(m.hparams().n_embd);
  rows.resize(tokens.size() * d);
  for (size_t t = 0; t < tokens.size(); ++t) embed_token(m, tokens[t], &rows[t * d]);
}

void softcap_values(float* x, int64_t n, float cap) {
  for (int64_t i = 0; i < n; ++i) x[i] = canon::softcap(x[i], cap);
}

}  // namespace galleon
