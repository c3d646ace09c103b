// The prompt matmul of the plain types (F32, F16, BF16) on CUDA cores, through shared memory
// (docs/cuda.md, "Plain tiles"). Tensor cores cannot serve them: the definition rounds each
// weight x activation product to f32 and adds it to its lane, with no fused multiply-add.
//
// - A block of kWarps warps computes kRows weight rows x kTokens tokens. Each round, its
//   threads stage kChunk elements of those rows and tokens in shared memory as f32 (zero past a
//   row's end, and for rows or tokens past the matrix's), fetched into registers as stored
//   (Fetched: 16-bit weights two to a word) while the round before is computed.
// - Warp w takes kWarpRows rows and kWarpTokens tokens of the block; thread l is lane l of all
//   kOut of their dot products: v[o] = v[o] + w * x for elements l, l + 32, ... in increasing
//   order. The zeros past a row's end add +0 products, which leave a lane unchanged (a lane
//   starts at +0 and is never -0: a rounded sum is -0 only when both addends are).
// - The warp reduces its kOut sets of 32 lanes with warp_tree's pairs, two dot products per
//   shuffle ("paired tree"): at shift s a lane keeps, of each pair of values, the one whose
//   output it goes on with (the first where lane & s is 0), and receives from lane ^ s the
//   partner's lane of it: L[i] + L[i + s] as in warp_tree, for twice the outputs per shuffle.
//   After shifts 16, 8, 4, 2, 1 each lane holds kOut / 32 finished sums (tree_output).
//
// Compiled for the GPU, and for the CPU test (tests/cuda_emu_test.cpp), which runs the same
// per-thread functions for every thread of a block, round by round.
#pragma once

#include <cstdint>
#include <type_traits>

#include "runtime/cuda/canon_device.h"
#include "runtime/cuda/tile_common.h"

namespace galleon::cdev::plain {

constexpr int kWarpRows = 8, kWarpTokens = 8, kOut = kWarpRows * kWarpTokens;
constexpr int kRowWarps = 4, kTokenWarps = 2, kWarps = kRowWarps * kTokenWarps;
constexpr int kThreads = 32 * kWarps;
constexpr int kRows = kWarpRows * kRowWarps, kTokens = kWarpTokens * kTokenWarps;
constexpr int kChunk = 128, kSteps = kChunk / 32;  // elements staged per round; lane steps
constexpr int kQuads = kChunk / 4;                  // 4-element pieces of a staged row
constexpr int kWeightPieces = kRows * kQuads;
constexpr int kPieces = (kRows + kTokens) * kQuads / kThreads;  // per thread and round
static_assert(kRows * kQuads % kThreads == 0 && kTokens * kQuads % kThreads == 0,
              "pieces are shared out evenly");
static_assert(kOut % 32 == 0, "the paired tree ends with whole sums in every lane");

template <GgmlType T>
constexpr bool kHasPath = T == GgmlType::F32 || T == GgmlType::F16 || T == GgmlType::BF16;

// One round's operands, as f32 (16-byte aligned: a piece is stored with one vector store).
struct alignas(16) Stage {
  float w[kRows][kChunk];
  float x[kTokens][kChunk];
};

struct Quad {
  float v[4];
};

// A piece's 4 elements as stored (elements at or past n as +0): F32 4 words of their bits,
// F16 and BF16 2 words of two elements each (the lower element in the low half). So a 16-bit
// piece waits for its round in 2 registers, and becomes f32 only when it goes to shared memory.
template <GgmlType T>
constexpr int kPieceWords = T == GgmlType::F32 ? 4 : 2;
template <GgmlType T>
struct RawPiece {
  uint32_t w[kPieceWords<T>];
};

// Elements e0 .. e0 + 3 of a row (elements of `size` bytes; those at or past n are +0). The GPU
// loads a whole piece with one vector load where it lies inside the row and is aligned.
template <GgmlType T>
GALLEON_HDI RawPiece<T> load_piece(const uint8_t* row, int64_t e0, int64_t n) {
  constexpr int size = T == GgmlType::F32 ? 4 : 2;
  const uint8_t* p = row + size_t(e0) * size;
  RawPiece<T> q{};
#if defined(__CUDA_ARCH__)
  if (e0 + 4 <= n && reinterpret_cast<uintptr_t>(p) % (4 * size) == 0) {
    if constexpr (T == GgmlType::F32) {
      const uint4 v = *reinterpret_cast<const uint4*>(p);
      q.w[0] = v.x, q.w[1] = v.y, q.w[2] = v.z, q.w[3] = v.w;
    } else {
      const uint2 v = *reinterpret_cast<const uint2*>(p);
      q.w[0] = v.x, q.w[1] = v.y;
    }
    return q;
  }
#endif
  GALLEON_DEVICE_UNROLL
  for (int i = 0; i < 4; ++i) {
    if (e0 + i >= n) continue;
    if constexpr (T == GgmlType::F32)
      q.w[i] = to_bits(load_f32(p + 4 * i));
    else
      q.w[i / 2] |= load_u16(p + 2 * i) << (16 * (i % 2));
  }
  return q;
}
// The piece's elements as f32 (binary16 and bfloat16 widened exactly).
template <GgmlType T>
GALLEON_HDI Quad decode(const RawPiece<T>& q) {
  Quad f;
  GALLEON_DEVICE_UNROLL
  for (int i = 0; i < 4; ++i) {
    if constexpr (T == GgmlType::F32) {
      f.v[i] = from_bits(q.w[i]);
    } else {
      const uint32_t h = (q.w[i / 2] >> (16 * (i % 2))) & 0xFFFFu;
      f.v[i] = T == GgmlType::F16 ? f16_bits(h) : bf16_to_float(h);
    }
  }
  return f;
}

// A thread's pieces of a round as fetched: kW weight pieces as stored, kX activation pieces.
template <GgmlType T>
struct Fetched {
  static constexpr int kW = kWeightPieces / kThreads, kX = kPieces - kW;
  RawPiece<T> w[kW];
  RawPiece<GgmlType::F32> x[kX];
};

// A thread's share of the staging: pieces tid, tid + kThreads, ... of the round's weight rows
// and, likewise, of its activation rows, each 4 elements.
template <GgmlType T>
class Stager {
 public:
  using Pieces = Fetched<T>;
  GALLEON_HDI Stager(const GemmArgs& p, int64_t r0, int64_t t0, int tid)
      : p_(p), r0_(r0), t0_(t0), tid_(tid) {}

  // Round c's pieces, from global memory into q (weight pieces zero for rows past the
  // matrix's, activation pieces for tokens past its).
  GALLEON_HDI void fetch(int64_t c, Pieces& q) const {
    GALLEON_DEVICE_UNROLL
    for (int j = 0; j < Pieces::kW; ++j) {
      const Piece at = piece(j);
      const int64_t r = r0_ + at.row;
      q.w[j] = r < p_.n_out ? load_piece<T>(p_.w + size_t(r) * p_.wrb, e0(c, at), p_.n)
                            : RawPiece<T>{};
    }
    GALLEON_DEVICE_UNROLL
    for (int j = 0; j < Pieces::kX; ++j) {
      const Piece at = piece(j);
      const int64_t t = t0_ + at.row;
      q.x[j] = t < p_.ntok
                   ? load_piece<GgmlType::F32>(p_.act + size_t(t) * p_.arb, e0(c, at), p_.n)
                   : RawPiece<GgmlType::F32>{};
    }
  }
  // q into the shared stage, as f32.
  GALLEON_HDI void store(const Pieces& q, Stage& s) const {
    GALLEON_DEVICE_UNROLL
    for (int j = 0; j < Pieces::kW; ++j) {
      const Piece at = piece(j);
      put(decode<T>(q.w[j]), &s.w[at.row][4 * at.quad]);
    }
    GALLEON_DEVICE_UNROLL
    for (int j = 0; j < Pieces::kX; ++j) {
      const Piece at = piece(j);
      put(decode<GgmlType::F32>(q.x[j]), &s.x[at.row][4 * at.quad]);
    }
  }

 private:
  struct Piece {
    int row, quad;  // row within the block's rows or tokens; 4-element piece of the round
  };
  // The j-th piece of this thread among the weight pieces (or, likewise, the activation ones).
  GALLEON_HDI Piece piece(int j) const {
    const int pc = tid_ + kThreads * j;
    return {pc / kQuads, pc % kQuads};
  }
  GALLEON_HDI static int64_t e0(int64_t c, Piece at) { return c * kChunk + 4 * at.quad; }
  // One 16-byte store: a quarter warp's 8 pieces fill the 32 banks (4 stores each would put
  // lanes 8 apart on the same bank).
  GALLEON_HDI static void put(const Quad& q, float* to) { store_aligned_floats<4>(q.v, to); }

  GemmArgs p_;
  int64_t r0_, t0_;
  int tid_;
};

// The ring variant's round (GALLEON_CUDA_PLAIN=ring, matmul_kernels.cuh): the weights as
// stored (F16 and BF16 16 bits each, F32 their bits; widened to f32 when read, exactly) and
// the activations, so that cp.async can copy a piece to its place without passing it through
// registers. 16 KiB a round for the 16-bit types, 24 KiB for F32, so that
// ring_stages<T>(asked) rounds fit in 48 KiB: 2 or 3 for the 16-bit types (3: two rounds in
// flight), 2 for F32.
template <GgmlType T>
struct alignas(16) RawStage {
  using Word = std::conditional_t<T == GgmlType::F32, uint32_t, uint16_t>;
  Word w[kRows][kChunk];
  float x[kTokens][kChunk];
};
template <GgmlType T>
constexpr int ring_stages(int asked) {
  return T == GgmlType::F32 ? 2 : asked;
}
// Weight r of a round's column i, as f32.
GALLEON_HDI float stage_weight(const Stage& s, int r, int i) { return s.w[r][i]; }
template <GgmlType T>
GALLEON_HDI float stage_weight(const RawStage<T>& s, int r, int i) {
  if constexpr (T == GgmlType::F32)
    return from_bits(s.w[r][i]);
  else if constexpr (T == GgmlType::F16)
    return f16_bits(s.w[r][i]);
  else
    return bf16_to_float(s.w[r][i]);
}

// Warp `warp`'s first row and token within the block.
GALLEON_HDI constexpr int warp_row(int warp) { return kWarpRows * (warp % kRowWarps); }
GALLEON_HDI constexpr int warp_token(int warp) { return kWarpTokens * (warp / kRowWarps); }

// One round of lane `lane`: v[r * kWarpTokens + t] for the warp's row r and token t (S: Stage or
// RawStage<T>).
template <class S>
GALLEON_HDI void accumulate(const S& s, int warp, int lane, float (&v)[kOut]) {
  const int r0 = warp_row(warp), t0 = warp_token(warp);
  GALLEON_DEVICE_UNROLL
  for (int step = 0; step < kSteps; ++step) {
    const int i = 32 * step + lane;
    float wv[kWarpRows], xv[kWarpTokens];
    GALLEON_DEVICE_UNROLL
    for (int r = 0; r < kWarpRows; ++r) wv[r] = stage_weight(s, r0 + r, i);
    GALLEON_DEVICE_UNROLL
    for (int t = 0; t < kWarpTokens; ++t) xv[t] = s.x[t0 + t][i];
    GALLEON_DEVICE_UNROLL
    for (int r = 0; r < kWarpRows; ++r)
      GALLEON_DEVICE_UNROLL
      for (int t = 0; t < kWarpTokens; ++t)
        v[r * kWarpTokens + t] = v[r * kWarpTokens + t] + wv[r] * xv[t];
  }
}

// The paired tree's step at shift s, for a pair (a, b) = (v[2k], v[2k + 1]): what the lane sends
// to lane ^ s, and its new v[k] from the pair and what it received (the lower lane's value
// first, as in warp_tree).
GALLEON_HDI float pair_send(float a, float b, int lane, int s) { return (lane & s) ? a : b; }
GALLEON_HDI float pair_sum(float a, float b, int lane, int s, float got) {
  return (lane & s) ? got + b : a + got;
}
// After the tree, lane's v[k] (k < kOut / 32) is output 32 k + bitrev5(lane) of the 64.
GALLEON_HDI constexpr int tree_output(int lane, int k) { return 32 * k + bitrev5(lane); }

// (GALLEON_CUDA_HOST: session.cu compiled for the CPU by the tests, tests/cuda_host.)
#if defined(__CUDACC__) || defined(GALLEON_CUDA_HOST)
// One step of the paired tree: the first kCount values of v -> the first kCount / 2.
template <int kCount>
__device__ __forceinline__ void paired_step(float (&v)[kOut], int lane, int s) {
#pragma unroll
  for (int k = 0; k < kCount / 2; ++k) {
    const float a = v[2 * k], b = v[2 * k + 1];
    v[k] = pair_sum(a, b, lane, s, __shfl_xor_sync(0xffffffffu, pair_send(a, b, lane, s), s));
  }
}
__device__ __forceinline__ void paired_tree(float (&v)[kOut], int lane) {
  static_assert(kOut == 64, "five steps from 64 values to 2");
  paired_step<64>(v, lane, 16);
  paired_step<32>(v, lane, 8);
  paired_step<16>(v, lane, 4);
  paired_step<8>(v, lane, 2);
  paired_step<4>(v, lane, 1);
}
#endif

}  // namespace galleon::cdev::plain
