// The steps of the CUDA attention kernels (runtime/cuda/attention_kernels.cuh) as __host__
// __device__ functions of (thread, cell) indices, so that tests/cuda_emu_test.cpp can run the
// kernels' exact sequence on the CPU. One block per (token, head); e holds the n_kv scores,
// then the e_j; `lanes` is the block's shared memory: 32 rows of hd e*v lanes, then 32 e lanes.
#pragma once

#include <cstdint>

#include "runtime/cuda/canon_device.h"
#include "runtime/cuda/tile_common.h"

namespace galleon::cdev::attn {

// Threads of an attention kernel's block (8 warps).
constexpr int kThreads = 256;

// Shared memory floats of a block.
GALLEON_HD int64_t lane_floats(int64_t hd) { return 32 * hd + 32; }

// A thread's cells of a table of `width` columns: cells c = first, first + step, ... as
// (row c / width, column c % width), with no division per cell (a division of 64-bit integers
// is a long instruction sequence on the GPU, more than a cell's work). The kernels walk their
// cells so: thread t of n takes first = t, step = n.
class CellWalk {
 public:
  GALLEON_HD CellWalk(int first, int step, int width)
      : row_(first / width), col_(first % width), drow_(step / width), dcol_(step % width),
        width_(width) {}
  GALLEON_HD int row() const { return row_; }
  GALLEON_HD int col() const { return col_; }
  GALLEON_HD void next() {
    row_ += drow_;
    col_ += dcol_;
    if (col_ >= width_) {
      col_ -= width_;
      ++row_;
    }
  }

 private:
  int row_, col_, drow_, dcol_, width_;
};
// f(row, column) for each of the thread's cells with row < rows.
template <class F>
GALLEON_HD void for_cells(int first, int step, int width, int rows, F&& f) {
  for (CellWalk w(first, step, width); w.row() < rows; w.next()) f(w.row(), w.col());
}

// Step 1 with a shared-memory tile of K rows (head dims hd <= kQuadMaxHd): 4 threads per score,
// thread u holding the lanes l = u, u + 4, ..., u + 28 of dot_f32(q, k_j) (products q_i * k_i
// for i = l, l + 32, ... added in order to 0.0f). The tree steps s = 16, 8 and 4 pair lanes of
// the same thread (s is a multiple of 4), so each thread does them alone; then s = 2 and 1 pair
// threads: (u0 + u2) + (u1 + u3) = L[0] + L[2], L[1] + L[3], then their sum, as warp_tree.
// The K-tile kernel takes head dims up to kQuadMaxHd, the rows kernel (several tokens per block,
// below) up to kRowsMaxHd: the functions of the quad layout take the most as kMaxHd.
constexpr int64_t kQuadMaxHd = 64, kRowsMaxHd = 128;
// Thread u's elements of q and of a K row: v[8 * (i / 32) + m] = x[i] for i = u + 4m (mod 32).
template <int64_t kMaxHd>
constexpr int kQuadValuesOf = int(kMaxHd / 4);
// The quad layout of a row in shared memory (the q rows and the K tile): element i = 32b + 4m + u
// (u = i % 4) at quad_pos(i) = 32b + 16 (m / 4) + 4u + m % 4, so that thread u's elements of a
// 32-element block are two runs of 4 floats (two 16-byte loads instead of eight 4-byte ones),
// and the 4 threads of a score read 16 consecutive floats. A row takes quad_row_floats(hd).
GALLEON_HD int quad_pos(int i) {
  const int m = (i >> 2) & 7;
  return (i & ~31) + 16 * (m >> 2) + 4 * (i & 3) + (m & 3);
}
GALLEON_HD int64_t quad_row_floats(int64_t hd) { return (hd + 31) / 32 * 32; }
// N (4 or 2) floats from p to q: one 16- or 8-byte load on the GPU where p is aligned to it.
template <int N>
GALLEON_HD void load_floats(const float* p, float* q) {
#if defined(__CUDA_ARCH__)
  if constexpr (N == 4) {
    if (reinterpret_cast<uintptr_t>(p) % 16 == 0) {
      const float4 f = *reinterpret_cast<const float4*>(p);
      q[0] = f.x, q[1] = f.y, q[2] = f.z, q[3] = f.w;
      return;
    }
  } else if constexpr (N == 2) {
    if (reinterpret_cast<uintptr_t>(p) % 8 == 0) {
      const float2 f = *reinterpret_cast<const float2*>(p);
      q[0] = f.x, q[1] = f.y;
      return;
    }
  }
#endif
  for (int i = 0; i < N; ++i) q[i] = p[i];
}
// Thread u's values v of a row in the quad layout (those past hd: whatever the row holds there).
// The row starts 16-byte aligned (the kernel's q rows and K tile rows are multiples of 16
// floats apart from its aligned shared memory), so its runs of 4 are 16-byte loads without a
// test of the address.
template <int V>
GALLEON_HD void quad_values(const float* row, int64_t hd, int u, float (&v)[V]) {
  GALLEON_DEVICE_UNROLL
  for (int b = 0; b < V / 8; ++b)
    if (32 * b < hd) {
      load_aligned_floats<4>(row + 32 * b + 4 * u, v + 8 * b);
      load_aligned_floats<4>(row + 32 * b + 16 + 4 * u, v + 8 * b + 4);
    } else {
      GALLEON_DEVICE_UNROLL
      for (int m = 0; m < 8; ++m) v[8 * b + m] = 0.0f;
    }
}
// Block b's products of thread u (q and k: its 8 values of the block) added to its lanes.
GALLEON_HD void quad_block_add(const float* q, const float* k, int64_t hd, int b, int u,
                               float (&lane)[8]) {
  if (32 * b + 32 <= hd) {  // every element of the block inside the row (uniform: hd)
    GALLEON_DEVICE_UNROLL
    for (int m = 0; m < 8; ++m) lane[m] = lane[m] + q[m] * k[m];
    return;
  }
  GALLEON_DEVICE_UNROLL
  for (int m = 0; m < 8; ++m) {  // lane u + 4m
    const int64_t i = 32 * b + u + 4 * m;
    if (i < hd) lane[m] = lane[m] + q[m] * k[m];
  }
}
// The tree's steps s = 16, 8 and 4 over thread u's 8 lanes.
GALLEON_HD float quad_lanes_sum(float (&lane)[8]) {
  for (int m = 0; m < 4; ++m) lane[m] = lane[m] + lane[m + 4];  // s = 16: lanes l, l + 16
  for (int m = 0; m < 2; ++m) lane[m] = lane[m] + lane[m + 2];  // s = 8
  return lane[0] + lane[1];                                      // s = 4
}
template <int V>
GALLEON_HD float score_quad_part(const float (&qv)[V], const float (&kv)[V], int64_t hd, int u) {
  float lane[8];
  GALLEON_DEVICE_UNROLL
  for (int m = 0; m < 8; ++m) lane[m] = 0.0f;
  GALLEON_DEVICE_UNROLL
  for (int b = 0; b < V / 8; ++b) quad_block_add(qv + 8 * b, kv + 8 * b, hd, b, u, lane);
  return quad_lanes_sum(lane);
}
// score_quad_part with thread u's q values read from the q row (quad layout) a block at a time,
// so that 8 of them are live rather than V (the rows kernel's 128 head dims).
template <int V>
GALLEON_HD float score_quad_row(const float* q_row, const float (&kv)[V], int64_t hd, int u) {
  float lane[8];
  GALLEON_DEVICE_UNROLL
  for (int m = 0; m < 8; ++m) lane[m] = 0.0f;
  GALLEON_DEVICE_UNROLL
  for (int b = 0; b < V / 8; ++b) {
    if (32 * b >= hd) break;  // uniform: hd; the blocks past it add nothing
    float qv[8];
    load_aligned_floats<4>(q_row + 32 * b + 4 * u, qv);
    load_aligned_floats<4>(q_row + 32 * b + 16 + 4 * u, qv + 4);
    quad_block_add(qv, kv + 8 * b, hd, b, u, lane);
  }
  return quad_lanes_sum(lane);
}
// Steps s = 2 and 1 of the four parts (the kernel does them with two shuffles).
GALLEON_HD float score_quad(const float (&part)[4]) {
  const float a = part[0] + part[2], b = part[1] + part[3];
  return a + b;
}
// K tile row stride in floats: a multiple of 32 plus 16, so that the 16-byte loads of a quarter
// warp (2 rows x 4 threads, the unit a 16-byte shared load is served in) hit 32 different banks.
GALLEON_HD int64_t quad_tile_stride(int64_t hd) { return quad_row_floats(hd) + 16; }
constexpr int64_t kQuadTileRows = kThreads / 4;  // a score per 4 threads
// The most quads (4 floats of a row) a thread of kThreads stages: a full tile of rows x head
// dims.
template <int64_t kMaxHd>
constexpr int kStageQuadsOf = int(kQuadTileRows * kMaxHd / 4 / kThreads);
// Thread `first` of kThreads's share of staging `rows` <= kQuadTileRows K rows (kv_dim floats
// apart from k, hd <= kMaxHd used) in the tile (rows `stride` floats apart, quad layout).
// Where hd and kv_dim are multiples of 4, its quads first, first + kThreads, ... of the rows,
// all loaded before the first is stored (a load and its store in turn would wait for memory
// once per quad); else its cells first, first + kThreads, ..., one at a time.
template <int64_t kMaxHd = kQuadMaxHd>
GALLEON_HD void stage_k_rows(int first, const float* k, int64_t kv_dim, int hd, int rows,
                             int64_t stride, float* tile) {
  constexpr int kStageQuads = kStageQuadsOf<kMaxHd>;
  if (hd % 4 != 0 || kv_dim % 4 != 0) {
    for_cells(first, kThreads, hd, rows,
              [&](int r, int d) { tile[r * stride + quad_pos(d)] = k[r * kv_dim + d]; });
    return;
  }
  float staged[kStageQuads][4] = {};
  CellWalk load(first, kThreads, hd / 4);
  GALLEON_DEVICE_UNROLL
  for (int c = 0; c < kStageQuads; ++c, load.next())
    if (load.row() < rows) load_floats<4>(k + load.row() * kv_dim + 4 * load.col(), staged[c]);
  CellWalk store(first, kThreads, hd / 4);
  GALLEON_DEVICE_UNROLL
  for (int c = 0; c < kStageQuads; ++c, store.next())
    if (store.row() < rows) {
      // Elements 4c .. 4c + 3 (c = store.col()): u = 0 .. 3 of one m, 4 floats apart. A warp's
      // threads hold 16 quads of 2 rows (head dim 64; 8 of 4 rows for 32), which the quad
      // layout puts on 8 banks: each thread stores its four in a turn of its own (`first`),
      // so that the warp's stores of a step hit 32 banks rather than 8.
      float* at = tile + store.row() * stride + quad_pos(4 * store.col());
      const float* q = staged[c];
      const int first = (2 * (store.col() >> 3) + store.row()) & 3;
      GALLEON_DEVICE_UNROLL
      for (int k = 0; k < 4; ++k) {
        const int e = (first + k) & 3;
        at[4 * e] = e == 0 ? q[0] : e == 1 ? q[1] : e == 2 ? q[2] : q[3];
      }
    }
}
// Staging a q row (hd elements) in the quad layout, quad_row_floats(hd) floats: the cells
// first, first + step, ...; zeros past hd.
GALLEON_HD void stage_q_row(int first, int step, const float* q, int64_t hd, float* row) {
  for (int i = first; i < quad_row_floats(hd); i += step) row[quad_pos(i)] = i < hd ? q[i] : 0.0f;
}

// Step 1's score from its dot product, as runtime/session.cpp's attention: times the scale;
// soft-capped where cap > 0 (gemma2); -inf where the layer has a window and position j lies
// before it (j + window < n_kv, the row's positions), so that e_j = 0.
struct ScoreRule {
  float kq_scale = 1.0f;
  float cap = 0.0f;
  int64_t window = 0;
  GALLEON_HD float operator()(float dot, int64_t j, int64_t n_kv) const {
    float s = canonical_nan(dot) * kq_scale;
    if (cap > 0.0f) s = softcap(s, cap);
    return window > 0 && j + window < n_kv ? -INFINITY : s;
  }
};

// Step 2: m = max s_j. One step of it is max_step(m, s) = std::max(m, s): NaN never replaces m.
// The kernel's warp w takes j = w, w + n_warps, ... in order, then one thread the warps' maxima
// in order (max_score_parts). A maximum is the same in any order, except that of +0 and -0
// either may win; m is only used in e_j = expf(s_j - m), the same for m = +0 and m = -0.
GALLEON_HD float max_step(float m, float s) { return m < s ? s : m; }
GALLEON_HD float max_score(const float* e, int64_t n_kv) {
  float mx = -INFINITY;
  for (int64_t j = 0; j < n_kv; ++j) mx = max_step(mx, e[j]);
  return mx;
}
GALLEON_HD float max_score_parts(const float* e, int64_t n_kv, int n_parts) {
  float mx = -INFINITY;
  for (int w = 0; w < n_parts; ++w) {
    float part = -INFINITY;
    for (int64_t j = w; j < n_kv; j += n_parts) part = max_step(part, e[j]);
    mx = max_step(mx, part);
  }
  return mx;
}

// Lane l of column d <= hd in `lanes`: 32 rows of hd e*v lanes, then the 32 e lanes (d == hd).
GALLEON_HD int lane_index(int l, int d, int64_t hd) {
  return d == hd ? 32 * int(hd) + l : l * int(hd) + d;
}

// Step 4, cell (lane l < 32, column d <= hd), d == hd being the e lanes: the sum over
// j = l mod 32 of e_j * v_j[d] (or of e_j), increasing j.
GALLEON_HD void lane_cell(int l, int d, int64_t hd, const float* e, const float* v, int64_t kv_dim,
                          int64_t n_kv, float* lanes) {
  lanes[lane_index(l, d, hd)] =
      d == hd ? lane_sum(e, n_kv, l) : lane_weighted_sum(e, v + d, kv_dim, n_kv, l);
}

// Where the K-tile kernel keeps head g's scores (then its e_j): e_j at
// base[g * head + (j % 32) * lane + (j / 32) * step]. In global scratch positions follow each
// other (lane 1, step 32); in shared memory (lane_major) a lane's positions j = l, l + 32, ...
// do, and at each position the G heads' scores (head 1, step G), so that step 4 reads the
// scores of kVLoads positions of all G heads with kVLoads * G / 4 16-byte loads at offsets
// known when compiled.
struct ScoreLayout {
  float* base;
  int64_t head, lane, step;
  GALLEON_HD float& at(int g, int64_t j) const {
    return base[g * head + (j & 31) * lane + (j >> 5) * step];
  }
  // Floats per lane: the G heads' scores of its positions, a multiple of 4 (16-byte loads) and
  // 4 mod 8, so that the 8 consecutive lanes whose scores a warp writes at once in step 1 start
  // on 8 different 4-bank groups (lane s r for r < 8: s = 8k + 4 gives 4 r (2k + 1) mod 32).
  GALLEON_HD static int64_t lane_floats(int64_t n_kv, int g) {
    const int64_t n = ((n_kv + 31) / 32 * g + 3) / 4 * 4;
    return n % 8 == 0 ? n + 4 : n;
  }
  GALLEON_HD static ScoreLayout lane_major(float* base, int64_t n_kv, int g) {
    return {base, 1, lane_floats(n_kv, g), g};
  }
  // The floats of lane_major's layout.
  GALLEON_HD static int64_t lane_major_floats(int64_t n_kv, int g) {
    return 32 * lane_floats(n_kv, g);
  }
  GALLEON_HD static ScoreLayout linear(float* base, int64_t head) { return {base, head, 1, 32}; }
};
// Step 4 of the K-tile kernel, cell (lane l < 32, column d < hd) of G heads: acc[g] plus, in
// increasing j = l mod 32, e_j of head g * v_j[d] (vd: v_0[d], rows kv_dim floats apart), each
// acc[g] as lane_weighted_sum adds. The V elements of kVLoads positions are loaded first, so
// that their loads wait for memory together rather than one after the other (fewer for 8
// heads, whose 72 accumulators of a thread's cells already take most of its registers), and
// in the lane-major layout their scores with one load per head.
template <int G>
constexpr int kVLoads = G >= 8 ? 2 : 4;
// Lane l's positions j = l, l + 32, ... below n.
GALLEON_HD int64_t lane_positions(int l, int64_t n) { return l < n ? (n - 1 - l) / 32 + 1 : 0; }
// weighted_lane_cell for a layout whose positions l, l + 32, ... lie kStep floats apart (G:
// lane-major, the heads of a position after each other; 32: linear, heads `head` floats
// apart), `es` at lane l's first: pointers moved on per position rather than 64-bit products
// per access, and no branch on the layout per head (the PTX of the version before spent about
// 120 instructions on 32 multiplies and adds).
template <int G, int kStep>
GALLEON_HD void weighted_lane_cell_steps(int l, const float* vd, int64_t kv_dim, int64_t n_kv,
                                         const float* es, int64_t head, float (&acc)[G]) {
  constexpr int kLoads = kVLoads<G>;
  constexpr bool kLaneMajor = kStep == G && kStep != 32;  // heads 1 float apart
  static_assert(!kLaneMajor || (kLoads * G) % 4 == 0);  // 16-byte loads: lanes 16-byte aligned
  const int64_t count = lane_positions(l, n_kv);
  const int64_t vstep = 32 * kv_dim;
  const float* vp = vd + l * kv_dim;
  int64_t k = 0;
  for (; k + kLoads <= count; k += kLoads, vp += kLoads * vstep, es += kLoads * kStep) {
    float v[kLoads];
    GALLEON_DEVICE_UNROLL
    for (int i = 0; i < kLoads; ++i) v[i] = vp[i * vstep];
    if constexpr (kLaneMajor) {
      float s[kLoads * G];  // position i's scores of head g at s[i * G + g]
      load_aligned_floats<kLoads * G>(es, s);
      GALLEON_DEVICE_UNROLL
      for (int g = 0; g < G; ++g)
        GALLEON_DEVICE_UNROLL
        for (int i = 0; i < kLoads; ++i) acc[g] = acc[g] + s[i * G + g] * v[i];
    } else {
      GALLEON_DEVICE_UNROLL
      for (int g = 0; g < G; ++g) {
        const float* eg = es + g * head;
        float s[kLoads];
        GALLEON_DEVICE_UNROLL
        for (int i = 0; i < kLoads; ++i) s[i] = eg[i * kStep];
        GALLEON_DEVICE_UNROLL
        for (int i = 0; i < kLoads; ++i) acc[g] = acc[g] + s[i] * v[i];
      }
    }
  }
  const int64_t hs = kLaneMajor ? 1 : head;
  GALLEON_DEVICE_ROLLED  // fewer than kLoads positions
  for (; k < count; ++k, vp += vstep, es += kStep) {
    const float v = *vp;
    GALLEON_DEVICE_UNROLL
    for (int g = 0; g < G; ++g) acc[g] = acc[g] + es[g * hs] * v;
  }
}
template <int G>
GALLEON_HD void weighted_lane_cell(int l, const float* vd, int64_t kv_dim, int64_t n_kv,
                                   const ScoreLayout& e, float (&acc)[G]) {
  const float* es = e.base + l * e.lane;
  if (e.step == 32)  // linear
    weighted_lane_cell_steps<G, 32>(l, vd, kv_dim, n_kv, es, e.head, acc);
  else  // lane_major: step G, head 1
    weighted_lane_cell_steps<G, G>(l, vd, kv_dim, n_kv, es, 1, acc);
}
// The e lanes' cell (column hd) of lane l: acc[g] plus, in increasing j = l mod 32, e_j of
// head g (lane_sum's order).
template <int G, int kStep>
GALLEON_HD void score_lane_sums_steps(int l, int64_t n_kv, const float* es, int64_t head,
                                      float (&acc)[G]) {
  GALLEON_DEVICE_ROLLED
  for (int64_t j = l; j < n_kv; j += 32, es += kStep)
    GALLEON_DEVICE_UNROLL
    for (int g = 0; g < G; ++g) acc[g] = acc[g] + es[g * head];
}
template <int G>
GALLEON_HD void score_lane_sums(int l, int64_t n_kv, const ScoreLayout& e, float (&acc)[G]) {
  const float* es = e.base + l * e.lane;
  if (e.step == 32)  // linear
    score_lane_sums_steps<G, 32>(l, n_kv, es, e.head, acc);
  else  // lane_major
    score_lane_sums_steps<G, G>(l, n_kv, es, 1, acc);
}

// Step 4 by column warps (GALLEON_CUDA_ATTN_COLUMNS=1): warp w's lane l holds lane l (the
// positions j = l mod 32) of the columns d = kColWidth w + c (c < kColWidth, d < hd) of the G
// heads. A position's scores, loaded once, serve the lane's kColWidth G cells (a lane cell
// above loads them per column), and a column's 32 lanes lie in one warp, so that step 5 is a
// butterfly of shuffles (column_tree) instead of shared memory and 7 barriers. V goes through
// shared memory kVTileRows rows at a time, staged with coalesced loads; a lane reads its
// positions' 8 columns with two 16-byte loads.
constexpr int kColWidth = 8;
static_assert(kColWidth * (kThreads / 32) >= kQuadMaxHd, "8 warps of 8 columns cover hd <= 64");
constexpr int64_t kVTileRows = 64;  // two positions per lane per tile
// V tile row stride in floats: what the lanes read (hd rounded up to 8 columns, zeros past hd)
// within a multiple of 32, plus 4, so that the rows of a quarter warp's 16-byte loads (8 lanes,
// 8 consecutive rows) start on 8 different 4-bank groups. It fits in the K tile's floats.
GALLEON_HD int64_t v_tile_stride(int64_t hd) { return quad_row_floats(hd) + 4; }
GALLEON_HD int v_tile_width(int hd) { return (hd + kColWidth - 1) / kColWidth * kColWidth; }
// N floats from p, 16-byte aligned where N is a multiple of 4 (then N / 4 16-byte loads).
template <int N>
GALLEON_HD void load_floats_of(const float* p, float* q) {
  if constexpr (N % 4 == 0) {
    load_aligned_floats<N>(p, q);
  } else {
    GALLEON_DEVICE_UNROLL
    for (int i = 0; i < N; ++i) q[i] = p[i];
  }
}
// Thread `first` of kThreads's share of staging `rows` <= kVTileRows V rows (kv_dim floats
// apart from v, hd used) in the tile (rows `stride` floats apart, columns in order, zeros from hd
// to v_tile_width). Where hd and kv_dim are multiples of 4: its quads, all loaded before the
// first is stored; else its cells one at a time.
GALLEON_HD void stage_v_rows(int first, const float* v, int64_t kv_dim, int hd, int rows,
                             int64_t stride, float* tile) {
  const int width = v_tile_width(hd);
  if (hd % 4 != 0 || kv_dim % 4 != 0) {
    for_cells(first, kThreads, width, rows,
              [&](int r, int d) { tile[r * stride + d] = d < hd ? v[r * kv_dim + d] : 0.0f; });
    return;
  }
  constexpr int kQuads = int(kVTileRows * kQuadMaxHd / 4 / kThreads);
  float staged[kQuads][4] = {};
  CellWalk load(first, kThreads, width / 4);
  GALLEON_DEVICE_UNROLL
  for (int c = 0; c < kQuads; ++c, load.next())
    if (load.row() < rows && 4 * load.col() < hd)
      load_floats<4>(v + load.row() * kv_dim + 4 * load.col(), staged[c]);
  CellWalk store(first, kThreads, width / 4);
  GALLEON_DEVICE_UNROLL
  for (int c = 0; c < kQuads; ++c, store.next())
    if (store.row() < rows)
      store_aligned_floats<4>(staged[c], tile + store.row() * stride + 4 * store.col());
}
// Thread `first` of kThreads's share of staging the V tiles of a block: stage_v_rows's, with
// what it can work out once. Where hd and kv_dim are multiples of 4, v is 16-byte aligned and
// kThreads a multiple of the quads of a tile row, the thread's quads are the same cells of
// every tile (rows row0 + c * rstep, one column), so a tile is its 16-byte loads at fixed
// offsets, then its stores; else stage_v_rows.
class VTileStager {
 public:
  GALLEON_HD VTileStager(int first, const float* v, int64_t kv_dim, int hd, int64_t stride)
      : v_(v), kv_dim_(kv_dim), stride_(stride), first_(first), hd_(hd) {
    const int quads = v_tile_width(hd) / 4;
    fast_ = hd % 4 == 0 && kv_dim % 4 == 0 && kThreads % quads == 0 &&
            reinterpret_cast<uintptr_t>(v) % 16 == 0;
    row0_ = first / quads;
    rstep_ = kThreads / quads;
    const int col = 4 * (first % quads);
    live_ = col < hd;
    src0_ = row0_ * kv_dim + col;
    dst0_ = int(row0_ * stride + col);
  }
  // Rows j0 .. j0 + rows - 1 (rows <= kVTileRows) into the tile.
  GALLEON_HD void stage(int64_t j0, int rows, float* tile) const {
    const float* v = v_ + j0 * kv_dim_;
    if (!fast_) {
      stage_v_rows(first_, v, kv_dim_, hd_, rows, stride_, tile);
      return;
    }
    constexpr int kQuads = int(kVTileRows * kQuadMaxHd / 4 / kThreads);
    float staged[kQuads][4] = {};
    GALLEON_DEVICE_UNROLL
    for (int c = 0; c < kQuads; ++c)
      if (live_ && row0_ + c * rstep_ < rows)
        load_aligned_floats<4>(v + src0_ + c * rstep_ * kv_dim_, staged[c]);
    GALLEON_DEVICE_UNROLL
    for (int c = 0; c < kQuads; ++c)
      if (row0_ + c * rstep_ < rows)
        store_aligned_floats<4>(staged[c], tile + dst0_ + c * rstep_ * int(stride_));
  }

 private:
  const float* v_;
  int64_t kv_dim_, stride_, src0_;
  int first_, hd_, row0_, rstep_, dst0_;
  bool fast_, live_;
};
// Step 4 by column warps, one V tile (positions j0 .. j0 + rows - 1, j0 a multiple of
// kVTileRows): lane l adds, for its positions j0 + l and j0 + l + 32 (those below rows), e_j of
// head g times v_j[col0 + c] to acc[c][g], in that order (lane_weighted_sum's). es: the lane's
// score of position j0 + l, head 0; kStep floats to its next position (G: lane-major, heads 1
// float apart; 32: linear, heads `head` floats apart).
template <int G, int kStep>
GALLEON_HD void column_tile_cells(int l, const float* tile, int64_t stride, int col0, int64_t rows,
                                  const float* es, int64_t head, float (&acc)[kColWidth][G]) {
  constexpr bool kLaneMajor = kStep == G && kStep != 32;
  if (l >= rows) return;
  const int n = l + 32 < rows ? 2 : 1;  // positions of the lane in this tile
  float v[2][kColWidth] = {}, s[2 * G] = {};
  if (kLaneMajor && n == 2) {
    load_floats_of<2 * G>(es, s);  // 16-byte aligned for even G: j0 / 32 is even
  } else if (kLaneMajor) {
    load_floats_of<G>(es, s);
  } else {
    GALLEON_DEVICE_UNROLL
    for (int i = 0; i < 2; ++i)
      GALLEON_DEVICE_UNROLL
      for (int g = 0; g < G; ++g)
        if (i < n) s[i * G + g] = es[i * kStep + g * head];
  }
  GALLEON_DEVICE_UNROLL
  for (int i = 0; i < 2; ++i)
    if (i < n) load_aligned_floats<kColWidth>(tile + (l + 32 * i) * stride + col0, v[i]);
  GALLEON_DEVICE_UNROLL
  for (int i = 0; i < 2; ++i)
    if (i < n)
      GALLEON_DEVICE_UNROLL
      for (int c = 0; c < kColWidth; ++c)
        GALLEON_DEVICE_UNROLL
        for (int g = 0; g < G; ++g) acc[c][g] = acc[c][g] + s[i * G + g] * v[i][c];
}
// The e lanes' cell of lane l of head g: the sum of e_j over j = l mod 32, increasing j
// (lane_sum's order).
GALLEON_HD float lane_score_sum(int l, int64_t n_kv, const ScoreLayout& e, int g) {
  const float* p = e.base + g * e.head + l * e.lane;
  float acc = 0.0f;
  for (int64_t j = l; j < n_kv; j += 32, p += e.step) acc = acc + *p;
  return acc;
}
// Step 5 by column warps: the canonical tree (L[i] = L[i] + L[i + s] for s = 16, 8, .., 1) of N
// items (a power of 2), lane i of a warp holding L[i] of each, as a butterfly of shuffles that
// halves what a lane holds while it holds more than one item: at stride s, lane i and lane i ^ s
// hold the same h items each; the lane with bit s clear keeps the lower h / 2 (sending the upper
// to its partner), the other the upper, and both add (the lower lane's value) + (the upper
// lane's), the tree's L[i] + L[i + s] for the lower lane's i. Once a lane holds one item, both
// lanes of a pair add the same two values and keep the sum. With half = h / 2 (0 for one item):
// what a lane sends for its k-th kept item, and the sum it keeps there given its partner's.
GALLEON_HD float butterfly_sent(int lane, int s, int half, const float* v, int k) {
  return (lane & s) ? v[k] : v[k + half];
}
GALLEON_HD void butterfly_add(int lane, int s, int half, float* v, int k, float got) {
  const bool upper = (lane & s) != 0;
  const float keep = upper ? v[k + half] : v[k];
  v[k] = upper ? got + keep : keep + got;
}
// The items a lane holds after the butterfly of N items: butterfly_first(lane, N) onwards,
// butterfly_count(N) of them; of the lanes that hold the same ones (N < 32), the lowest writes.
GALLEON_HD int butterfly_first(int lane, int n) {
  int first = 0;
  for (int s = 16; s >= 1 && n >= 2; s >>= 1) {
    n /= 2;
    if (lane & s) first += n;
  }
  return first;
}
GALLEON_HD constexpr int butterfly_count(int n) { return n >= 32 ? n / 32 : 1; }
GALLEON_HD bool butterfly_writer(int lane, int n) { return n >= 32 || lane % (32 / n) == 0; }
// The column warps' items: head g's column col0 + c at g * kColWidth + c, padded to a power of 2.
GALLEON_HD constexpr int column_items(int g) {
  int n = 1;
  while (n < g * kColWidth) n *= 2;
  return n;
}

// The K-tile kernel's shared memory in floats: G q rows, then the K tile and `score_floats`
// (the scores of G heads when kept there: ScoreLayout::lane_major_floats(n_kv, G)), overlaid
// after step 4 (which reads the scores last) by the lanes of `tree_heads` heads at a time.
GALLEON_HD int64_t tile_k_floats(int64_t hd) { return kQuadTileRows * quad_tile_stride(hd); }
GALLEON_HD int64_t tile_shared_floats(int g, int64_t hd, int64_t score_floats, int tree_heads) {
  const int64_t tiles = tile_k_floats(hd) + score_floats, lanes = tree_heads * lane_floats(hd);
  return g * quad_row_floats(hd) + (tiles > lanes ? tiles : lanes);
}

// Step 5 at stride s (16, 8, 4, 2, 1), cell (row i < s, column d <= hd): L[i] = L[i] + L[i + s]
// in column d (d == hd: the e lanes). Cells of one stride touch disjoint lanes.
GALLEON_HD void tree_cell(int s, int i, int d, int64_t hd, float* lanes) {
  const int at = lane_index(i, d, hd);
  lanes[at] = lanes[at] + lanes[lane_index(i + s, d, hd)];
}

// Step 6: o_d = L[0][d] / (the e lanes' L[0]).
GALLEON_HD float output(const float* lanes, int64_t hd, int64_t d) {
  return lanes[d] / lanes[32 * hd];
}

// ---------------------------------------------------------------- several tokens per block
// GALLEON_CUDA_ATTN_ROWS=R (16 or 32; opt-in): a block of attention_rows_kernel takes R rows,
// the G heads of T = R / G consecutive tokens of one KV head (row r: token r / G, head r % G),
// so that each K row staged and each V element loaded serves R rows instead of the K-tile
// kernel's G. Steps 1 to 3 are the K-tile kernel's with R rows for its G heads, each row over
// its own token's positions (rows of tokens past the prompt have none); the R rows' scores are
// lane-major (ScoreLayout::lane_major with R "heads").
//
// Step 4 keeps no array of lanes: a thread takes kRowGroup rows and C columns, visits the 32
// canonical lanes in bit-reversed order l = bitrev5(p), p = 0 .. 31, sums lane l's positions
// j = l, l + 32, ... in increasing order from 0.0f (lane_weighted_sum's sum), and combines the
// lanes with the tensor-core tiles' binary counter (mma_tile.h's Tile::run_leaves: leaf p's sum
// merges with the pending sums of the levels whose bit of p is set, the earlier on the left;
// leaves p and p + 1 are lanes l and l + 16, pairs 2 apart lanes 8 apart, ...), which adds
// exactly warp_tree's pairs L[i] + L[i + s]. So step 5 takes no shared memory and no barrier,
// and a thread's kRowGroup x C sums of a position take one 16-byte load of the rows' scores (a
// warp's threads share it) and one load of C V elements (a warp's threads read a V row's
// consecutive columns).
constexpr int kRowGroup = 4;
// A block's rows for G heads of T tokens: G * T rounded up to whole row groups (G = 3, 5, 6, 7:
// the rows past G * T are rows of no token).
GALLEON_HD constexpr int block_rows(int G, int T) {
  return (G * T + kRowGroup - 1) / kRowGroup * kRowGroup;
}
// C: R / 4 row groups x kMaxHd / C columns <= kThreads (1 or 2).
template <int R, int64_t kMaxHd = kQuadMaxHd>
constexpr int kRowCols = (R / kRowGroup) * kMaxHd <= kThreads ? 1 : 2;
// C (1 or 2) floats from p, aligned to their size: one load on the GPU.
template <int C>
GALLEON_HD void load_cols(const float* p, float* q) {
  static_assert(C == 1 || C == 2);
  expect_aligned(p, 4 * C);
#if defined(__CUDA_ARCH__)
  if constexpr (C == 2) {
    const float2 f = *reinterpret_cast<const float2*>(p);
    q[0] = f.x, q[1] = f.y;
  } else {
    q[0] = p[0];
  }
#else
  for (int c = 0; c < C; ++c) q[c] = p[c];
#endif
}
// One row group's step-4 work: kRowGroup rows, n[k] positions each (0: a row of no token), C
// columns. es: the first row's score of position 0 in the lane-major layout of R rows (lane l's
// positions lane_stride floats after lane 0's, R floats apart, 16-byte aligned); v: column c0
// of V row 0 (rows kv_dim floats apart, aligned to C floats).
template <int R, int C>
struct RowGroupWork {
  const float* es;
  int64_t lane_stride;
  const float* v;
  int64_t kv_dim;
  int64_t n[kRowGroup];
  int64_t n_lo, n_hi;  // the least and the most of n

  // Lane l's sums: s[k][c] = 0.0f plus, in increasing j = l mod 32 below n[k], e_j of row k
  // times v_j[c]. The positions below every row's n in batches of kLoads (their loads first),
  // then those below some rows' n one at a time.
  GALLEON_HD void leaf(int l, float (&s)[kRowGroup][C]) const {
    constexpr int kLoads = 4;
    GALLEON_DEVICE_UNROLL
    for (int k = 0; k < kRowGroup; ++k)
      GALLEON_DEVICE_UNROLL
      for (int c = 0; c < C; ++c) s[k][c] = 0.0f;
    const int64_t count_lo = lane_positions(l, n_lo), count_hi = lane_positions(l, n_hi);
    const int64_t vstep = 32 * kv_dim;
    const float* ep = es + l * lane_stride;
    const float* vp = v + l * kv_dim;
    int64_t k = 0;
    for (; k + kLoads <= count_lo; k += kLoads, ep += kLoads * R, vp += kLoads * vstep) {
      float e[kLoads][kRowGroup], x[kLoads][C];
      GALLEON_DEVICE_UNROLL
      for (int i = 0; i < kLoads; ++i) {
        load_aligned_floats<kRowGroup>(ep + i * R, e[i]);
        load_cols<C>(vp + i * vstep, x[i]);
      }
      GALLEON_DEVICE_UNROLL
      for (int i = 0; i < kLoads; ++i) add_position(e[i], x[i], s);
    }
    GALLEON_DEVICE_ROLLED
    for (; k < count_lo; ++k, ep += R, vp += vstep) {
      float e[kRowGroup], x[C];
      load_aligned_floats<kRowGroup>(ep, e);
      load_cols<C>(vp, x);
      add_position(e, x, s);
    }
    GALLEON_DEVICE_ROLLED
    for (; k < count_hi; ++k, ep += R, vp += vstep) {  // some rows' positions end before
      const int64_t j = l + 32 * k;
      float e[kRowGroup], x[C];
      load_aligned_floats<kRowGroup>(ep, e);
      load_cols<C>(vp, x);
      GALLEON_DEVICE_UNROLL
      for (int r = 0; r < kRowGroup; ++r)
        GALLEON_DEVICE_UNROLL
        for (int c = 0; c < C; ++c) s[r][c] = j < n[r] ? s[r][c] + e[r] * x[c] : s[r][c];
    }
  }
  // The canonical tree of the 32 lanes' sums, through the binary counter over p.
  GALLEON_HD void sums(float (&out)[kRowGroup][C]) const {
    float pending[5][kRowGroup][C], v[kRowGroup][C];
    GALLEON_DEVICE_ROLLED
    for (int p = 0; p < 32; ++p) {
      leaf(bitrev5(p), v);
      bool carry = true;  // no break: every level's index stays a constant (registers)
      GALLEON_DEVICE_UNROLL
      for (int b = 0; b < 5; ++b) {
        if (!carry) continue;
        const bool set = ((p >> b) & 1) != 0;
        GALLEON_DEVICE_UNROLL
        for (int k = 0; k < kRowGroup; ++k)
          GALLEON_DEVICE_UNROLL
          for (int c = 0; c < C; ++c) {
            if (set)
              v[k][c] = pending[b][k][c] + v[k][c];
            else
              pending[b][k][c] = v[k][c];
          }
        carry = set;
      }
    }
    GALLEON_DEVICE_UNROLL
    for (int k = 0; k < kRowGroup; ++k)
      GALLEON_DEVICE_UNROLL
      for (int c = 0; c < C; ++c) out[k][c] = v[k][c];
  }

 private:
  GALLEON_HD static void add_position(const float (&e)[kRowGroup], const float (&x)[C],
                                      float (&s)[kRowGroup][C]) {
    GALLEON_DEVICE_UNROLL
    for (int r = 0; r < kRowGroup; ++r)
      GALLEON_DEVICE_UNROLL
      for (int c = 0; c < C; ++c) s[r][c] = s[r][c] + e[r] * x[c];
  }
};
// The rows kernel's shared memory in floats: R q rows, the K tile, the R rows' scores.
GALLEON_HD int64_t rows_shared_floats(int r, int64_t hd, int64_t n_kv) {
  return r * quad_row_floats(hd) + tile_k_floats(hd) + ScoreLayout::lane_major_floats(n_kv, r);
}

}  // namespace galleon::cdev::attn
