// The attention kernels: one block per (token, head) for decoding and the one-lane path, the
// K-tile kernel of G heads per block for prompts, several tokens per block
// (GALLEON_CUDA_ATTN_ROWS); and the shared memory they may take (docs/cuda.md, "Design").
//
// Part of runtime/cuda/session.cu's translation unit (its definitions are in an unnamed
// namespace): only session.cu includes it.
#pragma once

#include <cstdint>
#include <cstdlib>

#include "runtime/cuda/attention.h"
#include "runtime/cuda/canon_device.h"
#include "runtime/cuda/handles.cuh"

namespace galleon::cuda {
namespace {

constexpr int kAttnThreads = cdev::attn::kThreads;
constexpr size_t kAttnShared = 48 * 1024;  // the default dynamic shared memory of a block

// One block per (token, head); the scores e live in shared memory after the lanes when
// `shared_scores`, else in scratch (n_ctx floats per (token, head)). The steps are those of
// runtime/cuda/attention.h (emulated on the CPU by cuda_emu_test):
// 1. s_j = rule(dot_f32(q, k_j)) (the scale, gemma's cap and window), one warp per j;
// 2. m = max s_j (each warp's running maximum in j order, then the warps' in order: a maximum is
// the same in any order, NaN never replacing it; of +0 and -0 either may win, and e_j is the
// same for both);  3. e_j = expf(s_j - m);  4. the 32 lanes (j mod 32) of e_j * v_j[d] and of
// e_j, one thread per (lane, d);  5. the canonical tree over the lanes in shared memory;
// 6. o_d = L[0][d] / sum.
__global__ void attention_kernel(const float* q, const float* kc, const float* vc, int64_t n_head,
                                 int64_t group, int64_t hd, int64_t kv_dim, const int64_t* n_past,
                                 int64_t n_ctx, cdev::attn::ScoreRule rule, float* scratch,
                                 float* out, bool shared_scores) {
  GALLEON_DYNAMIC_SHARED(float, lanes);  // attn::lane_floats(hd) [+ n_ctx scores]
  __shared__ float s_max, s_warp_max[32];
  const int64_t t = blockIdx.x, h = blockIdx.y;
  const int64_t n_kv = *n_past + t + 1;
  const int64_t q_dim = n_head * hd;
  const int64_t off = (h / group) * hd;
  const float* qr = q + t * q_dim + h * hd;
  float* e = shared_scores ? lanes + cdev::attn::lane_floats(hd)
                           : scratch + (t * n_head + h) * n_ctx;
  const int lane = int(threadIdx.x) & 31, warp = int(threadIdx.x) >> 5;
  const int n_warps = int(blockDim.x) >> 5;
  float wmax = -INFINITY;  // this warp's maximum (lane 0's)
  for (int64_t j = warp; j < n_kv; j += n_warps) {
    const float v = cdev::warp_tree(cdev::lane_dot_f32(qr, kc + j * kv_dim + off, hd, lane));
    const float s = rule(v, j, n_kv);
    if (lane == 0) e[j] = s;
    wmax = cdev::attn::max_step(wmax, s);
  }
  if (lane == 0) s_warp_max[warp] = wmax;
  __syncthreads();
  if (threadIdx.x == 0) {
    float mx = -INFINITY;
    for (int w = 0; w < n_warps; ++w) mx = cdev::attn::max_step(mx, s_warp_max[w]);
    s_max = mx;
  }
  __syncthreads();
  const float mx = s_max;
  for (int64_t j = threadIdx.x; j < n_kv; j += blockDim.x) e[j] = cdev::expf(e[j] - mx);
  __syncthreads();
  const int tid = int(threadIdx.x), n_threads = int(blockDim.x), width = int(hd) + 1;
  cdev::attn::for_cells(tid, n_threads, width, 32, [&](int l, int d) {
    cdev::attn::lane_cell(l, d, hd, e, vc + off, kv_dim, n_kv, lanes);
  });
  __syncthreads();
  for (int s = 16; s >= 1; s >>= 1) {
    cdev::attn::for_cells(tid, n_threads, width, s,
                          [&](int i, int d) { cdev::attn::tree_cell(s, i, d, hd, lanes); });
    __syncthreads();
  }
  for (int64_t d = threadIdx.x; d < hd; d += blockDim.x)
    out[t * q_dim + h * hd + d] = cdev::attn::output(lanes, hd, d);
}

// The butterfly of runtime/cuda/attention.h's step 5 by column warps over a warp: N items, at
// stride S, of which a lane holds n.
template <int N, int S, int n>
__device__ void column_tree(int lane, float (&v)[N]) {
  if constexpr (S >= 1) {
    constexpr int half = n / 2;
#pragma unroll
    for (int k = 0; k < (half > 0 ? half : 1); ++k)
      cdev::attn::butterfly_add(
          lane, S, half, v, k,
          __shfl_xor_sync(0xffffffffu, cdev::attn::butterfly_sent(lane, S, half, v, k), S));
    column_tree<N, S / 2, (half > 0 ? half : 1)>(lane, v);
  }
}

// Steps 4 to 6 of attention_tiles_kernel by column warps (runtime/cuda/attention.h, "Step 4 by
// column warps"): V tiles staged in the block's shared memory from `tile_at` floats on (the K
// tile's place), each warp's lane sums of its 8 columns of the G heads, their trees by shuffles,
// warp g < G the e lanes' of head g; then o_d = L[0][d] / (the e lanes' L[0]) to out (the G
// heads' rows hd floats apart). The scores: `scores`, in shared memory from `scores_at` floats on
// when lane-major. Shared memory is addressed from the shared array itself, so that the compiler
// emits shared loads (it did not for pointers passed in). Every thread of the block calls it.
template <int G>
__device__ void column_warps_output(const float* v, int64_t kv_dim, int64_t hd, int64_t n_kv,
                                    const cdev::attn::ScoreLayout& scores, int64_t scores_at,
                                    int64_t tile_at, float* out) {
  namespace attn = cdev::attn;
  GALLEON_DYNAMIC_SHARED(float, shared);
  float* tile = shared + tile_at;
  constexpr int kW = attn::kColWidth, kItems = attn::column_items(G);
  static_assert(G <= kAttnThreads / 32, "a warp per head's e lanes");
  __shared__ float s_sum[G];
  const int tid = int(threadIdx.x), lane = tid & 31, warp = tid >> 5, col0 = warp * kW;
  const int64_t stride = attn::v_tile_stride(hd);
  const bool lane_major = scores.step != 32;
  const attn::ScoreLayout kept{shared + scores_at, scores.head, scores.lane, scores.step};
  float acc[kW][G];
#pragma unroll
  for (int c = 0; c < kW; ++c)
#pragma unroll
    for (int g = 0; g < G; ++g) acc[c][g] = 0.0f;
  const attn::VTileStager stager(tid, v, kv_dim, int(hd), stride);
  for (int64_t j0 = 0; j0 < n_kv; j0 += attn::kVTileRows) {  // block-uniform
    const int64_t left = n_kv - j0, rows = left < attn::kVTileRows ? left : attn::kVTileRows;
    if (j0 > 0) __syncthreads();  // the previous tile read (the first: step 3's barrier)
    stager.stage(j0, int(rows), tile);
    __syncthreads();
    if (col0 >= hd) continue;  // warp-uniform
    const int64_t k = j0 >> 5;  // the lane's k-th position, j0 + lane
    if (lane_major)
      attn::column_tile_cells<G, G>(lane, tile, stride, col0, rows,
                                    kept.base + lane * kept.lane + k * G, 1, acc);
    else
      attn::column_tile_cells<G, 32>(lane, tile, stride, col0, rows,
                                     scores.base + lane * scores.lane + k * 32, scores.head, acc);
  }
  if (warp < G) {  // warp-uniform: head warp's e lanes, their tree (every lane gets L[0])
    float e = lane_major ? attn::lane_score_sum(lane, n_kv, kept, warp)
                         : attn::lane_score_sum(lane, n_kv, scores, warp);
#pragma unroll
    for (int s = 16; s >= 1; s >>= 1)
      attn::butterfly_add(lane, s, 0, &e, 0,
                          __shfl_xor_sync(0xffffffffu, attn::butterfly_sent(lane, s, 0, &e, 0), s));
    if (lane == 0) s_sum[warp] = e;
  }
  float items[kItems];
#pragma unroll
  for (int x = 0; x < kItems; ++x) items[x] = x < G * kW ? acc[x % kW][x / kW] : 0.0f;
  if (col0 < hd) column_tree<kItems, 16, kItems>(lane, items);  // warp-uniform
  __syncthreads();  // s_sum written
  if (col0 >= hd || !attn::butterfly_writer(lane, kItems)) return;
  const int first = attn::butterfly_first(lane, kItems);
#pragma unroll
  for (int i = 0; i < attn::butterfly_count(kItems); ++i) {
    const int x = first + i, g = x / kW, d = col0 + x % kW;
    if (g < G && d < hd) out[g * hd + d] = items[i] / s_sum[g];
  }
}

// Steps 1 and 2 of the K-tile kernels for N rows (q rows in the quad layout from qs, q_row floats
// apart; row r over positions j < row_n(r) <= n_kv): the scores s_j = rule(dot_f32(q, k_j)),
// 64 K rows at a time staged in ks (coalesced loads), 4 threads per score
// (attn::score_quad_part, then the tree's last two steps by shuffles within the quad), each K
// row's values read once for the N rows; then each row's maximum: per thread, per warp, then
// the warps in order, to s_max. Every thread of the block calls it; s_max is ready on return.
template <int N, int64_t kMaxHd = cdev::attn::kQuadMaxHd, class RowN>
__device__ void attn_scores(const float* qs, int64_t q_row, float* ks, const float* k,
                            int64_t kv_dim, int64_t hd, int64_t n_kv, RowN row_n,
                            const cdev::attn::ScoreLayout& scores, cdev::attn::ScoreRule rule,
                            float (&s_warp_max)[kAttnThreads / 32][N], float (&s_max)[N]) {
  namespace attn = cdev::attn;
  const int tid = int(threadIdx.x), lane = tid & 31, warp = tid >> 5;
  const int u = tid & 3, row = tid >> 2;
  const int64_t stride = attn::quad_tile_stride(hd);
  float thread_max[N];
#pragma unroll
  for (int r = 0; r < N; ++r) thread_max[r] = -INFINITY;
  for (int64_t j0 = 0; j0 < n_kv; j0 += attn::kQuadTileRows) {  // block-uniform
    const int64_t left = n_kv - j0, rows = left < attn::kQuadTileRows ? left : attn::kQuadTileRows;
    __syncthreads();  // q written; the previous tile read
    attn::stage_k_rows<kMaxHd>(tid, k + j0 * kv_dim, kv_dim, int(hd), int(rows), stride, ks);
    __syncthreads();
    // This thread's elements of its K row, read once for the N rows' scores.
    float kv[attn::kQuadValuesOf<kMaxHd>] = {};
    if (row < rows) attn::quad_values(ks + row * stride, hd, u, kv);
#pragma unroll
    for (int r = 0; r < N; ++r) {
      float part = 0.0f;
      if constexpr (kMaxHd > attn::kQuadMaxHd) {  // q a block at a time: fewer registers
        if (row < rows) part = attn::score_quad_row(qs + r * q_row, kv, hd, u);
      } else {
        float qv[attn::kQuadValuesOf<kMaxHd>];
        attn::quad_values(qs + r * q_row, hd, u, qv);
        part = row < rows ? attn::score_quad_part(qv, kv, hd, u) : 0.0f;
      }
      const float a = part + __shfl_down_sync(0xffffffffu, part, 2);
      const float sum = a + __shfl_down_sync(0xffffffffu, a, 1);
      if (u == 0 && row < rows && j0 + row < row_n(r)) {
        const float sc = rule(sum, j0 + row, row_n(r));
        scores.at(r, j0 + row) = sc;
        thread_max[r] = attn::max_step(thread_max[r], sc);
      }
    }
  }
#pragma unroll
  for (int r = 0; r < N; ++r) {
    const float wm = warp_max(thread_max[r]);
    if (lane == 0) s_warp_max[warp][r] = wm;
  }
  __syncthreads();
  if (tid < N) {
    float mx = -INFINITY;
    for (int w = 0; w < kAttnThreads / 32; ++w) mx = attn::max_step(mx, s_warp_max[w][tid]);
    s_max[tid] = mx;
  }
  __syncthreads();
}

// attention_kernel's steps with K tiles (GALLEON_CUDA_ATTN_TILES=1, head dims <= 64), one block
// per token and G consecutive query heads of one KV head (G = the model's group of query heads
// per KV head when a kernel is built for it, else 1): 64 K rows at a time are staged in shared
// memory (coalesced loads) and serve the G heads' scores, 4 threads per score
// (attn::score_quad_part, then the tree's last two steps by shuffles within the quad); each V
// element read serves the G heads' lane sums. So K and V come from L2 once per KV head instead
// of once per query head. Per head the values are attention_kernel's: the same scores, maximum
// (any order), e_j, lane sums (positions j = l mod 32 in increasing order, from 0) and tree.
// Lane cells (32 x (hd + 1)) per thread at most.
constexpr int kTileCells = int((32 * (cdev::attn::kQuadMaxHd + 1) + kAttnThreads - 1) / kAttnThreads);

// kColumns (GALLEON_CUDA_ATTN_COLUMNS=1): steps 4 to 6 by column warps (attn::column_tile_cells,
// then column_warps_output), tree_heads unused.
template <int G, bool kColumns>
__global__ void __launch_bounds__(kAttnThreads, 2)  // 2 blocks per SM: at most 128 registers
    attention_tiles_kernel(const float* q, const float* kc, const float* vc, int64_t n_head,
                           int64_t group, int64_t hd, int64_t kv_dim, const int64_t* n_past,
                           int64_t n_ctx, cdev::attn::ScoreRule rule, float* scratch,
                           float* out, bool shared_scores, int64_t n_kv_scores, int tree_heads) {
  // G q rows | K tile | [the scores of G heads, n_kv_scores positions, lane-major], the q rows
  // and the K tile in the quad layout (attn::quad_pos); after step 4 the lanes of tree_heads
  // heads over the K tile and the scores (attn::tile_shared_floats).
  GALLEON_DYNAMIC_SHARED(float, qs);
  __shared__ float s_warp_max[kAttnThreads / 32][G], s_max[G];
  // The last tokens (the most positions) first: the GPU starts the longest blocks first, and
  // the short ones fill in after them.
  const int64_t t = int64_t(gridDim.x) - 1 - blockIdx.x;
  const int64_t h0 = int64_t(blockIdx.y) * G;  // query heads h0 .. h0 + G - 1
  const int64_t n_kv = *n_past + t + 1;
  const int64_t q_dim = n_head * hd, off = (h0 / group) * hd;
  const int64_t q_row = cdev::attn::quad_row_floats(hd);
  float* ks = qs + G * q_row;
  float* es = ks + cdev::attn::tile_k_floats(hd);
  const cdev::attn::ScoreLayout scores =
      shared_scores ? cdev::attn::ScoreLayout::lane_major(es, n_kv_scores, G)
                    : cdev::attn::ScoreLayout::linear(scratch + (t * n_head + h0) * n_ctx, n_ctx);
  const int tid = int(threadIdx.x);
#pragma unroll
  for (int g = 0; g < G; ++g)
    cdev::attn::stage_q_row(tid, kAttnThreads, q + t * q_dim + (h0 + g) * hd, hd, qs + g * q_row);
  // 1, 2. The G heads' scores and maxima.
  attn_scores<G>(qs, q_row, ks, kc + off, kv_dim, hd, n_kv, [&](int) { return n_kv; }, scores,
                 rule, s_warp_max, s_max);
  // 3. e_j = expf(s_j - m).
#pragma unroll
  for (int g = 0; g < G; ++g)
    for (int64_t j = tid; j < n_kv; j += kAttnThreads) {
      float& e = scores.at(g, j);
      e = cdev::expf(e - s_max[g]);
    }
  __syncthreads();
  if constexpr (kColumns) {
    column_warps_output<G>(vc + off, kv_dim, hd, n_kv, scores, es - qs, ks - qs,
                           out + t * q_dim + h0 * hd);
    return;
  }
  // 4. Lane cells (lane l, column d; d == hd: the e lanes) of every head at once.
  const int width = int(hd) + 1;
  float acc[kTileCells][G];
  int at[kTileCells];  // each cell's place in `lanes` (-1: no cell)
  cdev::attn::CellWalk cell(tid, kAttnThreads, width);
#pragma unroll
  for (int k = 0; k < kTileCells; ++k, cell.next()) {
#pragma unroll
    for (int g = 0; g < G; ++g) acc[k][g] = 0.0f;
    const int l = cell.row(), d = cell.col();
    at[k] = l >= 32 ? -1 : cdev::attn::lane_index(l, d, hd);
    if (l >= 32) continue;
    if (d == hd) {
      cdev::attn::score_lane_sums<G>(l, n_kv, scores, acc[k]);
      continue;
    }
    cdev::attn::weighted_lane_cell<G>(l, vc + off + d, kv_dim, n_kv, scores, acc[k]);
  }
  // 5, 6. tree_heads heads at a time (all G where shared memory allows: 7 barriers rather than
  // 7 per head): their lanes to shared memory, each head's tree, o_d = L[0][d] / sum.
  float* lanes = ks;
  const int64_t head_lanes = cdev::attn::lane_floats(hd);
  for (int g0 = 0; g0 < G; g0 += tree_heads) {  // block-uniform
    const int heads = G - g0 < tree_heads ? G - g0 : tree_heads;
    __syncthreads();  // the scores (step 4) or the previous heads' lanes (step 6) read
#pragma unroll
    for (int g = 0; g < G; ++g)
      if (g >= g0 && g < g0 + heads)
#pragma unroll
        for (int k = 0; k < kTileCells; ++k)
          if (at[k] >= 0) lanes[(g - g0) * head_lanes + at[k]] = acc[k][g];
    __syncthreads();
    for (int ls = 4; ls >= 0; --ls) {  // stride 1 << ls; rows (head, i < stride)
      cdev::attn::for_cells(tid, kAttnThreads, width, heads << ls, [&](int r, int d) {
        cdev::attn::tree_cell(1 << ls, r & ((1 << ls) - 1), d, hd,
                              lanes + (r >> ls) * head_lanes);
      });
      __syncthreads();
    }
    for (int c = tid; c < heads * int(hd); c += kAttnThreads) {
      const int g = c / int(hd), d = c - g * int(hd);
      out[t * q_dim + (h0 + g0 + g) * hd + d] =
          cdev::attn::output(lanes + g * head_lanes, hd, d);
    }
  }
}

// attention_tiles_kernel's steps for T consecutive tokens at once (GALLEON_CUDA_ATTN_ROWS,
// runtime/cuda/attention.h, "several tokens per block"): R = G * T rows, rounded up to whole
// row groups (row r: token t0 + r / G, query head h0 + r % G, n_kv its token's positions; the
// rows past G * T and those of tokens past the prompt have none), whose scores stay in shared
// memory (lane-major, R "heads"); step 4 by row groups through the binary counter
// (attn::RowGroupWork), each thread o_d of its kRowGroup rows and C columns. Needs hd <= kMaxHd
// (64, or 128 with at most 16 rows) and hd, kv_dim multiples of 4; the host picks it only where
// the scores fit (else attention_tiles_kernel, or for hd > 64 attention_kernel).
template <int G, int T, int64_t kMaxHd>
__global__ void __launch_bounds__(kAttnThreads, 2)  // 2 blocks per SM: at most 128 registers
    attention_rows_kernel(const float* q, const float* kc, const float* vc, int64_t n_head,
                          int64_t hd, int64_t kv_dim, const int64_t* n_past, int64_t ntok,
                          cdev::attn::ScoreRule rule, float* out, int64_t n_kv_scores) {
  namespace attn = cdev::attn;
  constexpr int R = attn::block_rows(G, T), kWarps = kAttnThreads / 32;
  constexpr int C = attn::kRowCols<R, kMaxHd>;
  static_assert(R <= 32 && (R / attn::kRowGroup) * (kMaxHd / C) <= kAttnThreads);
  GALLEON_DYNAMIC_SHARED(float, qs);  // R q rows | K tile | the R rows' scores
  __shared__ float s_warp_max[kWarps][R], s_max[R], s_sum[R];
  // The last tokens (the most positions) first, as attention_tiles_kernel.
  const int64_t t0 = (int64_t(gridDim.x) - 1 - blockIdx.x) * T;
  const int64_t h0 = int64_t(blockIdx.y) * G, off = int64_t(blockIdx.y) * hd;
  const int tokens = ntok - t0 < T ? int(ntok - t0) : T;
  const int64_t n_first = *n_past + t0 + 1;  // token t0's positions
  const int64_t n_last = n_first + tokens - 1;
  // Row r's positions (0 for a token past the prompt).
  auto row_n = [&](int r) -> int64_t { return r / G < tokens ? n_first + r / G : 0; };
  const int64_t q_dim = n_head * hd;
  const int64_t q_row = attn::quad_row_floats(hd);
  float* ks = qs + R * q_row;
  const attn::ScoreLayout scores =
      attn::ScoreLayout::lane_major(ks + attn::tile_k_floats(hd), n_kv_scores, R);
  const int tid = int(threadIdx.x), lane = tid & 31, warp = tid >> 5;
  for (int r = 0; r < R; ++r) {
    if (r / G < tokens)
      attn::stage_q_row(tid, kAttnThreads, q + (t0 + r / G) * q_dim + (h0 + r % G) * hd, hd,
                        qs + r * q_row);
    else
      for (int i = tid; i < q_row; i += kAttnThreads) qs[r * q_row + i] = 0.0f;
  }
  // 1, 2. The R rows' scores and maxima.
  attn_scores<R, kMaxHd>(qs, q_row, ks, kc + off, kv_dim, hd, n_last, row_n, scores, rule,
                         s_warp_max, s_max);
  // 3. e_j = expf(s_j - m).
  for (int r = 0; r < R; ++r)
    for (int64_t j = tid; j < row_n(r); j += kAttnThreads) {
      float& e = scores.at(r, j);
      e = cdev::expf(e - s_max[r]);
    }
  __syncthreads();
  // The e lanes' trees, a warp per row (every lane's sum in lane_sum's order, then warp_tree).
  for (int r = warp; r < R; r += kWarps) {
    const float e = cdev::warp_tree(attn::lane_score_sum(lane, row_n(r), scores, r));
    if (lane == 0) s_sum[r] = e;
  }
  __syncthreads();
  // 4 to 6. Row group rg's rows and columns c0 .. c0 + C - 1: their trees, o_d = L[0][d] / sum.
  const int col_groups = int(hd) / C;
  if (tid >= R / attn::kRowGroup * col_groups) return;
  const int rg = tid / col_groups, c0 = C * (tid - rg * col_groups), r0 = attn::kRowGroup * rg;
  attn::RowGroupWork<R, C> work{scores.base + r0, scores.lane, vc + off + c0, kv_dim, {}, 0, 0};
  work.n_lo = work.n_hi = row_n(r0);
#pragma unroll
  for (int k = 0; k < attn::kRowGroup; ++k) {
    work.n[k] = row_n(r0 + k);
    work.n_lo = work.n[k] < work.n_lo ? work.n[k] : work.n_lo;
    work.n_hi = work.n[k] > work.n_hi ? work.n[k] : work.n_hi;
  }
  if (work.n_hi == 0) return;  // no token's rows
  float o[attn::kRowGroup][C];
  work.sums(o);
#pragma unroll
  for (int k = 0; k < attn::kRowGroup; ++k) {
    const int r = r0 + k;
    if (r / G >= tokens) continue;
#pragma unroll
    for (int c = 0; c < C; ++c)
      out[(t0 + r / G) * q_dim + (h0 + r % G) * hd + c0 + c] = o[k][c] / s_sum[r];
  }
}

// GALLEON_CUDA_ATTN_ROWS: 16 or 32 rows per block of attention_rows_kernel, else 0 (off).
int attention_rows_from_env() {
  const char* e = std::getenv("GALLEON_CUDA_ATTN_ROWS");
  const long r = e && *e ? std::strtol(e, nullptr, 10) : 0;
  return r == 16 || r == 32 ? int(r) : 0;
}

// The dynamic shared memory a K-tile attention block may take: half of an SM's (two blocks per
// SM, as attention_tiles_kernel's launch bounds ask) less 2 KiB (the 1 KiB the GPU reserves per
// block, the kernel's static arrays), within the device's opt-in limit; at least the default
// 48 KiB. GALLEON_CUDA_ATTN_SHARED_KIB=N lowers it to N KiB (at least 32; tests: the limits of
// GPUs with less shared memory). Asked once per session.
size_t attention_shared_limit() {
  const char* e = std::getenv("GALLEON_CUDA_ATTN_SHARED_KIB");
  const size_t asked = e && *e ? size_t(std::max(32L, std::strtol(e, nullptr, 10))) * 1024 : 0;
  int device = 0, per_sm = 0, optin = 0;
  check(cudaGetDevice(&device), "cudaGetDevice");
  check(cudaDeviceGetAttribute(&per_sm, cudaDevAttrMaxSharedMemoryPerMultiprocessor, device),
        "cudaDeviceGetAttribute");
  check(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device),
        "cudaDeviceGetAttribute");
  const size_t half = size_t(per_sm) / 2, limit = std::min(half, size_t(optin));
  const size_t fits = limit > kAttnShared + 2048 ? limit - 2048 : kAttnShared;
  return asked ? std::min(asked, fits) : fits;
}

}  // namespace
}  // namespace galleon::cuda
