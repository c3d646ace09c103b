// Llama-family transformer (architectures "llama", "qwen2", "qwen3", "phi3", "gemma", "gemma2",
// "gemma3", "granite", "olmo2", "smollm3", "exaone", "ernie4_5", "internlm2", "exaone4")
// evaluated with the canonical kernels. Model = immutable weights (views into the mapped GGUF);
// Session = KV cache + scratch.
#pragma once

#include <cstdint>
#include <functional>
#include <initializer_list>
#include <utility>
#include <memory>
#include <string>
#include <vector>

#include "runtime/backend.h"
#include "runtime/ggml_type.h"
#include "runtime/kernels.h"
#include "runtime/threadpool.h"

namespace galleon {

class GgufFile;
struct HParams;

// What an architecture's graph has beyond llama's (llama.cpp's graphs of the same names): the
// loader reads, and the synthetic writer (runtime/synth.cpp) writes, the tensors these name.
struct ArchTraits {
  const char* name;
  bool rope_neox = true;    // NeoX rotary pairs (i, i + n_rot/2); false: adjacent pairs
  bool pre_norms = true;    // attn_norm / ffn_norm before the branches (olmo2: none)
  bool qkv_bias = false;    // attn_q/k/v.bias required (qwen2); else each optional
  bool qk_norms = false;    // attn_q_norm / attn_k_norm, per head unless qk_norm_whole
  bool qk_norm_whole = false;  // those norms over each token's whole Q and K rows (olmo2)
  bool post_norms = false;  // post_attention_norm / post_ffw_norm on the branch outputs
  bool fused_up = false;    // phi3: one ffn_up of the gate's rows, then the up projection's
  bool gemma = false;       // embeddings times sqrt(n_embd), a GELU FFN
  int no_rope_step = 0;     // every no_rope_step-th layer without RoPE (smollm3: 4)
  // The architecture's own metadata keys into hp (nullptr: none).
  void (*read_keys)(const GgufFile& f, HParams& hp) = nullptr;
};
// The traits of general.architecture `name`; nullptr where galleon does not run it.
const ArchTraits* arch_traits(const std::string& name);
// The names of the supported architectures, for messages: "llama, qwen2, ... or smollm3".
std::string supported_archs();

struct HParams {
  std::string arch;  // general.architecture: one of ArchTraits' names
  int64_t n_vocab = 0;
  int64_t n_embd = 0;
  int64_t n_layer = 0;
  int64_t n_head = 0;
  int64_t n_head_kv = 0;
  int64_t n_ff = 0;
  int64_t n_ctx_train = 0;
  int64_t head_dim = 0;
  int64_t n_rot = 0;         // rotary dimensions (<= head_dim)
  double rope_base = 10000.0;
  double rope_linear_scale = 1.0;  // positions are divided by this ("linear" scaling)
  // LongRoPE (phi3: rope_factors_long/short): a context longer than this takes the long
  // factors; cos and sin are multiplied by rope_attn_factor. 0: no LongRoPE.
  int64_t rope_orig_ctx = 0;
  double rope_attn_factor = 1.0;
  bool rope_neox = false;    // rotate (i, i + n_rot/2) pairs instead of (2i, 2i+1)
  float rms_eps = 1e-5f;
  float kq_scale = 0.0f;     // attention scores' scale (1 / sqrt(head_dim) unless the arch says)
  // gemma family and granite (docs/arithmetic.md section 9); the defaults change nothing.
  float embd_scale = 1.0f;   // embeddings times this (gemma: sqrt(n_embd))
  float residual_scale = 1.0f;  // each branch's output times this before its residual (granite)
  float logit_scale = 1.0f;  // logits times this (granite: 1 / logit_scale)
  float attn_softcap = 0.0f; // scores s -> cap * tanh(s / cap) (gemma2); 0: none
  float final_softcap = 0.0f;// logits likewise
  bool ffn_gelu = false;     // FFN gate activation GELU (gemma) instead of SiLU
  int64_t n_swa = 0;         // sliding window of the SWA layers (0: none)
  int64_t swa_pattern = 0;   // layer il has the window when il % swa_pattern < swa_pattern - 1
  double rope_base_swa = 0;  // RoPE base of the SWA layers, unscaled (gemma3); 0: as the others
  bool qk_norm_whole = false;  // Q's and K's norms over each token's whole row (olmo2), not heads
  int64_t no_rope_step = 0;  // every no_rope_step-th layer has no RoPE (smollm3: 4); 0: none
  bool rotates(int64_t il) const { return no_rope_step == 0 || (il + 1) % no_rope_step != 0; }
  // Positions a token of layer il attends to before its own (0: all).
  int64_t window(int64_t il) const {
    return n_swa > 0 && il % swa_pattern < swa_pattern - 1 ? n_swa : 0;
  }
  // Layer il's RoPE table: the SWA one (Model::rope_freq(true)).
  bool swa_rope(int64_t il) const { return rope_base_swa > 0 && window(il) > 0; }
  // The RoPE tables the layers use: 2 where the SWA layers have their own.
  int rope_tables() const { return rope_base_swa > 0 ? 2 : 1; }
};

// A 2-D weight matrix: n_out rows of n_in elements, rows row_bytes apart.
struct Weight {
  std::string name;
  GgmlType type = GgmlType::F32;
  const uint8_t* data = nullptr;
  int64_t n_in = 0;
  int64_t n_out = 0;
  size_t row_bytes = 0;
};

struct LayerWeights {
  std::vector<float> attn_norm, ffn_norm;  // empty: none before the branches (olmo2)
  std::vector<float> bq, bk, bv, bo;  // Q, K, V and attention output biases; empty: none
  // RMS norms of Q and K, per head (qwen3, gemma3) or of the whole row (olmo2), else empty
  std::vector<float> q_norm, k_norm;
  // RMS norms of the attention's and the FFN's outputs before their residuals (gemma2, gemma3)
  std::vector<float> attn_post_norm, ffn_post_norm;
  Weight wq, wk, wv, wo, w_gate, w_up, w_down;
};

class Model {
 public:
  // Validates architecture, hyper-parameters and every tensor's presence, type and shape.
  // The GgufFile must outlive the model. Errors name the file and the key or tensor.
  static std::unique_ptr<Model> load(const GgufFile& f);

  const HParams& hparams() const { return hp_; }
  const GgufFile& file() const { return *file_; }
  uint64_t n_params() const { return n_params_; }

  const Weight& token_embd() const { return token_embd_; }
  const Weight& output() const { return output_; }
  const std::vector<float>& output_norm() const { return output_norm_; }
  const std::vector<LayerWeights>& layers() const { return layers_; }
  // Per rotary pair i: the angle of position p is p * rope_freq()[i] (see docs/arithmetic.md);
  // swa: the SWA layers' (HParams::swa_rope); a session of n_ctx positions past a LongRoPE
  // model's rope_orig_ctx takes the long factors' frequencies.
  const std::vector<double>& rope_freq(bool swa = false, int64_t n_ctx = 0) const {
    if (swa) return rope_freq_swa_;
    return !rope_freq_long_.empty() && n_ctx > hp_.rope_orig_ctx ? rope_freq_long_ : rope_freq_;
  }

 private:
  Model() = default;
  const GgufFile* file_ = nullptr;
  HParams hp_;
  uint64_t n_params_ = 0;
  Weight token_embd_, output_;
  std::vector<float> output_norm_;
  std::vector<LayerWeights> layers_;
  std::vector<double> rope_freq_, rope_freq_swa_, rope_freq_long_;
};

// Checks a call of eval (Session or another backend, runtime/backend.h): Error(Invalid) when
// n_past + tokens.size() exceeds n_ctx or a token id is out of range.
void check_eval_tokens(const HParams& hp, int64_t n_past, int64_t n_ctx,
                       const std::vector<int32_t>& tokens);
// The binary32 RoPE table rows of positions [from, to) of a session of n_ctx positions:
// cos/sin[p * (n_rot/2) + i] of double(p) * rope_freq(swa, n_ctx)[i], times rope_attn_factor
// (docs/arithmetic.md section 9). The vectors are resized to hold `to` rows; rows below `from`
// are kept.
void rope_table_rows(const Model& m, int64_t n_ctx, bool swa, int64_t from, int64_t to,
                     std::vector<float>& cos_t, std::vector<float>& sin_t);

// The embedding rows of `tokens`: dequantized exactly, then times embd_scale where that is not
// 1. rows.size() = tokens.size() * n_embd.
void embed_tokens(const Model& m, const std::vector<int32_t>& tokens, std::vector<float>& rows);
// One of them, to out[0 .. n_embd).
void embed_token(const Model& m, int32_t token, float* out);
// Soft capping of n values in place (cap > 0; canon::softcap).
void softcap_values(float* x, int64_t n, float cap);

struct SessionOptions {
  int64_t n_ctx = 0;     // 0: the model's training context
  int n_threads = 1;
  kern::Isa isa = kern::Isa::Scalar;
  // Work (multiply-adds) below which a step runs on the calling thread instead of the pool;
  // 0 splits everything (tests). Never changes a value.
  int64_t min_parallel_work = int64_t(1) << 18;
  // Largest batch the caller will evaluate: the scratch buffers for it are allocated (and their
  // pages touched) by the constructor, not by the first eval. 0: grown on demand.
  int64_t max_batch = 0;
};

// Evaluates tokens against a KV cache. Any split of a sequence into eval() calls (one batch,
// token by token, or chunks) gives the same logits bits.
class Session {
 public:
  Session(const Model& model, const SessionOptions& opts);
  ~Session();

  int64_t n_past() const { return n_past_; }
  int64_t n_ctx() const { return n_ctx_; }
  // Evaluates `tokens` at positions n_past .. n_past + n - 1 and writes n rows of n_vocab logits
  // into `logits` (resized). Error(Invalid) when a token id is out of range, Error(Invalid)
  // when the context limit would be exceeded.
  // LogitRows::Last computes only the last token's row and LogitRows::None none (`logits` is
  // left empty): generation needs the last prompt row only, scoring needs all (docs/cli.md).
  using LogitRows = galleon::LogitRows;
  void eval(const std::vector<int32_t>& tokens, std::vector<float>& logits,
            LogitRows rows = LogitRows::All);
  void reset() { n_past_ = 0; }

 private:
  struct Scratch;
  void reserve(int64_t n_tok);
  // Layer il for n_tok tokens: every token's K and V rows, and the rest only for tokens
  // first .. n_tok - 1 (the last layer where fewer rows of logits are asked).
  void layer_forward(int64_t il, int64_t n_tok, int64_t first);
  void attention(int64_t il, int64_t n_tok, int64_t first);
  template <class F>
  void per_token(int64_t n_tok, int64_t cost, F&& f);
  void parallel_for_work(int64_t n_tasks, int64_t work, const std::function<void(int64_t)>& fn);
  void matmul(const Weight& w, const float* x, int64_t n_tok, float* y);
  void matmuls(const float* x, int64_t n_tok,
               std::initializer_list<std::pair<const Weight*, float*>> outs);

  const Model& model_;
  const kern::Ops& ops_;
  ThreadPool pool_;
  int64_t n_ctx_ = 0;
  int64_t n_past_ = 0;
  int64_t min_parallel_work_ = 0;
  // [layer][KV head][pos][head_dim]: a head's cached rows are one sequential stream for the
  // attention (rows of all heads interleaved made decoding's attention wait on memory).
  std::vector<float> k_cache_, v_cache_;
  size_t cache_row(int64_t layer, int64_t kv_head, int64_t pos) const;  // index of a cached row
  std::unique_ptr<Scratch> s_;
};

}  // namespace galleon
