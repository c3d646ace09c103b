// The prompt matmul of the quantized types on int8 tensor cores (docs/cuda.md, "Tensor cores"):
// one warp computes 16 weight rows x 8 * NT tokens.
//
// - Integer block sums come from mma.sync m16n8k32 (32-element blocks and sub-blocks) or
//   m16n8k16 (the 16-element sub-blocks of Q6_K, Q2_K and Q3_K) with s8 operands and s32
//   results: exact, so they equal the dp4a sums of the one-lane kernels (docs/arithmetic.md
//   section 5).
// - Each (row, token)'s float contribution is made from them by the functions the one-lane
//   kernels use (finish_a8, sub_sums, kfinish_dm).
// - The contributions go to their canonical lanes in the canonical order: a thread visits the
//   lanes in bit-reversed order (0, 16, 8, 24, ...), adds each lane's blocks l, l + 32, ... in
//   increasing order to 0.0f, and combines the lanes with a binary counter whose pairs are
//   exactly warp_tree's: lanes l and l + 16 first, then those pairs 8 apart, and so on.
//
// Compiled for the GPU, and for the CPU test (tests/cuda_emu_test.cpp) with the mma emulated:
// each lane's results computed from every lane's fragments, placed as the PTX ISA defines them
// ("Matrix Fragments for mma.m16n8k32" and "... m16n8k16", integer types).
#pragma once

#include <cstdint>
#include <type_traits>

#include "runtime/cuda/canon_device.h"
#include "runtime/cuda/tile_common.h"

namespace galleon::cdev::mma {

constexpr int kRows = 16;  // weight rows per warp (the mma's M)

template <GgmlType T>
constexpr bool kHasPath = T != GgmlType::F32 && T != GgmlType::F16 && T != GgmlType::BF16;

// The leaf visited p-th is bitrev5(p), so that the binary counter over p builds warp_tree.
using cdev::bitrev5;
using Args = GemmArgs;

// N fragment words per lane. On the GPU a thread holds its own; the emulation holds all 32
// lanes' (load calls f(lane, words) for each), since each result depends on every lane's.
template <int N>
struct WarpWords {
#if defined(__CUDA_ARCH__)
  uint32_t w[N];
  template <class F>
  __device__ void load(int lane, F&& f) {
    f(lane, w);
  }
  __device__ const uint32_t* at(int) const { return w; }
#else
  uint32_t w[32][N] = {};
  template <class F>
  void load(int, F&& f) {
    for (int l = 0; l < 32; ++l) f(l, w[l]);
  }
  const uint32_t* at(int l) const { return w[l]; }
#endif
};

// Fragment positions for lane = 4g + t (g = groupID, t = threadID_in_group):
// - m16n8k32: A words a0 (row g, k 4t..4t+3), a1 (row g + 8, same k), a2 (row g, k 16+4t..),
//   a3 (row g + 8, k 16+4t..); B words b0 (column g, k 4t..4t+3), b1 (column g, k 16+4t..);
// - m16n8k16: A words a0 (row g), a1 (row g + 8), k 4t..4t+3; B word b0 (column g, k 4t..);
// - both: C c0, c1 (row g, columns 2t and 2t + 1), c2, c3 (row g + 8, the same columns).
// Byte b of a word is element k = 4 * (its k group) + b.
// c = A x B of an m16n8kK with s8 operands (K = 32 or 16): A has K / 8 words per lane, B K / 16.
template <int K>
GALLEON_HDI void mma_s8(int lane, const WarpWords<K / 8>& a, const WarpWords<K / 16>& b,
                        int32_t (&c)[4]) {
  static_assert(K == 32 || K == 16);
#if defined(__CUDA_ARCH__)
  const uint32_t* x = a.at(lane);
  const uint32_t* y = b.at(lane);
  if constexpr (K == 32)
    asm("mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
        "{%8, %9}, {%10, %10, %10, %10};"
        : "=r"(c[0]), "=r"(c[1]), "=r"(c[2]), "=r"(c[3])
        : "r"(x[0]), "r"(x[1]), "r"(x[2]), "r"(x[3]), "r"(y[0]), "r"(y[1]), "r"(0));
  else
    asm("mma.sync.aligned.m16n8k16.row.col.s32.s8.s8.s32 {%0, %1, %2, %3}, {%4, %5}, {%6}, "
        "{%7, %7, %7, %7};"
        : "=r"(c[0]), "=r"(c[1]), "=r"(c[2]), "=r"(c[3])
        : "r"(x[0]), "r"(x[1]), "r"(y[0]), "r"(0));
#else
  const int g = lane >> 2, t = lane & 3;
  for (int e = 0; e < 4; ++e) {
    const int row = g + 8 * (e >> 1), col = 2 * t + (e & 1);
    int32_t s = 0;
    for (int k = 0; k < K; ++k) {
      const int q = (k & 15) >> 2, high = k >> 4, shift = 8 * (k & 3);
      const uint32_t aw = a.at(4 * (row & 7) + q)[(row >> 3) + 2 * high];
      const uint32_t bw = b.at(4 * col + q)[high];
      s += int(int8_t(uint8_t(aw >> shift))) * int(int8_t(uint8_t(bw >> shift)));
    }
    c[e] = s;
  }
#endif
}

// Where result e of token group j of a lane belongs: row r0 + result_row, token t0 +
// result_token (the C fragment's layout, above).
GALLEON_HDI constexpr int result_row(int lane, int e) { return (lane >> 2) + 8 * (e >> 1); }
GALLEON_HDI constexpr int result_token(int lane, int j, int e) {
  return 8 * j + 2 * (lane & 3) + (e & 1);
}

// Where Tile::run's binary counter keeps its partial sums (level k < 5, token group j, result e):
// in registers, or in shared memory (a warp's 5 * NT * 4 floats per lane, lanes interleaved so
// that a warp's access touches 32 banks), which leaves the registers to the operands and lets
// more warps share an SM. The sums and their order are the same.
template <int NT>
struct RegPending {
  float v[5][NT][4];
  GALLEON_HDI float& at(int k, int j, int e) { return v[k][j][e]; }
};
// kRegLevels: the lowest levels in registers all the same (level 0 is written at every even
// leaf and read at the next one), the others in shared memory.
// kLevels: the levels the counter uses (5 for all 32 leaves; fewer for a subtree, run_leaves).
template <int NT, int kRegLevels = 0, int kLevels = 5>
struct SharedPending {
  static constexpr int kFloats = (kLevels - kRegLevels) * NT * 4 * 32;  // per warp
  float* warp_base;  // kFloats floats of this warp
  int lane;
  float regs[kRegLevels > 0 ? kRegLevels : 1][NT][4];
  GALLEON_HDI float& at(int k, int j, int e) {
    if (k < kRegLevels) return regs[k][j][e];
    return warp_base[(((k - kRegLevels) * NT + j) * 4 + e) * 32 + lane];
  }
};

// The counter levels of each of S subtrees of the 32 leaves (S = 2, 4, 8 or 16 warps sharing a
// tile: 4, 3, 2 or 1); -1 for other S.
template <int S>
constexpr int kSplitLevels = S == 2 ? 4 : S == 4 ? 3 : S == 8 ? 2 : S == 16 ? 1 : -1;

// The levels of warp_tree above S subtrees (x[w]: the leaves w * 32 / S .. (w + 1) * 32 / S - 1,
// Tile::run_leaves): neighbours first, the earlier on the left, as the binary counter joins them.
template <int S>
GALLEON_HDI float join_subtrees(float (&x)[S]) {
  static_assert(S >= 1 && S <= 32 && (S & (S - 1)) == 0);
  GALLEON_DEVICE_UNROLL
  for (int h = 1; h < S; h *= 2)
    GALLEON_DEVICE_UNROLL
    for (int w = 0; w + h < S; w += 2 * h) x[w] = x[w] + x[w + h];
  return x[0];
}

// A tile visits its blocks i in this order: leaf p = 0, 1, ..., 31 (lane bitrev5(p)), and
// within a leaf l, the blocks l, l + 32, ... below count. next_block is the block after
// block i of leaf p, or -1 after the last.
GALLEON_HDI int64_t next_block(int p, int64_t i, int64_t count) {
  if (i + 32 < count) return i + 32;
  for (int q = p + 1; q < 32; ++q)
    if (bitrev5(q) < count) return bitrev5(q);
  return -1;
}

// Where a tile's activation blocks come from: GlobalActs reads them from the activation rows;
// matmul_kernels.cuh's staged source copies block i of all the tile's tokens to shared memory at
// begin(i, next_block) (the block's threads together, the next block's words fetched while
// this one is used). at(k, i) is block i of token t0 + k (the last token past the end).
// kStagesWeights: the source also holds the packed weight record of block i of the tile's rows
// (quants(i), scales(i): a record's quant and scale parts), which the tile then reads from
// there instead of from p.pq and p.ps, and does not fetch ahead itself; or, for the 256-element
// types, block i of each of the tile's rows as stored (weight_block(row)).
template <class Block>
class GlobalActs {
 public:
  static constexpr bool kStagesWeights = false;
  GALLEON_HDI GlobalActs(const GemmArgs& p, int64_t t0) : p_(p), t0_(t0) {}
  GALLEON_HDI void begin(int64_t, int64_t) {}
  GALLEON_HDI const Block& at(int64_t k, int64_t i) const {
    int64_t t = t0_ + k;
    if (t > p_.ntok - 1) t = p_.ntok - 1;
    return reinterpret_cast<const Block*>(p_.act + size_t(t) * p_.arb)[i];
  }

 private:
  GemmArgs p_;
  int64_t t0_;
};

template <GgmlType T>
using ActBlock = std::conditional_t<TypeInfo<T>::elems == 32, kern::A8Block, kern::A8KBlock>;

// Packed weights (docs/cuda.md, "Variant u4"): the 32-element types' weights
// laid out again for the tiles, once, when they are uploaded. A record per 16 rows and block:
// record gr * nb + i holds block i (of nb per row) of rows 16 gr .. 16 gr + 15 (the last row
// repeated past the end). Its quant part is every lane's A fragment words in lane order,
// kWords per lane, so that a warp reads a record with one aligned 8- or 16-byte load per lane
// and uses every byte it fetches (the blocks themselves, 18 to 34 bytes, are 2-byte aligned:
// 16-bit loads): for Q4_0 and Q4_1 lane (g, t)'s quant words at byte 4t of rows g and g + 8 as
// stored (lo and hi nibbles split in registers), for Q5_0, Q5_1 and Q8_0 its four A words
// (a8_words: the fifth bit merged in). Its scale part (kScaleWords words): a word per row pair
// g (rows g and g + 8 of the record, low and high 16 bits) of d's binary16 bits, then for
// Q4_1 and Q5_1 8 words of m's. The quants and scales are the blocks' own: the same products
// and finishes, so the same bits.
template <GgmlType T>
constexpr bool kPacks = kHasPath<T> && TypeInfo<T>::elems == 32;
template <GgmlType T>
struct PackFormat {
  static constexpr bool kNibbles = T == GgmlType::Q4_0 || T == GgmlType::Q4_1;
  static constexpr int kWords = kNibbles ? 2 : 4;                // quant words per lane
  static constexpr int kScaleWords = kA8HasMin<T> ? 16 : 8;  // per record
};
GALLEON_HDI int64_t pack_groups(int64_t rows) { return (rows + kRows - 1) / kRows; }
// The packed record of block i of the 16 rows from r0 (the last group's past the end, whose
// results are not stored).
GALLEON_HDI size_t packed_record(const GemmArgs& p, int64_t r0, int64_t i) {
  int64_t gr = r0 / kRows;
  const int64_t last = pack_groups(p.n_out) - 1;
  if (gr > last) gr = last;
  return size_t(gr) * size_t(p.n / 32) + size_t(i);
}
// The words of the quant and scale parts of `rows` rows of n elements.
template <GgmlType T>
GALLEON_HDI size_t pack_quant_words(int64_t rows, int64_t n) {
  return size_t(pack_groups(rows)) * size_t(n / 32) * 32 * PackFormat<T>::kWords;
}
template <GgmlType T>
GALLEON_HDI size_t pack_scale_words(int64_t rows, int64_t n) {
  return size_t(pack_groups(rows)) * size_t(n / 32) * PackFormat<T>::kScaleWords;
}
// Record gr * nb + i of the rows of raw (raw.pq, raw.ps unused): lane's quant words to
// pq[32 * kWords * record + kWords * lane ..], and for t == 0 its row pair's scale words.
template <GgmlType T>
GALLEON_HDI void pack_lane(const GemmArgs& raw, int64_t gr, int64_t i, int lane, uint32_t* pq,
                           uint32_t* ps) {
  using F = PackFormat<T>;
  constexpr int kBytes = TypeInfo<T>::bytes;
  const int g = lane >> 2, t = lane & 3;
  const uint8_t* w[2];
  for (int h = 0; h < 2; ++h) {
    int64_t r = kRows * gr + g + 8 * h;
    if (r > raw.n_out - 1) r = raw.n_out - 1;
    w[h] = raw.w + size_t(r) * raw.wrb + size_t(i) * kBytes;
  }
  const size_t record = size_t(gr) * size_t(raw.n / 32) + size_t(i);
  uint32_t* q = pq + (record * 32 + size_t(lane)) * F::kWords;
  if constexpr (F::kNibbles) {
    constexpr int kQs = T == GgmlType::Q4_0 ? 2 : 4;
    q[0] = wword(w[0] + kQs + 4 * t);
    q[1] = wword(w[1] + kQs + 4 * t);
  } else {
    a8_words<T>(w[0], t, &q[0], &q[2]);
    a8_words<T>(w[1], t, &q[1], &q[3]);
  }
  if (t != 0) return;
  uint32_t* sc = ps + record * F::kScaleWords;
  sc[g] = load_u16(w[0]) | (load_u16(w[1]) << 16);
  if constexpr (kA8HasMin<T>) sc[8 + g] = load_u16(w[0] + 2) | (load_u16(w[1] + 2) << 16);
}
// Lane l's A words of a record whose quant part starts at q (as load_a8 reads them in place).
template <GgmlType T>
GALLEON_HDI void packed_a8_words(const uint32_t* q, int l, uint32_t* w) {
  using F = PackFormat<T>;
  const uint32_t* p = q + l * F::kWords;
  expect_aligned(p, 4 * F::kWords);
  if constexpr (F::kNibbles) {
#if defined(__CUDA_ARCH__)
    const uint2 v = *reinterpret_cast<const uint2*>(p);
    const uint32_t x = v.x, y = v.y;
#else
    const uint32_t x = p[0], y = p[1];
#endif
    w[0] = x & kLowNibbles;
    w[1] = y & kLowNibbles;
    w[2] = (x >> 4) & kLowNibbles;
    w[3] = (y >> 4) & kLowNibbles;
  } else {
#if defined(__CUDA_ARCH__)
    const uint4 v = *reinterpret_cast<const uint4*>(p);
    w[0] = v.x, w[1] = v.y, w[2] = v.z, w[3] = v.w;
#else
    for (int k = 0; k < 4; ++k) w[k] = p[k];
#endif
  }
}

// One warp's tile: rows r0 .. r0 + 15 and tokens t0 .. t0 + 8 * NT - 1. Rows and tokens past
// the ends read the last one (their results are not stored). out[j][e] is the canonical dot
// product (before canonical_nan) of row r0 + result_row(lane, e) and token
// t0 + result_token(lane, j, e). kPairs (32-element types, activations read in place): a lane's
// blocks i and i + 32 are computed together, both blocks' loads with no branch between them so
// that they are in flight together, then added in order (a lane's last odd block computed
// twice, its copy not added). kPacked (32-element types): the weights are read from p.pq and
// p.ps (Packed weights, above) instead of their rows.
template <GgmlType T, int NT, class Acts = GlobalActs<ActBlock<T>>, bool kPairs = false,
          bool kPacked = false>
class Tile {
 public:
  static constexpr int kElems = TypeInfo<T>::elems, kBytes = TypeInfo<T>::bytes;
  using Block = ActBlock<T>;
  static_assert(!kPacked || kPacks<T>);
  static_assert(!Acts::kStagesWeights || kPacked || kElems == 256,
                "a source stages packed weight records, or 256-element blocks as stored");

  GALLEON_HDI Tile(const Args& p, int64_t r0, int64_t t0, int lane)
      : Tile(p, r0, lane, Acts(p, t0)) {}
  GALLEON_HDI Tile(const Args& p, int64_t r0, int lane, const Acts& acts)
      : p_(p), r0_(r0), lane_(lane), acts_(acts) {}

  GALLEON_HDI void run(float (&out)[NT][4]) const {
    RegPending<NT> pending{};
    run(out, pending);
  }
  // pending: the binary counter's partial sums (level k: 2^k lanes), each written before read.
  template <class Pending>
  GALLEON_HDI void run(float (&out)[NT][4], Pending& pending) const {
    run_leaves<5>(0, out, pending);
  }
  // The leaves p0 .. p0 + 2^kLevels - 1 (p0 a multiple of 2^kLevels) combined as warp_tree
  // combines their lanes: the subtree above them (all 32 leaves: the whole tree). The subtrees
  // of 32 / S warps that share a tile are joined by join_subtrees.
  template <int kLevels, class Pending>
  GALLEON_HDI void run_leaves(int p0, float (&out)[NT][4], Pending& pending) const {
    static_assert(kLevels >= 0 && kLevels <= 5);
    float v[NT][4];
    for (int q = 0; q < (1 << kLevels); ++q) {
      leaf(p0 + q, v);
      // Merge with the partial sums of the levels whose bit of q is set (earlier lanes on the
      // left), then park the result at the first clear bit's level.
      bool carry = true;  // no break: every level's index stays a constant (registers)
      GALLEON_DEVICE_UNROLL
      for (int k = 0; k < kLevels; ++k) {
        if (!carry) continue;
        if (((q >> k) & 1) == 0) {
          GALLEON_DEVICE_UNROLL
          for (int j = 0; j < NT; ++j)
            GALLEON_DEVICE_UNROLL
            for (int e = 0; e < 4; ++e) pending.at(k, j, e) = v[j][e];
          carry = false;
          continue;
        }
        GALLEON_DEVICE_UNROLL
        for (int j = 0; j < NT; ++j)
          GALLEON_DEVICE_UNROLL
          for (int e = 0; e < 4; ++e) v[j][e] = pending.at(k, j, e) + v[j][e];
      }
    }
    copy(v, out);  // the last leaf carried through every level: the subtree's lanes combined
  }

 private:
  GALLEON_HDI static void copy(const float (&from)[NT][4], float (&to)[NT][4]) {
    GALLEON_DEVICE_UNROLL
    for (int j = 0; j < NT; ++j)
      GALLEON_DEVICE_UNROLL
      for (int e = 0; e < 4; ++e) to[j][e] = from[j][e];
  }

  // Weight row r0 + g + 8 * half of lane l (the last row past the end).
  GALLEON_HDI const uint8_t* row(int l, int half) const {
    int64_t r = r0_ + (l >> 2) + 8 * half;
    if (r > p_.n_out - 1) r = p_.n_out - 1;
    return p_.w + size_t(r) * p_.wrb;
  }
  // Activation block i of token t0 + k (the last token past the end).
  GALLEON_HDI const Block& act(int64_t k, int64_t i) const { return acts_.at(k, i); }
  // Token (offset from t0) of lane l's B column in token group j, and of this lane's result e.
  GALLEON_HDI static int b_token(int l, int j) { return 8 * j + (l >> 2); }
  GALLEON_HDI int c_token(int j, int e) const { return result_token(lane_, j, e); }

  // Canonical lane l = bitrev5(p) of every result: its blocks l, l + 32, ... added in order to
  // 0.0f.
  GALLEON_HDI void leaf(int p, float (&v)[NT][4]) const {
    GALLEON_DEVICE_UNROLL
    for (int j = 0; j < NT; ++j)
      GALLEON_DEVICE_UNROLL
      for (int e = 0; e < 4; ++e) v[j][e] = 0.0f;
    if constexpr (kPairs && kElems == 32)
      leaf_pairs(bitrev5(p), v);
    else
      leaf_blocks(p, v);
  }
  GALLEON_HDI static void add(float (&v)[NT][4], const float (&c)[NT][4]) {
    GALLEON_DEVICE_UNROLL
    for (int j = 0; j < NT; ++j)
      GALLEON_DEVICE_UNROLL
      for (int e = 0; e < 4; ++e) v[j][e] = v[j][e] + c[j][e];
  }
  GALLEON_HDI void leaf_blocks(int p, float (&v)[NT][4]) const {
    const int64_t count = p_.n / kElems;
    for (int64_t i = bitrev5(p); i < count; i += 32) {
      const int64_t next = next_block(p, i, count);
      acts_.begin(i, next);
      float c[NT][4];
      if constexpr (kElems == 32)
        block_a8(i, next, c);
      else
        block_k(i, c);
      add(v, c);
    }
  }
  // kPairs: blocks i and i + 32 of lane l at a time (the last odd block twice, added once).
  GALLEON_HDI void leaf_pairs(int l, float (&v)[NT][4]) const {
    const int64_t count = p_.n / kElems;
    for (int64_t i = l; i < count; i += 64) {
      const bool second = i + 32 < count;
      float c[NT][4], c2[NT][4];
      block_a8(i, -1, c);
      block_a8(second ? i + 32 : i, -1, c2);
      add(v, c);
      if (second) add(v, c2);
    }
  }

  // The weight words of block i (A fragments of rows r0 .. r0 + 15); packed, also this lane's
  // scale words (d, m of its rows g and g + 8).
  GALLEON_HDI void load_a8(int64_t i, WarpWords<4>& a, uint32_t (&sc)[2]) const {
    if constexpr (kPacked) {
      const uint32_t *q, *s;
      if constexpr (Acts::kStagesWeights) {
        q = acts_.quants(i);
        s = acts_.scales(i);
      } else {
        const size_t rec = packed_record(p_, r0_, i);
        q = p_.pq + rec * 32 * PackFormat<T>::kWords;
        s = p_.ps + rec * PackFormat<T>::kScaleWords;
      }
      a.load(lane_, [&](int l, uint32_t* w) { packed_a8_words<T>(q, l, w); });
      s += lane_ >> 2;
      sc[0] = s[0];
      if constexpr (kA8HasMin<T>) sc[1] = s[8];
    } else {
      a.load(lane_, [&](int l, uint32_t* w) {
        a8_words<T>(row(l, 0) + size_t(i) * kBytes, l & 3, &w[0], &w[2]);
        a8_words<T>(row(l, 1) + size_t(i) * kBytes, l & 3, &w[1], &w[3]);
      });
    }
  }
  // Block i's contribution to result e's row half h from its integer sum s.
  GALLEON_HDI float finish_a8_at(int64_t i, int h, const uint32_t (&sc)[2], const Block& a,
                                 int32_t s) const {
    if constexpr (kPacked)
      return finish_a8_dm<T>(f16_bits(sc[0] >> (16 * h)),
                             kA8HasMin<T> ? f16_bits(sc[1] >> (16 * h)) : 0.0f, a, s);
    else
      return finish_a8<T>(row(lane_, h) + size_t(i) * kBytes, a, s);
  }
  // Contribution of block i of each result: one m16n8k32 per token group. Its weight words
  // were fetched with the block before (next_a_), unless it is the first; those of block `next`
  // (the next one visited; -1: none, or not known) are fetched now, so that their loads are in
  // flight while this block is computed. (Weights staged by the source: read when used, never
  // ahead, since the source fills block `next`'s record while this one is computed.)
  GALLEON_HDI void block_a8(int64_t i, int64_t next, float (&c)[NT][4]) const {
    WarpWords<4> a;
    uint32_t sc[2] = {0, 0};
    if (next_i_ == i) {
      a = next_a_;
      sc[0] = next_sc_[0], sc[1] = next_sc_[1];
    } else {
      load_a8(i, a, sc);
    }
    if constexpr (!Acts::kStagesWeights) {
      if (next >= 0) load_a8(next, next_a_, next_sc_);
      next_i_ = next;
    }
    GALLEON_DEVICE_UNROLL
    for (int j = 0; j < NT; ++j) {
      WarpWords<2> b;
      b.load(lane_, [&](int l, uint32_t* w) {
        const Block& ab = act(b_token(l, j), i);
        w[0] = aword(ab.q + 4 * (l & 3));
        w[1] = aword(ab.q + 16 + 4 * (l & 3));
      });
      int32_t s[4];
      mma_s8<32>(lane_, a, b, s);
      GALLEON_DEVICE_UNROLL
      for (int e = 0; e < 4; ++e)
        c[j][e] = finish_a8_at(i, e >> 1, sc, act(c_token(j, e), i), s[e]);
    }
  }

  // The weights of sub-block sb of a 256-element block: every lane's A words (on the GPU this
  // lane's), and this lane's two rows' scales and minimums (sub_scale).
  static constexpr int kWords = kSub<T> / 8;  // A words per lane of an m16n8k<kSub>
  struct KSub {
    WarpWords<kWords> a;
    int scale[2], mn[2];
  };
  // Weight block i of lane l's row half h (a source that stages the blocks: its copy).
  GALLEON_HDI const uint8_t* wblock(int l, int h, int64_t i) const {
    if constexpr (Acts::kStagesWeights) return acts_.weight_block((l >> 2) + 8 * h);
    return row(l, h) + size_t(i) * kBytes;
  }
  // A words (m16n8k32: rows g, g + 8 at k 4t.., then at k 16 + 4t..; m16n8k16: rows g, g + 8).
  GALLEON_HDI void load_sub(int64_t i, int sb, KSub& s) const {
    s.a.load(lane_, [&](int l, uint32_t* w) {
      for (int k = 0; k < kWords; ++k)
        w[k] = sub_word<T>(wblock(l, k & 1, i), sb, 4 * (k >> 1) + (l & 3));
    });
    sub_scale<T>(wblock(lane_, 0, i), sb, &s.scale[0], &s.mn[0]);
    sub_scale<T>(wblock(lane_, 1, i), sb, &s.scale[1], &s.mn[1]);
  }

  // 256-element block i: one m16n8k<kSub> per sub-block and token group. The block's scales
  // are loaded first and each sub-block's weights while the one before is computed, so that
  // their loads are in flight behind the mma rather than before them.
  GALLEON_HDI void block_k(int64_t i, float (&c)[NT][4]) const {
    constexpr int kSubs = 256 / kSub<T>;
    KSums sums[NT][4];
    float d[2], dmin[2];
    kscales<T>(wblock(lane_, 0, i), &d[0], &dmin[0]);
    kscales<T>(wblock(lane_, 1, i), &d[1], &dmin[1]);
    KSub cur;
    load_sub(i, 0, cur);
    for (int sb = 0; sb < kSubs; ++sb) {
      KSub next = cur;
      if (sb + 1 < kSubs) load_sub(i, sb + 1, next);
      GALLEON_DEVICE_UNROLL
      for (int j = 0; j < NT; ++j) {
        WarpWords<kSub<T> / 16> b;
        b.load(lane_, [&](int l, uint32_t* w) {
          const Block& ab = act(b_token(l, j), i);
          for (int k = 0; k < kSub<T> / 16; ++k)
            w[k] = aword(ab.q + kSub<T> * sb + 16 * k + 4 * (l & 3));
        });
        int32_t s[4];
        mma_s8<kSub<T>>(lane_, cur.a, b, s);
        GALLEON_DEVICE_UNROLL
        for (int e = 0; e < 4; ++e) {
          const KSums part =
              sub_sums<T>(cur.scale[e >> 1], cur.mn[e >> 1], act(c_token(j, e), i), sb, s[e]);
          sums[j][e].sumi += part.sumi;
          sums[j][e].summ += part.summ;
        }
      }
      cur = next;
    }
    finish_k(i, d, dmin, sums, c);
  }

  // c from the block's sums and its rows' scales (d[h], dmin[h] of row half h).
  GALLEON_HDI void finish_k(int64_t i, const float (&d)[2], const float (&dmin)[2],
                            const KSums (&sums)[NT][4], float (&c)[NT][4]) const {
    GALLEON_DEVICE_UNROLL
    for (int j = 0; j < NT; ++j)
      GALLEON_DEVICE_UNROLL
      for (int e = 0; e < 4; ++e)
        c[j][e] = kfinish_dm<T>(d[e >> 1], dmin[e >> 1], act(c_token(j, e), i), sums[j][e]);
  }

  Args p_;
  int64_t r0_;
  int lane_;
  mutable Acts acts_;  // begin() moves a staged source on
  // block_a8's prefetch: the weight words of block next_i_ (-1: none).
  mutable WarpWords<4> next_a_;
  mutable uint32_t next_sc_[2] = {0, 0};
  mutable int64_t next_i_ = -1;
};

}  // namespace galleon::cdev::mma
