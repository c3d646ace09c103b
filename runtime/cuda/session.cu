// The CUDA session: the forward pass of runtime/session.cpp (docs/arithmetic.md section 9) with
// every value computed by the canonical functions of canon_device.h. Parallelism never splits a
// sum differently: a dot product is one warp (lanes = the 32 canonical lanes, then the shuffle
// tree), a per-block activation quantization is one thread, the attention's 32-lane sums keep
// lane j mod 32 and reduce with the canonical tree. docs/cuda.md.
//
// Compiled with -fmad=false -prec-div=true -prec-sqrt=true -ftz=false (runtime/CMakeLists.txt).
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstdio>
#include <cstring>
#include <initializer_list>
#include <map>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "runtime/cuda/attention.h"
#include "runtime/cuda/attention_kernels.cuh"
#include "runtime/cuda/canon_device.h"
#include "runtime/cuda/cuda_backend.h"
#include "runtime/cuda/cuda_testing.h"
#include "runtime/cuda/forward.h"
#include "runtime/cuda/handles.cuh"
#include "runtime/cuda/matmul_kernels.cuh"
#include "runtime/cuda/matmul_launch.cuh"
#include "runtime/cuda/mma_tile.h"
#include "runtime/cuda/plain_tile.h"
#include "runtime/cuda/step_kernels.cuh"
#include "runtime/cuda/steps.h"
#include "runtime/error.h"
#include "runtime/model.h"
#include "runtime/quant.h"

namespace galleon::cuda {
namespace {

// GALLEON_CUDA_PROFILE=1: the GPU time of each kind of step of the session's prompt batches
// (more than one token), printed to stderr when the session ends. Each timed step waits for its
// kernels, so a profiled prompt is slower than an unprofiled one; decoding steps (and their
// CUDA graphs) are not timed.
class StepProfile {
 public:
  explicit StepProfile(cudaStream_t st) : st_(st) {
    if (!on_) return;
    check(cudaEventCreate(&start_), "cudaEventCreate");
    check(cudaEventCreate(&stop_), "cudaEventCreate");
  }
  StepProfile(const StepProfile&) = delete;
  StepProfile& operator=(const StepProfile&) = delete;
  ~StepProfile() {
    if (!on_) return;
    if (!steps_.empty()) {
      double total = 0;
      for (const auto& [what, st] : steps_) total += st.ms;
      std::fprintf(stderr, "galleon CUDA profile: %.3f ms of GPU time in prompt batches\n", total);
      for (const auto& [what, st] : steps_)
        std::fprintf(stderr, "  %-36s %10.3f ms %5.1f%% %6lld calls\n", what.c_str(), st.ms,
                     100.0 * st.ms / total, static_cast<long long>(st.calls));
    }
    cudaEventDestroy(start_);
    cudaEventDestroy(stop_);
  }
  bool on() const { return on_; }
  // Runs launch(); times it under `what` when profiling a batch of ntok > 1 tokens.
  template <class F>
  void step(const char* what, int64_t ntok, F&& launch) {
    if (!on_ || ntok == 1) return launch();
    check(cudaEventRecord(start_, st_), "cudaEventRecord");
    launch();
    check(cudaEventRecord(stop_, st_), "cudaEventRecord");
    check(cudaEventSynchronize(stop_), "cudaEventSynchronize");
    float ms = 0;
    check(cudaEventElapsedTime(&ms, start_, stop_), "cudaEventElapsedTime");
    Step& st = steps_[what];
    st.ms += ms;
    ++st.calls;
  }

 private:
  struct Step {
    double ms = 0;
    int64_t calls = 0;
  };
  cudaStream_t st_;
  bool on_ = env_flag("GALLEON_CUDA_PROFILE", false);
  cudaEvent_t start_ = nullptr, stop_ = nullptr;
  std::map<std::string, Step> steps_;
};

// The executor of forward() (runtime/cuda/forward.h) on the GPU: every step is a kernel launch
// on one stream. The position comes from the GPU word `pos` (set before each forward pass), not
// from forward()'s argument, so that a captured pass replays at any position.
class CudaExec {
 public:
  explicit CudaExec(cudaStream_t st) : st_(st), profile_(st) {}
  void set_position(const int64_t* pos) { pos_ = pos; }
  // The forward pass's batch (GALLEON_CUDA_PROFILE times the steps of batches of several).
  void set_batch(int64_t ntok) { batch_ = ntok; }
  // Whether the prompt tiles read weights of type t from a packed copy (packs_weights).
  bool packs(GgmlType t) const { return packs_weights(tiles_, path_, t); }
  const void* quantize(GgmlType t, const float* x, int64_t n, int64_t ntok, int slot) {
    return quantize_values("quantize activations", t, PlainValues{x}, n, ntok, slot);
  }
  // The activations of (gelu|silu)(g) * u (forward.h's glu_down): the product made as
  // silu_mul_kernel and gelu_mul_kernel make it, quantized as it is made.
  const void* glu_quantize(bool gelu, GgmlType t, const float* g, const float* u, int64_t n,
                           int64_t ntok, int slot) {
    if (gelu)
      return quantize_values("gelu_mul + quantize", t, GluValues<true>{g, u}, n, ntok, slot);
    return quantize_values("silu_mul + quantize", t, GluValues<false>{g, u}, n, ntok, slot);
  }
  void matmul(const DevWeight& w, const void* act, size_t arb, int64_t ntok, float* y) {
    const DevWeight* ws = &w;
    matmul_group(&ws, &y, 1, act, arb, ntok);
  }
  // n (at most cdev::kMaxGemmParts) matmuls of one input, weights of one type and input width.
  void matmul_group(const DevWeight* const* w, float* const* y, int n, const void* act,
                    size_t arb, int64_t ntok) {
    MatmulGroup g{{}, {}, n, static_cast<const uint8_t*>(act), arb, ntok};
    for (int i = 0; i < n; ++i) g.w[i] = w[i], g.y[i] = y[i];
    std::string what;  // built only when profiling: "matmul Q4_0 (tiles, 3 at once)"
    if (profile_.on()) {
      const bool tiles = use_tiles(w[0]->type, ntok, path_);
      std::string how = tiles ? "tiles" : "";
      if (n > 1)
        how += (tiles ? ", " : "") + std::to_string(n) +
               (tiles && contiguous(g) ? " at once" : " in turn");
      what = std::string("matmul ") + type_name(w[0]->type) + (how.empty() ? "" : " (" + how + ")");
    }
    profile_.step(what.c_str(), batch_, [&] { run_matmuls(g, st_, path_, tiles_); });
  }
  void rms_norm(const float* x, const float* w, int64_t n, float eps, int64_t ntok, float* y) {
    profile_.step("rms_norm", batch_, [&] {
      GALLEON_LAUNCH(unsigned((ntok + kNormWarps - 1) / kNormWarps), 32 * kNormWarps, 0, st_,
                     rms_norm_kernel)(x, w, n, eps, ntok, y);
      check_launch("rms_norm kernel");
    });
  }
  void add(float* x, const float* b, int64_t dim, int64_t total, bool broadcast) {
    profile_.step("add", batch_, [&] {
      GALLEON_LAUNCH(blocks_for(total, 256), 256, 0, st_, add_kernel)(x, b, dim, total, broadcast);
      check_launch("add kernel");
    });
  }
  void rope(float* x, int64_t n_heads, int64_t hd, int64_t n_rot, bool neox, int64_t ntok,
            int64_t /*n_past: pos_*/, const float* cos_t, const float* sin_t) {
    profile_.step("rope", batch_, [&] {
      GALLEON_LAUNCH(blocks_for(ntok * n_heads * (n_rot / 2), 256), 256, 0, st_, rope_kernel)(
          x, n_heads, hd, n_rot, neox, ntok, pos_, cos_t, sin_t);
      check_launch("rope kernel");
    });
  }
  void store_kv(float* cache, const float* src, int64_t /*n_past: pos_*/, int64_t kv_dim,
                int64_t ntok) {
    profile_.step("store_kv", batch_, [&] {
      GALLEON_LAUNCH(blocks_for(ntok * kv_dim, 256), 256, 0, st_, store_kv_kernel)(
          cache, src, pos_, ntok * kv_dim, kv_dim);
      check_launch("KV cache store kernel");
    });
  }
  void attention(const float* q, const float* kc, const float* vc, int64_t n_head, int64_t group,
                 int64_t hd, int64_t kv_dim, int64_t ntok, int64_t n_past, int64_t n_ctx,
                 cdev::attn::ScoreRule rule, float* scores, float* out) {
    // K tiles for prompts only: a block takes G heads of a token, so that a decoding step's
    // n_head / G blocks leave most of the GPU idle (an H200 decoded 1.1B F16 at 303 tok/s
    // with them, 383 without). Several tokens per block where asked and applicable (head
    // dims up to 128), else K tiles (head dims up to 64), else one head per block.
    if (attn_tiles_ && ntok > 1) {
      if (attn_rows_ > 0 && attention_rows(q, kc, vc, n_head, group, hd, kv_dim, ntok, n_past,
                                           rule, out))
        return;
      if (hd <= cdev::attn::kQuadMaxHd)
        return attention_tiles(q, kc, vc, n_head, group, hd, kv_dim, ntok, n_past, n_ctx,
                               rule, scores, out);
    }
    // The scores go to shared memory when they fit in the default 48 KiB with the lanes (n_ctx
    // of them: a decoding step's graph serves every position; the kernel reads it from pos_).
    const size_t lanes = size_t(cdev::attn::lane_floats(hd)) * sizeof(float);
    const size_t with_scores = lanes + size_t(n_ctx) * sizeof(float);
    const bool shared_scores = with_scores <= kAttnShared;
    profile_.step("attention", batch_, [&] {
      GALLEON_LAUNCH(dim3(unsigned(ntok), unsigned(n_head)), kAttnThreads,
                     shared_scores ? with_scores : lanes, st_, attention_kernel)(
          q, kc, vc, n_head, group, hd, kv_dim, pos_, n_ctx, rule, scores, out,
          shared_scores);
      check_launch("attention kernel");
    });
  }
  // attention_rows_kernel with R = attn_rows_ rows per block (R / 2 where R's scores do not fit
  // in attn_shared_; at most 16 for head dims past 64), for groups G of 1 to 8 and head dims up
  // to 128; false where it does not apply (then attention_tiles or attention_kernel).
  bool attention_rows(const float* q, const float* kc, const float* vc, int64_t n_head,
                      int64_t group, int64_t hd, int64_t kv_dim, int64_t ntok, int64_t n_past,
                      cdev::attn::ScoreRule rule, float* out) {
    if (hd % 4 != 0 || kv_dim % 4 != 0 || attn_scratch_ || hd > cdev::attn::kRowsMaxHd)
      return false;
    const int64_t n_kv = n_past + ntok;
    // Head dims past 64 take at most 16 rows (their 2 columns per thread cover 128).
    const bool long_heads = hd > cdev::attn::kQuadMaxHd;
    int rows = long_heads ? 16 : attn_rows_;
    auto bytes = [&](int r) {
      return size_t(cdev::attn::rows_shared_floats(r, hd, n_kv)) * sizeof(float);
    };
    while (rows > 16 && bytes(rows) > attn_shared_) rows /= 2;
    if (bytes(rows) > attn_shared_) return false;
    // T = rows / G tokens per block (G = 1: 16 rows, as 32 tokens of one head spilled 240
    // bytes), the rows rounded up to whole row groups.
    constexpr int64_t kLong = cdev::attn::kRowsMaxHd, kShort = cdev::attn::kQuadMaxHd;
    auto launch = [&]<int G>() {
      constexpr int kWideT = G == 1 ? 16 : 32 / G, kNarrowT = 16 / G;
      const RowsLaunch a{q, kc, vc, n_head, hd, kv_dim, ntok, n_kv, rule, out};
      if (long_heads)
        launch_rows<G, kNarrowT, kLong>(a);
      else if (rows == 32)
        launch_rows<G, kWideT, kShort>(a);
      else
        launch_rows<G, kNarrowT, kShort>(a);
      return true;
    };
    switch (group) {
      case 1: return launch.template operator()<1>();
      case 2: return launch.template operator()<2>();
      case 3: return launch.template operator()<3>();
      case 4: return launch.template operator()<4>();
      case 5: return launch.template operator()<5>();
      case 6: return launch.template operator()<6>();
      case 7: return launch.template operator()<7>();
      case 8: return launch.template operator()<8>();
      default: return false;
    }
  }
  // attention_rows_kernel<G, T, kMaxHd> for a.ntok prompt tokens, the last of them at a.n_kv
  // positions.
  struct RowsLaunch {
    const float *q, *kc, *vc;
    int64_t n_head, hd, kv_dim, ntok, n_kv;
    cdev::attn::ScoreRule rule;
    float* out;
  };
  template <int G, int T, int64_t kMaxHd>
  void launch_rows(const RowsLaunch& a) {
    const size_t shared =
        size_t(cdev::attn::rows_shared_floats(cdev::attn::block_rows(G, T), a.hd, a.n_kv)) *
        sizeof(float);
    allow_shared(attention_rows_kernel<G, T, kMaxHd>, shared);
    profile_.step("attention (rows)", batch_, [&] {
      GALLEON_LAUNCH(dim3(unsigned((a.ntok + T - 1) / T), unsigned(a.n_head / G)), kAttnThreads,
                     shared, st_, attention_rows_kernel<G, T, kMaxHd>)(
          a.q, a.kc, a.vc, a.n_head, a.hd, a.kv_dim, pos_, a.ntok, a.rule, a.out, a.n_kv);
      check_launch("attention kernel (rows)");
    });
  }
  // attention_tiles_kernel<G>: G = group for the group sizes it is built for, else 1.
  void attention_tiles(const float* q, const float* kc, const float* vc, int64_t n_head,
                       int64_t group, int64_t hd, int64_t kv_dim, int64_t ntok, int64_t n_past,
                       int64_t n_ctx, cdev::attn::ScoreRule rule, float* scores, float* out) {
    // A prompt (never in a graph) knows its positions: the last token's n_kv scores per head.
    const int64_t n_kv = n_past + ntok;
    auto launch = [&]<int G>() {
      // hd <= 64: the G q rows and the K tile take at most 22 KiB; then the G heads' scores of
      // n_kv positions when they fit in attn_shared_ (the default 48 KiB: TinyLlama, G = 8, up
      // to 768 positions; 112 KiB on an H100 or H200: 2816), unless GALLEON_CUDA_ATTN_SCRATCH=1
      // (tests: the scratch path with short prompts); after step 4, over them, the lanes of as
      // many heads as fit (8 x 8.1 KiB for TinyLlama).
      auto bytes = [&](int64_t score_floats, int tree_heads) {
        return size_t(cdev::attn::tile_shared_floats(G, hd, score_floats, tree_heads)) *
               sizeof(float);
      };
      // Column warps keep no lanes in shared memory (tree_heads 0).
      const int least_heads = attn_columns_ ? 0 : 1;
      const int64_t score_floats = cdev::attn::ScoreLayout::lane_major_floats(n_kv, G);
      const bool shared_scores =
          bytes(score_floats, least_heads) <= attn_shared_ && !attn_scratch_;
      const int64_t kept = shared_scores ? score_floats : 0;
      int tree_heads = attn_columns_ ? 0 : G;  // as many heads' trees at once as fit
      while (tree_heads > 1 && bytes(kept, tree_heads) > attn_shared_) --tree_heads;
      const size_t shared = bytes(kept, tree_heads);
      auto run = [&]<bool kColumns>() {
        allow_shared(attention_tiles_kernel<G, kColumns>, shared);
        profile_.step("attention (K tiles)", batch_, [&] {
          GALLEON_LAUNCH(dim3(unsigned(ntok), unsigned(n_head / G)), kAttnThreads, shared, st_,
                         attention_tiles_kernel<G, kColumns>)(
              q, kc, vc, n_head, group, hd, kv_dim, pos_, n_ctx, rule, scores, out,
              shared_scores, n_kv, tree_heads);
          check_launch("attention kernel (K tiles)");
        });
      };
      if (attn_columns_)
        run.template operator()<true>();
      else
        run.template operator()<false>();
    };
    switch (group) {
      case 2: return launch.template operator()<2>();
      case 3: return launch.template operator()<3>();
      case 4: return launch.template operator()<4>();
      case 8: return launch.template operator()<8>();
      default: return launch.template operator()<1>();
    }
  }
  // A launch of `kernel` taking `shared` bytes of dynamic shared memory: past the default 48 KiB
  // the kernel must be allowed attn_shared_ first, once per session and kernel.
  template <class... P>
  void allow_shared(void (*kernel)(P...), size_t shared) {
    const void* key = reinterpret_cast<const void*>(kernel);
    if (shared <= kAttnShared || std::find(raised_.begin(), raised_.end(), key) != raised_.end())
      return;
    check(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                               int(attn_shared_)),
          "cudaFuncSetAttribute (attention kernel)");
    raised_.push_back(key);
  }
  // The activation buffers, for CudaSession's graph key.
  const void* act_buffer(int slot) const { return act_[slot].get(); }
  void silu_mul(float* g, const float* u, int64_t total) {
    profile_.step("silu_mul", batch_, [&] {
      GALLEON_LAUNCH(blocks_for(total, 256), 256, 0, st_, silu_mul_kernel)(g, u, total);
      check_launch("silu kernel");
    });
  }
  void gelu_mul(float* g, const float* u, int64_t total) {
    profile_.step("gelu_mul", batch_, [&] {
      GALLEON_LAUNCH(blocks_for(total, 256), 256, 0, st_, gelu_mul_kernel)(g, u, total);
      check_launch("gelu kernel");
    });
  }
  void softcap(float* x, float cap, int64_t total) {
    profile_.step("softcap", batch_, [&] {
      GALLEON_LAUNCH(blocks_for(total, 256), 256, 0, st_, softcap_kernel)(x, cap, total);
      check_launch("softcap kernel");
    });
  }
  void scale(float* x, float s, int64_t total) {
    profile_.step("scale", batch_, [&] {
      GALLEON_LAUNCH(blocks_for(total, 256), 256, 0, st_, scale_kernel)(x, s, total);
      check_launch("scale kernel");
    });
  }

 private:
  // The activations of ntok rows of n values (step_kernels.cuh's PlainValues, GluValues) in
  // activation slot `slot`, timed as step `name`.
  template <class Values>
  const void* quantize_values(const char* name, GgmlType t, Values x, int64_t n, int64_t ntok,
                              int slot) {
    act_[slot].reserve(kern::act_row_bytes(t, n) * size_t(ntok));
    profile_.step(name, batch_,
                  [&] { run_quantize_values(t, x, n, ntok, act_[slot].get(), st_); });
    return act_[slot].get();
  }

  cudaStream_t st_;
  const int64_t* pos_ = nullptr;
  int64_t batch_ = 1;
  StepProfile profile_;
  DeviceBuffer act_[3];
  // The prompt GEMM tiles and the attention's K tiles (GALLEON_CUDA_GEMM=0 and
  // GALLEON_CUDA_ATTN_TILES=0 turn them off; docs/cuda.md).
  MatmulPath path_ = available_path(env_flag("GALLEON_CUDA_GEMM", true) ? MatmulPath::Tiles
                                                                        : MatmulPath::Lanes);
  bool attn_tiles_ = env_flag("GALLEON_CUDA_ATTN_TILES", true);
  bool attn_scratch_ = env_flag("GALLEON_CUDA_ATTN_SCRATCH", false);
  // Steps 4 to 6 of the K-tile kernel by column warps (the default since the H200 timed it,
  // 2026-11-29; GALLEON_CUDA_ATTN_COLUMNS=0: by lane cells and a tree in shared memory).
  bool attn_columns_ = env_flag("GALLEON_CUDA_ATTN_COLUMNS", true);
  // Rows per block of attention_rows_kernel (GALLEON_CUDA_ATTN_ROWS=16 or 32; 0: off, the
  // default until timed on a GPU).
  int attn_rows_ = attention_rows_from_env();
  size_t attn_shared_ = attention_shared_limit();
  // The attention kernels allowed attn_shared_ bytes of dynamic shared memory (allow_shared).
  std::vector<const void*> raised_;
  TileVariant tiles_ = tile_variant_from_env();
};

void select_device(int device) {
  int count = 0;
  const cudaError_t e = cudaGetDeviceCount(&count);
  if (e != cudaSuccess) cuda_fail(e, "no usable GPU (cudaGetDeviceCount)");
  if (device < 0 || device >= count)
    fail(ErrorKind::Unsupported, "CUDA: there is no GPU cuda:" + std::to_string(device) + " (" +
                                     std::to_string(count) + " found)");
  check(cudaSetDevice(device), "cudaSetDevice");
}

class CudaSession final : public Evaluator {
 public:
  CudaSession(const Model& model, int device, int64_t n_ctx);
  int64_t n_ctx() const override { return n_ctx_; }
  void reset() override { n_past_ = 0; }

 private:
  // Rows::Last and Rows::None compute the last row or none (a single token's row always).
  void do_eval(const std::vector<int32_t>& tokens, std::vector<float>& logits,
               Rows rows) override;
  DevWeight upload_weight(const Weight& w);
  void upload_together(std::initializer_list<const Weight*> ws);
  void pack(const DevWeight& d, int64_t rows);
  size_t kept_free() const;
  const float* upload_floats(const std::vector<float>& v);
  void extend_rope_table(int64_t need);

  struct SelectDevice {
    explicit SelectDevice(int device) { select_device(device); }
  };

  // forward() for ntok tokens at n_past_ (the position already uploaded): a single-token step
  // replays a captured graph when the buffers are those it was captured with.
  void run_forward(const Buffers& b, int64_t ntok, int64_t first_logit);
  std::vector<const void*> graph_key(const Buffers& b) const;

  const Model& model_;
  int device_;
  SelectDevice selected_;  // before any other CUDA call
  int64_t n_ctx_ = 0, n_past_ = 0;
  Stream stream_;
  DeviceBuffer pos_;  // n_past_ on the GPU (one int64)
  CudaExec exec_{stream_.get()};
  // Decoding steps run as a CUDA graph (GALLEON_CUDA_GRAPHS=0: never); the kernels and their
  // order are those of an eager step, so the bits are too.
  bool use_graphs_ = env_flag("GALLEON_CUDA_GRAPHS", true) && !sync_every_kernel();
  GraphExec graph_;
  std::vector<const void*> graph_key_, eager_key_;  // buffers of the graph, of the last eager step
  std::vector<std::unique_ptr<DeviceBuffer>> owned_;           // weights and norms
  std::unordered_map<const void*, const uint8_t*> uploaded_;  // host data -> device copy
  std::unordered_map<const uint8_t*, DevWeight> packed_;      // device copy -> its packed copy
  std::vector<DevLayer> layers_;
  DevWeight output_;
  const float* output_norm_ = nullptr;
  // The RoPE tables: [0] every layer's, [1] the SWA layers' where they differ (HParams::swa_rope).
  struct RopeTable {
    DeviceBuffer cos, sin;
    std::vector<float> host_cos, host_sin;
  };
  DeviceBuffer k_cache_, v_cache_;
  RopeTable rope_[2];
  PinnedBuffer host_x_;  // a batch's embedding rows, made on the host
  int64_t rope_rows_ = 0;
  DeviceBuffer x_, xn_, q_, k_, v_, att_, gate_, up_, tmp_, logits_, scores_;
};

CudaSession::CudaSession(const Model& model, int device, int64_t n_ctx)
    : model_(model), device_(device), selected_(device) {
  pos_.reserve(sizeof(int64_t));
  exec_.set_position(pos_.get<int64_t>());
  const HParams& hp = model.hparams();
  n_ctx_ = n_ctx > 0 ? std::min(n_ctx, hp.n_ctx_train) : hp.n_ctx_train;
  for (const LayerWeights& L : model.layers()) {
    upload_together({&L.wq, &L.wk, &L.wv});
    upload_together({&L.w_gate, &L.w_up});
  }
  layers_ = make_layers(
      model, [&](const Weight& w) { return upload_weight(w); },
      [&](const std::vector<float>& v) { return upload_floats(v); });
  output_ = upload_weight(model.output());
  output_norm_ = upload_floats(model.output_norm());
  const size_t cache = size_t(hp.n_layer) * size_t(n_ctx_) * size_t(hp.n_head_kv * hp.head_dim);
  k_cache_.reserve(cache * sizeof(float));
  v_cache_.reserve(cache * sizeof(float));
  const size_t rope = size_t(n_ctx_) * size_t(std::max<int64_t>(hp.n_rot / 2, 1)) * sizeof(float);
  for (int swa = 0; swa < hp.rope_tables(); ++swa) {
    rope_[swa].cos.reserve(rope);
    rope_[swa].sin.reserve(rope);
  }
}

DevWeight CudaSession::upload_weight(const Weight& w) {
  DevWeight d{w.type, w.n_in, w.n_out, w.row_bytes, nullptr};
  if (!cdev::has_kernel(w.type))
    fail(ErrorKind::Unsupported, "CUDA: no kernel for " + w.name + " of type " + type_name(w.type));
  auto it = uploaded_.find(w.data);
  if (it != uploaded_.end()) {
    d.data = it->second;
  } else {
    owned_.push_back(std::make_unique<DeviceBuffer>());
    owned_.back()->upload(w.data, w.row_bytes * size_t(w.n_out));
    d.data = owned_.back()->get<uint8_t>();
    uploaded_[w.data] = d.data;
    pack(d, w.n_out);
  }
  auto p = packed_.find(d.data);
  if (p != packed_.end()) d.pq = p->second.pq, d.ps = p->second.ps, d.packed_rows = p->second.packed_rows;
  return d;
}

// The packed copy of the `rows` rows from d.data, where the session's variant uses one
// (packs_weights), found by upload_weight.
void CudaSession::pack(const DevWeight& d, int64_t rows) {
  if (!exec_.packs(d.type)) return;
  // Only where the GPU keeps room for the rest of the session (kept_free); else the tiles read
  // the rows as t4 does (the same bits).
  size_t free = 0, total = 0;
  check(cudaMemGetInfo(&free, &total), "cudaMemGetInfo");
  if (packed_bytes(d.type, rows, d.n_in) + kept_free() > free) return;
  DevWeight p = d;
  owned_.push_back(std::make_unique<DeviceBuffer>());
  pack_weights(p, d.data, rows, *owned_.back());
  packed_[d.data] = p;
}

// The GPU memory the packed copies of weights leave free: the KV cache, the RoPE tables, and
// the work buffers and every row's logits of a 512-token prompt batch, and 256 MiB besides.
size_t CudaSession::kept_free() const {
  const HParams& hp = model_.hparams();
  const size_t ctx = size_t(n_ctx_), T = 512, F = sizeof(float);
  const size_t q_dim = size_t(hp.n_head * hp.head_dim);
  const size_t kv_dim = size_t(hp.n_head_kv * hp.head_dim);
  const size_t cache = 2 * size_t(hp.n_layer) * ctx * kv_dim * F;
  const size_t rope = 4 * ctx * size_t(std::max<int64_t>(hp.n_rot / 2, 1)) * F;
  const size_t work = T * F *
                      (3 * size_t(hp.n_embd) + 2 * q_dim + 2 * kv_dim + 2 * size_t(hp.n_ff) +
                       size_t(hp.n_vocab) + size_t(hp.n_head) * ctx);
  return cache + rope + work + (size_t(256) << 20);
}

// The weights ws in one allocation, one after the other (as the rows of one matrix): the
// leading ones that share the first's type and input width (so its row size), where there are
// two or more and none is uploaded yet; then run_matmuls computes their matmuls in one launch
// (a Q4_K_M layer: Q and K together, its Q6_K V alone). upload_weight finds them.
void CudaSession::upload_together(std::initializer_list<const Weight*> ws) {
  const Weight& first = **ws.begin();
  std::vector<const Weight*> run;
  for (const Weight* w : ws) {
    if (w->type != first.type || w->n_in != first.n_in) break;
    run.push_back(w);
  }
  size_t bytes = 0;
  for (const Weight* w : run) {
    if (!cdev::has_kernel(w->type) || uploaded_.count(w->data)) return;
    for (const Weight* v : run)
      if (v != w && v->data == w->data) return;
    bytes += w->row_bytes * size_t(w->n_out);
  }
  if (run.size() < 2) return;
  owned_.push_back(std::make_unique<DeviceBuffer>());
  owned_.back()->reserve(bytes);
  uint8_t* at = owned_.back()->get<uint8_t>();
  int64_t rows = 0;
  for (const Weight* w : run) {
    const size_t n = w->row_bytes * size_t(w->n_out);
    check(cudaMemcpy(at, w->data, n, cudaMemcpyHostToDevice), "cudaMemcpy to the GPU");
    uploaded_[w->data] = at;
    at += n;
    rows += w->n_out;
  }
  pack({first.type, first.n_in, rows, first.row_bytes, uploaded_[first.data]}, rows);
}

const float* CudaSession::upload_floats(const std::vector<float>& v) {
  owned_.push_back(std::make_unique<DeviceBuffer>());
  owned_.back()->upload(v.data(), v.size() * sizeof(float));
  return owned_.back()->get<float>();
}

void CudaSession::extend_rope_table(int64_t need) {
  if (rope_rows_ >= need) return;
  const int64_t half = model_.hparams().n_rot / 2;
  if (half == 0) {
    rope_rows_ = need;
    return;
  }
  const size_t off = size_t(rope_rows_ * half), count = size_t((need - rope_rows_) * half);
  for (int swa = 0; swa < model_.hparams().rope_tables(); ++swa) {
    RopeTable& r = rope_[swa];
    rope_table_rows(model_, n_ctx_, swa == 1, rope_rows_, need, r.host_cos, r.host_sin);
    check(cudaMemcpy(r.cos.get<float>() + off, r.host_cos.data() + off, count * 4,
                     cudaMemcpyHostToDevice), "cudaMemcpy (rope table)");
    check(cudaMemcpy(r.sin.get<float>() + off, r.host_sin.data() + off, count * 4,
                     cudaMemcpyHostToDevice), "cudaMemcpy (rope table)");
  }
  rope_rows_ = need;
}

void CudaSession::do_eval(const std::vector<int32_t>& tokens, std::vector<float>& logits,
                          Rows rows) {
  const HParams& hp = model_.hparams();
  const int64_t ntok = int64_t(tokens.size());
  if (ntok == 0) {
    logits.clear();
    return;
  }
  check_eval_tokens(hp, n_past_, n_ctx_, tokens);
  check(cudaSetDevice(device_), "cudaSetDevice");
  const size_t T = size_t(ntok), F = sizeof(float);
  const size_t d = size_t(hp.n_embd);
  const size_t q_dim = size_t(hp.n_head * hp.head_dim), kv_dim = size_t(hp.n_head_kv * hp.head_dim);
  x_.reserve(T * d * F);
  xn_.reserve(T * d * F);
  tmp_.reserve(T * d * F);
  q_.reserve(T * q_dim * F);
  att_.reserve(T * q_dim * F);
  k_.reserve(T * kv_dim * F);
  v_.reserve(T * kv_dim * F);
  gate_.reserve(T * size_t(hp.n_ff) * F);
  up_.reserve(T * size_t(hp.n_ff) * F);
  // Only the rows asked for are computed (a single-token step always makes its row, so that
  // one CUDA graph serves every decoding step); they start at row 0 of logits_.
  const int64_t first = ntok == 1 || rows == Rows::All ? 0 : rows == Rows::Last ? ntok - 1 : ntok;
  logits_.reserve(size_t(std::max<int64_t>(ntok - first, 1)) * size_t(hp.n_vocab) * F);
  scores_.reserve(T * size_t(hp.n_head) * size_t(n_ctx_) * F);
  extend_rope_table(n_past_ + ntok);
  // The embedding rows, dequantized exactly (and scaled, gemma) on the host.
  host_x_.reserve(T * d * F);  // (no copy in flight: the last eval waited for its stream)
  for (size_t t = 0; t < T; ++t) embed_token(model_, tokens[t], host_x_.get<float>() + t * d);
  check(cudaMemcpyAsync(x_.get(), host_x_.get(), T * d * F, cudaMemcpyHostToDevice,
                        stream_.get()),
        "cudaMemcpyAsync (embeddings)");
  const Buffers b{x_.get<float>(),      xn_.get<float>(),     q_.get<float>(),
                  k_.get<float>(),      v_.get<float>(),      att_.get<float>(),
                  tmp_.get<float>(),    gate_.get<float>(),   up_.get<float>(),
                  logits_.get<float>(), scores_.get<float>(), k_cache_.get<float>(),
                  v_cache_.get<float>(), rope_[0].cos.get<float>(), rope_[0].sin.get<float>(),
                  rope_[1].cos.get<float>(), rope_[1].sin.get<float>()};
  check(cudaMemcpyAsync(pos_.get(), &n_past_, sizeof n_past_, cudaMemcpyHostToDevice,
                        stream_.get()),
        "cudaMemcpyAsync (position)");
  run_forward(b, ntok, first);
  logits.resize(rows == Rows::None ? 0 : size_t(ntok - first) * size_t(hp.n_vocab));
  if (!logits.empty())
    check(cudaMemcpyAsync(logits.data(), logits_.get<float>(), logits.size() * F,
                          cudaMemcpyDeviceToHost, stream_.get()),
          "cudaMemcpyAsync (logits)");
  check(cudaStreamSynchronize(stream_.get()), "cudaStreamSynchronize");
  n_past_ += ntok;
}

// The buffers that grow with the batch (the caches and RoPE tables are allocated once, in the
// constructor).
std::vector<const void*> CudaSession::graph_key(const Buffers& b) const {
  return {b.x,   b.xn,   b.q,   b.k,      b.v,      b.att,
          b.tmp, b.gate, b.up,  b.logits, b.scores, exec_.act_buffer(0),
          exec_.act_buffer(1), exec_.act_buffer(2)};
}

void CudaSession::run_forward(const Buffers& b, int64_t ntok, int64_t first_logit) {
  const HParams& hp = model_.hparams();
  exec_.set_batch(ntok);
  auto eager = [&] {
    forward(exec_, hp, layers_, output_, output_norm_, b, ntok, n_past_, n_ctx_, first_logit);
  };
  if (ntok != 1 || !use_graphs_) return eager();
  const std::vector<const void*> key = graph_key(b);
  if (graph_ && key == graph_key_) return graph_.launch(stream_.get());
  if (key != eager_key_) {
    // The first step with these buffers runs eagerly: it allocates what the activation slots
    // need, so that a capture allocates nothing.
    eager();
    eager_key_ = graph_key(b);
    return;
  }
  try {
    check(cudaStreamBeginCapture(stream_.get(), cudaStreamCaptureModeThreadLocal),
          "cudaStreamBeginCapture");
    eager();  // recorded, not run
    graph_.end_capture(stream_.get());
  } catch (const Error&) {
    // No graph on this driver or GPU: end a capture still open and go on without graphs (an
    // error that is not the graph's shows again in the eager pass).
    cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
    if (cudaStreamIsCapturing(stream_.get(), &status) == cudaSuccess &&
        status != cudaStreamCaptureStatusNone) {
      cudaGraph_t g = nullptr;
      cudaStreamEndCapture(stream_.get(), &g);
      if (g) cudaGraphDestroy(g);
    }
    cudaGetLastError();
    graph_.reset();
    use_graphs_ = false;
    return eager();
  }
  graph_key_ = key;
  graph_.launch(stream_.get());
}

}  // namespace

bool built() { return true; }

int device_count(std::string* why) {
  int count = 0;
  const cudaError_t e = cudaGetDeviceCount(&count);
  if (e != cudaSuccess) {
    if (why) *why = std::string(cudaGetErrorString(e)) + " (" + cudaGetErrorName(e) + ")";
    cudaGetLastError();  // clear the sticky-free error state
    return 0;
  }
  if (count == 0 && why) *why = "no CUDA GPU found";
  return count;
}

std::unique_ptr<Evaluator> make_session(const Model& model, int device, int64_t n_ctx) {
  return std::make_unique<CudaSession>(model, device, n_ctx);
}

namespace testing {
namespace {
template <class T>
std::vector<T> download(const DeviceBuffer& b, size_t count) {
  std::vector<T> out(count);
  check(cudaDeviceSynchronize(), "cudaDeviceSynchronize");
  check(cudaMemcpy(out.data(), b.get(), count * sizeof(T), cudaMemcpyDeviceToHost), "cudaMemcpy");
  return out;
}
}  // namespace

std::vector<float> matmul(GgmlType type, int64_t n, int64_t rows, const std::vector<uint8_t>& w,
                          const std::vector<uint8_t>& act, int64_t ntok, MatmulPath path) {
  select_device(0);
  DeviceBuffer dw, da, dy;
  dw.upload(w.data(), w.size());
  da.upload(act.data(), act.size());
  dy.reserve(size_t(rows * ntok) * sizeof(float));
  DevWeight dev{type, n, rows, w.size() / size_t(rows), dw.get<uint8_t>()};
  const TileVariant variant = tile_variant_from_env();
  const MatmulPath available = available_path(path);
  DeviceBuffer packed;
  if (packs_weights(variant, available, type)) pack_weights(dev, dev.data, rows, packed);
  run_matmuls({{&dev}, {dy.get<float>()}, 1, da.get<uint8_t>(), act.size() / size_t(ntok), ntok},
              nullptr, available, variant);
  return download<float>(dy, size_t(rows * ntok));
}

std::vector<uint8_t> quantize(GgmlType type, const std::vector<float>& x, int64_t n, int64_t ntok) {
  select_device(0);
  DeviceBuffer dx, dq;
  dx.upload(x.data(), x.size() * sizeof(float));
  const size_t bytes = kern::act_row_bytes(type, n) * size_t(ntok);
  dq.reserve(bytes);
  run_quantize(type, dx.get<float>(), n, ntok, dq.get(), nullptr);
  return download<uint8_t>(dq, bytes);
}

std::vector<float> map(int op, const std::vector<float>& x) {
  select_device(0);
  DeviceBuffer dx, ones;
  const int64_t total = int64_t(x.size());
  dx.upload(x.data(), x.size() * sizeof(float));
  if (op == 0) {
    GALLEON_LAUNCH(blocks_for(total, 256), 256, 0, 0, expf_kernel)(dx.get<float>(), total);
  } else {
    const std::vector<float> one(x.size(), 1.0f);
    ones.upload(one.data(), one.size() * sizeof(float));
    GALLEON_LAUNCH(blocks_for(total, 256), 256, 0, 0, silu_mul_kernel)(
        dx.get<float>(), ones.get<float>(), total);
  }
  check_launch("map kernel");
  return download<float>(dx, x.size());
}

}  // namespace testing

}  // namespace galleon::cuda
