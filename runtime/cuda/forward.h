// The order of operations of the CUDA forward pass (runtime/session.cpp's, docs/arithmetic.md
// section 9) as a template over the executor X that runs each step: CudaSession launches the
// kernels of runtime/cuda/session.cu; tests/cuda_emu_test.cpp runs the same step functions on
// the CPU, so the orchestration itself is checked bit for bit without a GPU. No CUDA headers.
// X may read the position n_past from elsewhere (CudaExec reads it from GPU memory, so that one
// captured CUDA graph replays every decoding step); it equals the argument.
#pragma once

#include <cmath>
#include <cstdint>
#include <initializer_list>
#include <utility>
#include <vector>

#include "runtime/cuda/attention.h"
#include "runtime/error.h"
#include "runtime/kernels.h"
#include "runtime/model.h"

namespace galleon::cuda {

// A weight matrix where X reads it (GPU memory for CudaSession).
struct DevWeight {
  GgmlType type = GgmlType::F32;
  int64_t n_in = 0, n_out = 0;
  size_t row_bytes = 0;
  const uint8_t* data = nullptr;
  // The packed copy for the prompt tiles (session.cu's variant u4; cdev::mma::pack_lane) of
  // packed_rows rows from data (more than n_out where the weights after it in one allocation
  // are packed with it), or none.
  const uint32_t *pq = nullptr, *ps = nullptr;
  int64_t packed_rows = 0;
};

struct DevLayer {
  // attn_norm == nullptr: no norms before the branches (olmo2); a bias nullptr: none
  const float *attn_norm = nullptr, *ffn_norm = nullptr, *bq = nullptr, *bk = nullptr,
              *bv = nullptr, *bo = nullptr;
  const float *q_norm = nullptr, *k_norm = nullptr;  // nullptr: no per-head norms
  const float *attn_post_norm = nullptr, *ffn_post_norm = nullptr;  // nullptr: none
  DevWeight wq, wk, wv, wo, w_gate, w_up, w_down;
};

// The model's layers with every matrix passed through weight(const Weight&) -> DevWeight and
// every vector through floats(const std::vector<float>&) -> const float*.
template <class WeightFn, class FloatsFn>
std::vector<DevLayer> make_layers(const Model& model, WeightFn weight, FloatsFn floats) {
  std::vector<DevLayer> out;
  for (const LayerWeights& L : model.layers()) {
    DevLayer d;
    if (!L.attn_norm.empty()) {
      d.attn_norm = floats(L.attn_norm);
      d.ffn_norm = floats(L.ffn_norm);
    }
    if (!L.bq.empty()) d.bq = floats(L.bq);
    if (!L.bk.empty()) d.bk = floats(L.bk);
    if (!L.bv.empty()) d.bv = floats(L.bv);
    if (!L.bo.empty()) d.bo = floats(L.bo);
    if (!L.q_norm.empty()) {
      d.q_norm = floats(L.q_norm);
      d.k_norm = floats(L.k_norm);
    }
    if (!L.attn_post_norm.empty()) {
      d.attn_post_norm = floats(L.attn_post_norm);
      d.ffn_post_norm = floats(L.ffn_post_norm);
    }
    d.wq = weight(L.wq);
    d.wk = weight(L.wk);
    d.wv = weight(L.wv);
    d.wo = weight(L.wo);
    d.w_gate = weight(L.w_gate);
    d.w_up = weight(L.w_up);
    d.w_down = weight(L.w_down);
    out.push_back(d);
  }
  return out;
}

// The buffers of a forward pass of ntok tokens: x holds the embeddings on entry; logits gets
// ntok rows of n_vocab. Caches are [layer][n_ctx][kv_dim]; the RoPE tables have rows for every
// position up to n_past + ntok (rope_*_swa: the SWA layers', HParams::swa_rope, else null);
// scores holds ntok * n_head * n_ctx floats.
struct Buffers {
  float *x, *xn, *q, *k, *v, *att, *tmp, *gate, *up, *logits, *scores, *k_cache, *v_cache;
  const float *rope_cos, *rope_sin, *rope_cos_swa, *rope_sin_swa;
};

// Several matmuls of one input; the input is converted once per activation format (into X's
// activation slot s). Where X takes several matmuls at once (matmul_group: CudaExec launches
// them as one grid), consecutive ones of one weight type and input width go together. At most
// 3 outputs (forward's calls).
template <class X>
void matmuls(X& x, const float* in, int64_t ntok,
             std::initializer_list<std::pair<const DevWeight*, float*>> outs) {
  constexpr int kMax = 3;
  if (outs.size() > size_t(kMax))
    fail(ErrorKind::Internal, "CUDA forward: more than 3 matmuls of one input");
  kern::ActFormat formats[kMax];
  const void* acts[kMax];
  size_t arbs[kMax];
  int n_slots = 0;
  const DevWeight* ws[kMax];
  float* ys[kMax];
  int slots[kMax], n = 0;
  for (const auto& [w, y] : outs) {
    const kern::ActFormat f = kern::act_format(w->type);
    int s = 0;
    while (s < n_slots && formats[s] != f) ++s;
    if (s == n_slots) {
      formats[s] = f;
      arbs[s] = kern::act_row_bytes(w->type, w->n_in);
      acts[s] = f == kern::ActFormat::F32 ? in : x.quantize(w->type, in, w->n_in, ntok, s);
      ++n_slots;
    }
    ws[n] = w;
    ys[n] = y;
    slots[n++] = s;
  }
  constexpr bool kGroups = requires { x.matmul_group(ws, ys, 1, acts[0], arbs[0], ntok); };
  for (int i = 0; i < n;) {
    int j = i + 1;
    if constexpr (kGroups) {
      while (j < n && ws[j]->type == ws[i]->type && ws[j]->n_in == ws[i]->n_in) ++j;
      if (j - i > 1) {
        x.matmul_group(ws + i, ys + i, j - i, acts[slots[i]], arbs[slots[i]], ntok);
        i = j;
        continue;
      }
    }
    x.matmul(*ws[i], acts[slots[i]], arbs[slots[i]], ntok, ys[i]);
    i = j;
  }
}

// The FFN's down projection w of (gelu|silu)(gate) * up (n rows of n_ff): where X quantizes
// that product as it makes it (glu_quantize) and w takes quantized activations, one step
// instead of two (the same floats: the same bytes); else the product in gate, then matmuls.
template <class X>
void glu_down(X& x, const HParams& hp, const DevWeight& w, float* gate, const float* up,
              int64_t n, float* out) {
  if constexpr (requires { x.glu_quantize(true, w.type, gate, up, w.n_in, n, 0); }) {
    if (kern::act_format(w.type) != kern::ActFormat::F32) {
      const void* act = x.glu_quantize(hp.ffn_gelu, w.type, gate, up, w.n_in, n, 0);
      x.matmul(w, act, kern::act_row_bytes(w.type, w.n_in), n, out);
      return;
    }
  }
  if (hp.ffn_gelu)
    x.gelu_mul(gate, up, n * hp.n_ff);
  else
    x.silu_mul(gate, up, n * hp.n_ff);
  matmuls(x, gate, n, {{&w, out}});
}

// The logits of tokens first_logit .. ntok - 1 go to rows 0 .. of b.logits (first_logit = 0:
// all; ntok - 1: the last, as Session's LogitRows::Last; ntok: none). As Session's, the last
// layer computes past its attention only the rows of those tokens (the others feed no later
// layer; none asked: nothing past its K and V).
template <class X>
void forward(X& x, const HParams& hp, const std::vector<DevLayer>& layers, const DevWeight& output,
             const float* output_norm, const Buffers& b, int64_t ntok, int64_t n_past,
             int64_t n_ctx, int64_t first_logit) {
  const int64_t d = hp.n_embd, hd = hp.head_dim;
  const int64_t q_dim = hp.n_head * hd, kv_dim = hp.n_head_kv * hd;
  // A branch's output (b.tmp) added to the residual stream: post-normed where the layer has a
  // post-norm, times residual_scale where that is not 1 (runtime/session.cpp's finish_branch).
  // (of the n rows from row r0)
  auto residual = [&](const float* post_norm, int64_t r0, int64_t n) {
    float* tmp = b.tmp + r0 * d;
    if (post_norm) x.rms_norm(tmp, post_norm, d, hp.rms_eps, n, tmp);
    if (hp.residual_scale != 1.0f) x.scale(tmp, hp.residual_scale, n * d);
    x.add(b.x + r0 * d, tmp, d, n * d, false);
  };
  for (size_t il = 0; il < layers.size(); ++il) {
    const DevLayer& L = layers[il];
    const bool swa_rope = hp.swa_rope(int64_t(il));
    const float* cos_t = swa_rope ? b.rope_cos_swa : b.rope_cos;
    const float* sin_t = swa_rope ? b.rope_sin_swa : b.rope_sin;
    if (L.attn_norm) x.rms_norm(b.x, L.attn_norm, d, hp.rms_eps, ntok, b.xn);
    matmuls(x, L.attn_norm ? b.xn : b.x, ntok, {{&L.wq, b.q}, {&L.wk, b.k}, {&L.wv, b.v}});
    if (L.bq) x.add(b.q, L.bq, q_dim, ntok * q_dim, true);
    if (L.bk) x.add(b.k, L.bk, kv_dim, ntok * kv_dim, true);
    if (L.bv) x.add(b.v, L.bv, kv_dim, ntok * kv_dim, true);
    if (L.q_norm) {  // each head's row (olmo2: each token's) normed in place
      const int64_t qn = hp.qk_norm_whole ? q_dim : hd, kn = hp.qk_norm_whole ? kv_dim : hd;
      x.rms_norm(b.q, L.q_norm, qn, hp.rms_eps, ntok * (q_dim / qn), b.q);
      x.rms_norm(b.k, L.k_norm, kn, hp.rms_eps, ntok * (kv_dim / kn), b.k);
    }
    if (hp.n_rot >= 2 && hp.rotates(int64_t(il))) {
      x.rope(b.q, hp.n_head, hd, hp.n_rot, hp.rope_neox, ntok, n_past, cos_t, sin_t);
      x.rope(b.k, hp.n_head_kv, hd, hp.n_rot, hp.rope_neox, ntok, n_past, cos_t, sin_t);
    }
    float* kc = b.k_cache + int64_t(il) * n_ctx * kv_dim;
    float* vc = b.v_cache + int64_t(il) * n_ctx * kv_dim;
    x.store_kv(kc, b.k, n_past, kv_dim, ntok);
    x.store_kv(vc, b.v, n_past, kv_dim, ntok);
    // Past the attention, the n rows from row r0 (every row but in the last layer).
    const int64_t r0 = il + 1 == layers.size() ? first_logit : 0, n = ntok - r0;
    if (n <= 0) break;
    const cdev::attn::ScoreRule rule{hp.kq_scale, hp.attn_softcap, hp.window(int64_t(il))};
    x.attention(b.q, kc, vc, hp.n_head, hp.n_head / hp.n_head_kv, hd, kv_dim, ntok, n_past, n_ctx,
                rule, b.scores, b.att);
    float* tmp = b.tmp + r0 * d;
    matmuls(x, b.att + r0 * q_dim, n, {{&L.wo, tmp}});
    if (L.bo) x.add(tmp, L.bo, d, n * d, true);
    residual(L.attn_post_norm, r0, n);
    float* xn = b.xn + r0 * d;
    if (L.ffn_norm) x.rms_norm(b.x + r0 * d, L.ffn_norm, d, hp.rms_eps, n, xn);
    float *gate = b.gate + r0 * hp.n_ff, *up = b.up + r0 * hp.n_ff;
    matmuls(x, L.ffn_norm ? xn : b.x + r0 * d, n, {{&L.w_gate, gate}, {&L.w_up, up}});
    glu_down(x, hp, L.w_down, gate, up, n, tmp);
    residual(L.ffn_post_norm, r0, n);
  }
  const int64_t n_logits = ntok - first_logit;
  if (n_logits <= 0) return;
  x.rms_norm(b.x + first_logit * d, output_norm, d, hp.rms_eps, n_logits, b.xn);
  matmuls(x, b.xn, n_logits, {{&output, b.logits}});
  if (hp.logit_scale != 1.0f) x.scale(b.logits, hp.logit_scale, n_logits * hp.n_vocab);
  if (hp.final_softcap > 0.0f) x.softcap(b.logits, hp.final_softcap, n_logits * hp.n_vocab);
}

}  // namespace galleon::cuda
