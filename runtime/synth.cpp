#include "runtime/synth.h"

#include <cmath>
#include <vector>

#include "runtime/error.h"
#include "runtime/gguf.h"
#include "runtime/model.h"
#include "runtime/quant.h"
#include "runtime/sampler.h"

namespace galleon {
namespace {

// Uniform values in [-scale, scale] (+ offset), quantized to `type`.
void add_random(GgufWriter& w, Rng& rng, const std::string& name, GgmlType type,
                std::vector<int64_t> dims, float scale, float offset = 0.0f) {
  int64_t n = 1;
  for (int64_t d : dims) n *= d;
  std::vector<float> v(static_cast<size_t>(n));
  for (float& x : v) x = offset + (rng.uniform() * 2.0f - 1.0f) * scale;
  uint64_t rb = 0;
  if (!row_bytes(type, dims[0], &rb))
    fail(ErrorKind::Invalid, "synthetic tensor " + name + ": row length " +
                                 std::to_string(dims[0]) + " does not fit type " +
                                 type_name(type));
  const int64_t rows = n / dims[0];
  std::vector<uint8_t> bytes(size_t(rb) * size_t(rows));
  for (int64_t r = 0; r < rows; ++r)
    quantize_row(type, v.data() + r * dims[0], bytes.data() + size_t(r) * size_t(rb), dims[0]);
  w.add_tensor(name, type, std::move(dims), bytes.data(), bytes.size());
}

// A SentencePiece-style vocabulary: <unk> <s> </s>, 256 byte tokens, then pieces.
void synthetic_vocab(GgufWriter& w, int64_t n_vocab) {
  std::vector<GgufValue> tokens, scores, types;
  auto add = [&](std::string t, float s, int32_t ty) {
    tokens.push_back(GgufValue::make_string(std::move(t)));
    scores.push_back(GgufValue::make_f32(s));
    types.push_back(GgufValue::make_i32(ty));
  };
  add("<unk>", 0, 2);
  add("<s>", 0, 3);
  add("</s>", 0, 3);
  const char* hex = "0123456789ABCDEF";
  for (int b = 0; b < 256; ++b) add(std::string("<0x") + hex[b >> 4] + hex[b & 15] + ">", 0, 6);
  const std::string letters = "etaoinshrdlucmfwypvbgkjqxz";
  for (int64_t i = 0; int64_t(tokens.size()) < n_vocab; ++i) {
    std::string piece = "\xe2\x96\x81";  // a leading U+2581 marks a word start
    int64_t k = i;
    do {
      piece += letters[size_t(k % 26)];
      k /= 26;
    } while (k > 0);
    add(piece, -float(i), 1);
  }
  w.set("tokenizer.ggml.model", GgufValue::make_string("llama"));
  w.set("tokenizer.ggml.tokens", GgufValue::make_array(GgufValueType::STRING, tokens));
  w.set("tokenizer.ggml.scores", GgufValue::make_array(GgufValueType::F32, scores));
  w.set("tokenizer.ggml.token_type", GgufValue::make_array(GgufValueType::I32, types));
  w.set("tokenizer.ggml.bos_token_id", GgufValue::make_u32(1));
  w.set("tokenizer.ggml.eos_token_id", GgufValue::make_u32(2));
  w.set("tokenizer.ggml.unknown_token_id", GgufValue::make_u32(0));
}

int64_t copy_vocab(GgufWriter& w, const GgufFile& src) {
  int64_t n = 0;
  for (const auto& [k, v] : src.metadata()) {
    if (k.rfind("tokenizer.", 0) != 0) continue;
    if (k == "tokenizer.ggml.tokens") n = int64_t(v.arr.size());
    w.set(k, v);
  }
  if (n == 0) fail(ErrorKind::Invalid, src.name() + ": no tokenizer.ggml.tokens to copy");
  return n;
}

void set_hparams(GgufWriter& w, const SynthSpec& s) {
  const std::string a = s.arch + ".";
  w.set("general.architecture", GgufValue::make_string(s.arch));
  w.set("general.name", GgufValue::make_string("synthetic"));
  w.set(a + "context_length", GgufValue::make_u32(uint32_t(s.n_ctx)));
  w.set(a + "embedding_length", GgufValue::make_u32(uint32_t(s.n_embd)));
  w.set(a + "feed_forward_length", GgufValue::make_u32(uint32_t(s.n_ff)));
  w.set(a + "block_count", GgufValue::make_u32(uint32_t(s.n_layer)));
  w.set(a + "attention.head_count", GgufValue::make_u32(uint32_t(s.n_head)));
  w.set(a + "attention.head_count_kv", GgufValue::make_u32(uint32_t(s.n_head_kv)));
  w.set(a + "rope.freq_base", GgufValue::make_f32(s.rope_base));
  if (s.head_dim > 0) {
    w.set(a + "attention.key_length", GgufValue::make_u32(uint32_t(s.head_dim)));
    w.set(a + "attention.value_length", GgufValue::make_u32(uint32_t(s.head_dim)));
  }
  w.set(a + "attention.layer_norm_rms_epsilon", GgufValue::make_f32(1e-5f));
  // gemma3 must name its window: Gemma 3 1B's where the spec gives none.
  const int64_t n_swa = s.n_swa > 0 ? s.n_swa : s.arch == "gemma3" ? 512 : 0;
  if (n_swa > 0) w.set(a + "attention.sliding_window", GgufValue::make_u32(uint32_t(n_swa)));
  if (s.arch == "granite") {
    const char* keys[] = {"embedding_scale", "residual_scale", "attention.scale", "logit_scale"};
    for (int i = 0; i < 4; ++i) w.set(a + keys[i], GgufValue::make_f32(s.granite_scales[i]));
  }
  if (s.attn_softcap > 0)
    w.set(a + "attn_logit_softcapping", GgufValue::make_f32(s.attn_softcap));
  if (s.final_softcap > 0)
    w.set(a + "final_logit_softcapping", GgufValue::make_f32(s.final_softcap));
}

}  // namespace

void make_synthetic_model(const SynthSpec& s, GgufWriter& w) {
  const ArchTraits* arch = arch_traits(s.arch);
  if (!arch)
    fail(ErrorKind::Usage, "synthetic model: architecture '" + s.arch + "' is not one of " +
                               supported_archs());
  const ArchTraits& at = *arch;
  set_hparams(w, s);
  const int64_t n_vocab = s.vocab_from ? copy_vocab(w, *s.vocab_from) : s.n_vocab;
  if (!s.vocab_from) synthetic_vocab(w, n_vocab);
  Rng rng(s.seed);
  const int64_t d = s.n_embd, hd = s.head_dim > 0 ? s.head_dim : s.n_embd / s.n_head;
  const int64_t q_dim = s.n_head * hd, kv_dim = s.n_head_kv * hd;
  const float in_scale = 1.0f / std::sqrt(float(d)), ff_scale = 1.0f / std::sqrt(float(s.n_ff));
  add_random(w, rng, "token_embd.weight", s.embd_type, {d, n_vocab}, 1.0f);
  add_random(w, rng, "output_norm.weight", GgmlType::F32, {d}, 0.1f, 1.0f);
  if (!s.tied_output) add_random(w, rng, "output.weight", s.type, {d, n_vocab}, in_scale);
  if (s.longrope_orig_ctx > 0) {
    const int64_t pairs = (s.head_dim > 0 ? s.head_dim : d / s.n_head) / 2;
    add_random(w, rng, "rope_factors_short.weight", GgmlType::F32, {pairs}, 0.5f, 1.5f);
    add_random(w, rng, "rope_factors_long.weight", GgmlType::F32, {pairs}, 3.5f, 4.5f);
    w.set(s.arch + ".rope.scaling.original_context_length",
          GgufValue::make_u32(uint32_t(s.longrope_orig_ctx)));
    w.set(s.arch + ".rope.scaling.attn_factor", GgufValue::make_f32(1.19f));
  }
  const GgmlType v_down = s.v_down_type.value_or(s.type);
  for (int64_t i = 0; i < s.n_layer; ++i) {
    const std::string p = "blk." + std::to_string(i) + ".";
    if (at.pre_norms) add_random(w, rng, p + "attn_norm.weight", GgmlType::F32, {d}, 0.1f, 1.0f);
    if (s.fused_qkv.value_or(at.fused_up)) {
      add_random(w, rng, p + "attn_qkv.weight", s.type, {d, q_dim + 2 * kv_dim}, in_scale);
    } else {
      add_random(w, rng, p + "attn_q.weight", s.type, {d, q_dim}, in_scale);
      add_random(w, rng, p + "attn_k.weight", s.type, {d, kv_dim}, in_scale);
      add_random(w, rng, p + "attn_v.weight", v_down, {d, kv_dim}, in_scale);
    }
    if (at.qkv_bias || s.attn_biases) {
      add_random(w, rng, p + "attn_q.bias", GgmlType::F32, {q_dim}, 0.1f);
      add_random(w, rng, p + "attn_k.bias", GgmlType::F32, {kv_dim}, 0.1f);
      add_random(w, rng, p + "attn_v.bias", GgmlType::F32, {kv_dim}, 0.1f);
    }
    if (at.qk_norms) {
      const bool whole = at.qk_norm_whole;
      const int64_t q_norm = whole ? q_dim : hd, k_norm = whole ? kv_dim : hd;
      add_random(w, rng, p + "attn_q_norm.weight", GgmlType::F32, {q_norm}, 0.1f, 1.0f);
      add_random(w, rng, p + "attn_k_norm.weight", GgmlType::F32, {k_norm}, 0.1f, 1.0f);
    }
    add_random(w, rng, p + "attn_output.weight", s.type, {q_dim, d}, in_scale);
    if (s.attn_biases) add_random(w, rng, p + "attn_output.bias", GgmlType::F32, {d}, 0.1f);
    if (at.post_norms)
      add_random(w, rng, p + "post_attention_norm.weight", GgmlType::F32, {d}, 0.1f, 1.0f);
    if (at.pre_norms) add_random(w, rng, p + "ffn_norm.weight", GgmlType::F32, {d}, 0.1f, 1.0f);
    if (at.fused_up) {  // the gate's rows, then the up projection's, in one tensor
      add_random(w, rng, p + "ffn_up.weight", s.type, {d, 2 * s.n_ff}, in_scale);
    } else {
      add_random(w, rng, p + "ffn_gate.weight", s.type, {d, s.n_ff}, in_scale);
      add_random(w, rng, p + "ffn_up.weight", s.type, {d, s.n_ff}, in_scale);
    }
    add_random(w, rng, p + "ffn_down.weight", v_down, {s.n_ff, d}, ff_scale);
    if (at.post_norms)
      add_random(w, rng, p + "post_ffw_norm.weight", GgmlType::F32, {d}, 0.1f, 1.0f);
  }
}

}  // namespace galleon
