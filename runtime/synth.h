// Synthetic Llama-family models with seeded random weights, for tests and benchmarks
// (throughput and determinism do not depend on trained weights).
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "runtime/ggml_type.h"

namespace galleon {

class GgufFile;
class GgufWriter;

struct SynthSpec {
  // llama | qwen2 (adds Q/K/V biases) | qwen3 (per-head Q/K norms) | phi3 (fused gate and up)
  // | gemma | gemma2 (post-norms) | gemma3 (post-norms and
  // per-head Q/K norms) | granite (the multipliers below) | olmo2 (post-norms only, Q/K norms
  // over whole rows) | smollm3 | exaone | ernie4_5 | internlm2 | exaone4
  std::string arch = "llama";
  // Q, K, V and attention output biases (attn_q/k/v/output.bias) for any architecture (qwen2
  // always has the first three).
  bool attn_biases = false;
  // Q, K and V as one attn_qkv tensor; unset: as the architecture's files have them (phi3's
  // fused, the others' apart).
  std::optional<bool> fused_qkv;
  int64_t n_embd = 256;
  int64_t n_layer = 2;
  int64_t n_head = 4;
  int64_t n_head_kv = 2;
  int64_t head_dim = 0;        // 0: n_embd / n_head; else written as attention.key_length
  int64_t n_ff = 512;
  int64_t n_vocab = 512;       // used when no vocabulary source is given
  int64_t n_ctx = 512;
  GgmlType type = GgmlType::F32;      // type of the 2-D weight matrices
  GgmlType embd_type = GgmlType::F32; // token embedding (and output when tied)
  // attn_v and ffn_down, where set (as llama.cpp's Q4_K_M keeps them in Q6_K); else type.
  std::optional<GgmlType> v_down_type;
  bool tied_output = false;
  uint64_t seed = 1;
  float rope_base = 10000.0f;
  int64_t n_swa = 0;           // gemma2/gemma3: attention.sliding_window where > 0
  float attn_softcap = 0.0f;   // gemma2: the soft caps where > 0
  float final_softcap = 0.0f;
  // granite's multipliers (embedding_scale, residual_scale, attention.scale, logit_scale): its
  // structure (embeddings scaled up, branches down, logits divided), not a release's values.
  float granite_scales[4] = {2.0f, 0.6f, 0.25f, 2.5f};
  // LongRoPE where > 0: rope_factors_short/long.weight (seeded factors in [1, 2) and [1, 8))
  // and rope.scaling.original_context_length = this, rope.scaling.attn_factor = 1.19.
  int64_t longrope_orig_ctx = 0;
  // Copy tokenizer.* metadata from this GGUF (n_vocab then follows its token count).
  const GgufFile* vocab_from = nullptr;
};

// Fills `w` with a complete, runnable model. Same spec, same bytes.
void make_synthetic_model(const SynthSpec& spec, GgufWriter& w);

}  // namespace galleon
