// Forward pass of the Llama-family transformer. Every operation follows docs/arithmetic.md;
// threads split output rows or (token, head) pairs, never a reduction.
#include <algorithm>
#include <cmath>
#include <cstring>

#include "runtime/canon_math.h"
#include "runtime/error.h"
#include "runtime/gguf.h"
#include "runtime/model.h"
#include "runtime/quant.h"

namespace galleon {

struct Session::Scratch {
  std::vector<float> x, xn, q, k, v, att, gate, up, tmp;
  std::vector<uint8_t> act;              // quantized activations
  std::vector<uint8_t> panel;            // activations repacked for the prompt GEMM
  std::vector<float> rope_cos, rope_sin; // [pos][n_rot/2], grown on demand
  std::vector<float> rope_cos_swa, rope_sin_swa;  // the SWA layers' (HParams::swa_rope)
  int64_t rope_rows = 0;

  // Per-token rows for a batch of n_tok tokens.
  void resize_rows(const HParams& hp, int64_t n_tok) {
    const size_t T = size_t(n_tok);
    const size_t d = size_t(hp.n_embd), q_dim = size_t(hp.n_head * hp.head_dim);
    const size_t kv_dim = size_t(hp.n_head_kv * hp.head_dim), ff = size_t(hp.n_ff);
    for (auto* r : {&x, &xn, &tmp}) r->resize(T * d);
    for (auto* r : {&q, &att}) r->resize(T * q_dim);
    for (auto* r : {&k, &v}) r->resize(T * kv_dim);
    for (auto* r : {&gate, &up}) r->resize(T * ff);
  }
};

namespace {

// y = (x * (1 / sqrt(mean(x^2) + eps))) * w, canonical sum of squares.
void rms_norm(const kern::Ops& ops, const float* x, const float* w, int64_t n, float eps,
              float* y) {
  const float mean = ops.sum_sq(x, n) / float(n);
  const float scale = 1.0f / std::sqrt(mean + eps);
  ops.scale_mul(y, x, scale, w, n);
}

void rotate(float* x, int64_t n_rot, bool neox, const float* c, const float* s) {
  const int64_t half = n_rot / 2;
  for (int64_t i = 0; i < half; ++i) {
    const int64_t a = neox ? i : 2 * i;
    const int64_t b = neox ? i + half : 2 * i + 1;
    const float x0 = x[a], x1 = x[b];
    x[a] = x0 * c[i] - x1 * s[i];
    x[b] = x0 * s[i] + x1 * c[i];
  }
}

// A branch's output o before its residual: RMS-normed where the layer has a post-norm (gemma2,
// gemma3, olmo2), then times residual_scale (granite).
void finish_branch(const kern::Ops& ops, const HParams& hp, const std::vector<float>& post_norm,
                   float* o) {
  if (!post_norm.empty()) rms_norm(ops, o, post_norm.data(), hp.n_embd, hp.rms_eps, o);
  if (hp.residual_scale != 1.0f) ops.scale(o, hp.residual_scale, hp.n_embd);
}

// Rows per matmul task: a multiple of 16 giving each thread a few tasks.
int64_t rows_per_task(int64_t n_rows, int n_threads) {
  int64_t per = (n_rows + 4 * n_threads - 1) / (4 * n_threads);
  per = (per + 15) / 16 * 16;
  return std::max<int64_t>(per, 16);
}

}  // namespace

Session::Session(const Model& model, const SessionOptions& opts)
    : model_(model), ops_(kern::ops(opts.isa)), pool_(opts.n_threads),
      min_parallel_work_(opts.min_parallel_work), s_(new Scratch) {
  const HParams& hp = model.hparams();
  n_ctx_ = opts.n_ctx > 0 ? std::min(opts.n_ctx, hp.n_ctx_train) : hp.n_ctx_train;
  const size_t kv_dim = size_t(hp.n_head_kv * hp.head_dim);
  k_cache_.resize(size_t(hp.n_layer) * size_t(n_ctx_) * kv_dim);
  v_cache_.resize(size_t(hp.n_layer) * size_t(n_ctx_) * kv_dim);
  if (opts.max_batch > 0) reserve(std::min(opts.max_batch, n_ctx_));
}

// Allocates (zeroed, so the pages are touched) every scratch buffer a batch of n_tok tokens
// uses: the rows, and for each matmuls() group the activations and panels of its weights.
void Session::reserve(int64_t n_tok) {
  s_->resize_rows(model_.hparams(), n_tok);
  size_t act = 0, panel = 0;
  auto group = [&](std::initializer_list<const Weight*> ws) {
    size_t a = 0, p = 0;
    for (const Weight* w : ws) {
      a += kern::act_row_bytes(w->type, w->n_in) * size_t(n_tok);
      p += ops_.panel_bytes ? ops_.panel_bytes(w->type, w->n_in, n_tok) : 0;
    }
    act = std::max(act, a);
    panel = std::max(panel, p);
  };
  for (const LayerWeights& L : model_.layers()) {
    group({&L.wq, &L.wk, &L.wv});
    group({&L.wo});
    group({&L.w_gate, &L.w_up});
    group({&L.w_down});
  }
  group({&model_.output()});
  s_->act.resize(act);
  s_->panel.resize(panel + 64);
}

Session::~Session() = default;

size_t Session::cache_row(int64_t layer, int64_t kv_head, int64_t pos) const {
  const HParams& hp = model_.hparams();
  return ((size_t(layer) * size_t(hp.n_head_kv) + size_t(kv_head)) * size_t(n_ctx_) + size_t(pos)) *
         size_t(hp.head_dim);
}

void Session::matmul(const Weight& w, const float* x, int64_t n_tok, float* y) {
  matmuls(x, n_tok, {{&w, y}});
}

// Several matmuls sharing one input: the activations are converted once per format, and all
// row chunks of all weights are one parallel_for (one synchronisation instead of several).
void Session::matmuls(const float* x, int64_t n_tok,
                      std::initializer_list<std::pair<const Weight*, float*>> outs) {
  struct Job {
    const Weight* w;
    float* y;
    const uint8_t* act;
    size_t arb;
    int64_t per, first_task;
    const uint8_t* panel;  // when the path repacks the activations for this case
    size_t panel_bytes;
  };
  Job jobs[4];
  size_t n_jobs = 0;
  int64_t n_tasks = 0;
  size_t act_total = 0;
  for (const auto& [w, y] : outs) {
    const size_t arb = kern::act_row_bytes(w->type, w->n_in);
    const int64_t per = rows_per_task(w->n_out, pool_.size());
    jobs[n_jobs++] = {w, y, nullptr, arb, per, n_tasks, nullptr, 0};
    n_tasks += (w->n_out + per - 1) / per;
    act_total += arb * size_t(n_tok);
  }
  if (s_->act.size() < act_total) s_->act.resize(act_total);
  // Convert the input once per distinct activation format.
  size_t offset = 0;
  for (size_t j = 0; j < n_jobs; ++j) {
    for (size_t k = 0; k < j && !jobs[j].act; ++k)
      if (kern::act_format(jobs[k].w->type) == kern::act_format(jobs[j].w->type) &&
          jobs[k].w->n_in == jobs[j].w->n_in)
        jobs[j].act = jobs[k].act;
    if (jobs[j].act) continue;
    uint8_t* act = s_->act.data() + offset;
    offset += jobs[j].arb * size_t(n_tok);
    const Job& jb = jobs[j];
    per_token(n_tok, jb.w->n_in, [&](int64_t t) {
      ops_.quantize_act(jb.w->type, x + t * jb.w->n_in, act + size_t(t) * jb.arb, jb.w->n_in);
    });
    jobs[j].act = act;
  }
  // Repack each distinct activation once for the prompt GEMM when the path does that.
  size_t panel_total = 0;
  for (size_t j = 0; j < n_jobs; ++j) {
    jobs[j].panel_bytes = ops_.panel_bytes ? ops_.panel_bytes(jobs[j].w->type, jobs[j].w->n_in, n_tok) : 0;
    panel_total += jobs[j].panel_bytes;
  }
  if (panel_total > 0) {
    if (s_->panel.size() < panel_total + 64) s_->panel.resize(panel_total + 64);
    uint8_t* base = s_->panel.data() + (64 - reinterpret_cast<uintptr_t>(s_->panel.data()) % 64) % 64;
    for (size_t j = 0; j < n_jobs; ++j) {
      Job& jb = jobs[j];
      if (jb.panel_bytes == 0) continue;
      for (size_t k = 0; k < j && !jb.panel; ++k)
        if (jobs[k].act == jb.act && jobs[k].panel && jobs[k].w->type == jb.w->type) jb.panel = jobs[k].panel;
      if (jb.panel) continue;
      uint8_t* panel = base;
      base += jb.panel_bytes;
      parallel_for_work((n_tok + 15) / 16, 8 * n_tok * jb.w->n_in, [&](int64_t g) {
        ops_.pack_panel(jb.w->type, jb.w->n_in, jb.act, jb.arb, n_tok, g, panel);
      });
      jb.panel = panel;
    }
  }
  int64_t work = 0;
  for (size_t j = 0; j < n_jobs; ++j) work += n_tok * jobs[j].w->n_in * jobs[j].w->n_out;
  parallel_for_work(n_tasks, work, [&](int64_t task) {
    size_t j = 0;
    while (j + 1 < n_jobs && task >= jobs[j + 1].first_task) ++j;
    const Job& jb = jobs[j];
    const int64_t r0 = (task - jb.first_task) * jb.per;
    const int64_t r1 = std::min(jb.w->n_out, r0 + jb.per);
    if (jb.panel)
      return ops_.matmul_panel(jb.w->type, jb.w->n_in, jb.w->data, jb.w->row_bytes, r0, r1, jb.panel,
                               n_tok, jb.y, size_t(jb.w->n_out));
    ops_.matmul(jb.w->type, jb.w->n_in, jb.w->data, jb.w->row_bytes, r0, r1, jb.act, jb.arb, n_tok,
                jb.y, size_t(jb.w->n_out));
  });
}

// Per (token, KV head): the scores of the heads sharing that KV head are one F32 matmul (the
// canonical dot_f32 of q and each cached k), then per head the softmax and the 32-lane weighted
// sum of V rows (lane j mod 32 accumulates e_j * v_j in increasing j, then the fixed tree).
// Gemma: scores soft-capped; in a windowed layer those of positions before the window -inf (so
// e_j = 0: every position is visited, whatever the window).
void Session::attention(int64_t il, int64_t n_tok, int64_t first) {
  const HParams& hp = model_.hparams();
  const int64_t hd = hp.head_dim;
  const int64_t group = hp.n_head / hp.n_head_kv;
  const float kq_scale = hp.kq_scale;
  const int64_t window = hp.window(il);
  const int64_t q_dim = hp.n_head * hd;
  // Multiply-adds, weighted 8 times a matmul's: each comes with cache reads, its share
  // of an expf and of the lane trees (with weight 1, decoding ran the attention of a 124M model
  // on one thread up to 170 positions; split, decoding after 128 positions is 3-5% faster).
  const int64_t work = 8 * (n_tok - first) * hp.n_head * (n_past_ + n_tok) * hd * 2;
  parallel_for_work((n_tok - first) * hp.n_head_kv, work, [&](int64_t task) {
    thread_local std::vector<float> scores, e, lanes, ones;
    const int64_t t = first + task / hp.n_head_kv;
    const int64_t hk = task % hp.n_head_kv;
    const int64_t n_kv = n_past_ + t + 1;
    const float* kc = &k_cache_[cache_row(il, hk, 0)];
    const float* vc = &v_cache_[cache_row(il, hk, 0)];
    if (int64_t(scores.size()) < group * n_kv) scores.resize(size_t(group * n_kv));
    if (int64_t(e.size()) < n_kv) e.resize(size_t(n_kv));
    if (int64_t(ones.size()) < n_kv) ones.assign(size_t(n_kv), 1.0f);
    if (int64_t(lanes.size()) < 32 * hd) lanes.resize(size_t(32 * hd));
    const float* q0 = s_->q.data() + t * q_dim + hk * group * hd;
    ops_.matmul(GgmlType::F32, hd, kc, size_t(hd) * 4, 0, n_kv, q0, size_t(hd) * 4, group,
                scores.data(), size_t(n_kv));
    for (int64_t g = 0; g < group; ++g) {
      float* sc = scores.data() + g * n_kv;
      ops_.scale(sc, kq_scale, n_kv);
      if (hp.attn_softcap > 0.0f) softcap_values(sc, n_kv, hp.attn_softcap);
      for (int64_t j = 0; window > 0 && j + window < n_kv; ++j) sc[j] = -INFINITY;
      float mx = -INFINITY;
      for (int64_t j = 0; j < n_kv; ++j) mx = std::max(mx, sc[j]);
      ops_.exp_sub(e.data(), sc, mx, n_kv);
      const float sum = ops_.dot_f32(e.data(), ones.data(), n_kv);  // e_j * 1 = e_j, lane j mod 32
      float* out = s_->att.data() + t * q_dim + (hk * group + g) * hd;
      ops_.lane_rows(e.data(), vc, hd, n_kv, hd, lanes.data(), out);
      for (int64_t d = 0; d < hd; ++d) out[d] = out[d] / sum;
    }
  });
}

// Runs f(t) for every token, in parallel when the batch is large enough (cost: elements
// touched per token).
template <class F>
void Session::per_token(int64_t n_tok, int64_t cost, F&& f) {
  if (n_tok == 1) return f(int64_t(0));
  parallel_for_work(n_tok, 8 * n_tok * cost, f);
}

// fn(task) for every task, across the threads unless `work` (multiply-adds) is too small to
// pay for the synchronisation. Either way each task computes the same values.
void Session::parallel_for_work(int64_t n_tasks, int64_t work, const std::function<void(int64_t)>& fn) {
  if (work < min_parallel_work_) {
    for (int64_t t = 0; t < n_tasks; ++t) fn(t);
    return;
  }
  pool_.parallel_for(n_tasks, fn);
}

void Session::layer_forward(int64_t il, int64_t n_tok, int64_t first) {
  const HParams& hp = model_.hparams();
  const LayerWeights& L = model_.layers()[size_t(il)];
  Scratch& s = *s_;
  const int64_t d = hp.n_embd, hd = hp.head_dim;
  const int64_t q_dim = hp.n_head * hd, kv_dim = hp.n_head_kv * hd;
  // olmo2 has no norms before its branches: they read the residual stream itself.
  const float* attn_in = L.attn_norm.empty() ? s.x.data() : s.xn.data();
  if (!L.attn_norm.empty())
    per_token(n_tok, d, [&](int64_t t) {
      rms_norm(ops_, &s.x[size_t(t * d)], L.attn_norm.data(), d, hp.rms_eps, &s.xn[size_t(t * d)]);
    });
  matmuls(attn_in, n_tok, {{&L.wq, s.q.data()}, {&L.wk, s.k.data()}, {&L.wv, s.v.data()}});
  const int64_t half = hp.n_rot / 2;
  const bool swa_rope = hp.swa_rope(il);
  const float* cos_t = (swa_rope ? s.rope_cos_swa : s.rope_cos).data();
  const float* sin_t = (swa_rope ? s.rope_sin_swa : s.rope_sin).data();
  per_token(n_tok, q_dim + 2 * kv_dim, [&](int64_t t) {
    float* q = &s.q[size_t(t * q_dim)];
    float* k = &s.k[size_t(t * kv_dim)];
    float* v = &s.v[size_t(t * kv_dim)];
    if (!L.bq.empty()) ops_.add(q, L.bq.data(), q_dim);
    if (!L.bk.empty()) ops_.add(k, L.bk.data(), kv_dim);
    if (!L.bv.empty()) ops_.add(v, L.bv.data(), kv_dim);
    if (!L.q_norm.empty()) {  // each head's row (olmo2: the whole row) normed in place
      const int64_t qn = hp.qk_norm_whole ? q_dim : hd, kn = hp.qk_norm_whole ? kv_dim : hd;
      for (int64_t i = 0; i < q_dim; i += qn)
        rms_norm(ops_, q + i, L.q_norm.data(), qn, hp.rms_eps, q + i);
      for (int64_t i = 0; i < kv_dim; i += kn)
        rms_norm(ops_, k + i, L.k_norm.data(), kn, hp.rms_eps, k + i);
    }
    const int64_t pos = n_past_ + t;
    const float* c = cos_t + pos * half;
    const float* sn = sin_t + pos * half;
    const int64_t n_rot = hp.rotates(il) ? hp.n_rot : 0;  // smollm3's NoPE layers: none
    for (int64_t h = 0; h < hp.n_head; ++h) rotate(q + h * hd, n_rot, hp.rope_neox, c, sn);
    for (int64_t h = 0; h < hp.n_head_kv; ++h) rotate(k + h * hd, n_rot, hp.rope_neox, c, sn);
    for (int64_t h = 0; h < hp.n_head_kv; ++h) {
      std::memcpy(&k_cache_[cache_row(il, h, pos)], k + h * hd, size_t(hd) * sizeof(float));
      std::memcpy(&v_cache_[cache_row(il, h, pos)], v + h * hd, size_t(hd) * sizeof(float));
    }
  });
  if (first == n_tok) return;  // no row asked past the K and V rows
  // From here on, tokens first .. n_tok - 1: n rows from row first of each buffer.
  const int64_t n = n_tok - first;
  attention(il, n_tok, first);
  matmul(L.wo, s.att.data() + first * q_dim, n, s.tmp.data() + first * d);
  per_token(n, d, [&](int64_t i) {
    const int64_t t = first + i;
    float* o = &s.tmp[size_t(t * d)];
    if (!L.bo.empty()) ops_.add(o, L.bo.data(), d);
    finish_branch(ops_, hp, L.attn_post_norm, o);
    ops_.add(&s.x[size_t(t * d)], o, d);
    if (!L.ffn_norm.empty())
      rms_norm(ops_, &s.x[size_t(t * d)], L.ffn_norm.data(), d, hp.rms_eps, &s.xn[size_t(t * d)]);
  });
  const float* ffn_in = (L.ffn_norm.empty() ? s.x.data() : s.xn.data()) + first * d;
  float* gate = s.gate.data() + first * hp.n_ff;
  matmuls(ffn_in, n, {{&L.w_gate, gate}, {&L.w_up, s.up.data() + first * hp.n_ff}});
  per_token(n, 4 * hp.n_ff, [&](int64_t i) {
    const int64_t t = first + i;
    (hp.ffn_gelu ? ops_.gelu_mul : ops_.silu_mul)(&s.gate[size_t(t * hp.n_ff)],
                                                  &s.up[size_t(t * hp.n_ff)], hp.n_ff);
  });
  matmul(L.w_down, gate, n, s.tmp.data() + first * d);
  per_token(n, d, [&](int64_t i) {
    const int64_t t = first + i;
    float* o = &s.tmp[size_t(t * d)];
    finish_branch(ops_, hp, L.ffn_post_norm, o);
    ops_.add(&s.x[size_t(t * d)], o, d);
  });
}

void Session::eval(const std::vector<int32_t>& tokens, std::vector<float>& logits, LogitRows rows) {
  const HParams& hp = model_.hparams();
  const int64_t n_tok = int64_t(tokens.size());
  if (n_tok == 0) {
    logits.clear();
    return;
  }
  check_eval_tokens(hp, n_past_, n_ctx_, tokens);
  Scratch& s = *s_;
  const size_t T = size_t(n_tok);
  const int64_t d = hp.n_embd;
  s.resize_rows(hp, n_tok);
  // RoPE table up to the last position.
  const int64_t need = n_past_ + n_tok;
  if (s.rope_rows < need) {
    rope_table_rows(model_, n_ctx_, false, s.rope_rows, need, s.rope_cos, s.rope_sin);
    if (hp.rope_base_swa > 0)
      rope_table_rows(model_, n_ctx_, true, s.rope_rows, need, s.rope_cos_swa, s.rope_sin_swa);
    s.rope_rows = need;
  }
  for (size_t t = 0; t < T; ++t) embed_token(model_, tokens[t], &s.x[t * size_t(d)]);
  // The rows of logits asked for: tokens first .. n_tok - 1 (none: first = n_tok). The last
  // layer computes only their rows past its K and V (the other tokens' rows of the residual
  // stream feed no later layer), the same bits as all rows.
  const int64_t first = rows == LogitRows::All ? 0 : rows == LogitRows::Last ? n_tok - 1 : n_tok;
  for (int64_t il = 0; il < hp.n_layer; ++il)
    layer_forward(il, n_tok, il + 1 == hp.n_layer ? first : 0);
  if (rows == LogitRows::None) {
    logits.clear();
    n_past_ += n_tok;
    return;
  }
  per_token(n_tok - first, d, [&](int64_t i) {
    const size_t t = size_t(first + i);
    rms_norm(ops_, &s.x[t * size_t(d)], model_.output_norm().data(), d, hp.rms_eps,
             &s.xn[t * size_t(d)]);
  });
  logits.resize(size_t(n_tok - first) * size_t(hp.n_vocab));
  matmul(model_.output(), s.xn.data() + first * d, n_tok - first, logits.data());
  if (hp.logit_scale != 1.0f) ops_.scale(logits.data(), hp.logit_scale, int64_t(logits.size()));
  if (hp.final_softcap > 0.0f)
    softcap_values(logits.data(), int64_t(logits.size()), hp.final_softcap);
  n_past_ += n_tok;
}

}  // namespace galleon
