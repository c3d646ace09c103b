// The matmuls' launches: the kernel, tile variant and grid for each weight type, path and
// GALLEON_CUDA_MMA / GALLEON_CUDA_PLAIN setting, grouped launches of weights that follow each
// other.
//
// Part of runtime/cuda/session.cu's translation unit (its definitions are in an unnamed
// namespace): only session.cu includes it.
#pragma once

#include <cstdint>
#include <cstdlib>
#include <string>

#include "runtime/cuda/cuda_backend.h"
#include "runtime/cuda/handles.cuh"
#include "runtime/cuda/matmul_kernels.cuh"
#include "runtime/cuda/step_kernels.cuh"
#include "runtime/cuda/steps.h"
#include "runtime/quant.h"

namespace galleon::cuda {
namespace {

// A warp's tile of the matmul: rows (1 for the 256-element types' kernel) and tokens.
struct Tile {
  int rows, tokens;
};
// Decoding: one row and token per warp; prompts: one row and 4 tokens. The results do not
// depend on the tile. On an H100, tiles of 2 or 4 rows and 4 or 8 tokens (an activation block
// read once for several rows) made no prompt faster and F16 prompts slower (docs/cuda.md).
constexpr Tile kDecodeTile{1, 1}, kPromptTile{1, cdev::step::kMatmulTokens};

template <GgmlType T, int R, int K>
void launch_matmul(const DevWeight& w, const uint8_t* a, size_t arb, int64_t ntok, float* y,
                   cudaStream_t st) {
  const int rows = cdev::TypeInfo<T>::elems == 256 ? 1 : R;
  const dim3 grid = matmul_grid(w.n_out, kMatmulWarps * rows, ntok, K);
  if constexpr (cdev::TypeInfo<T>::elems == 256)
    GALLEON_LAUNCH(grid, 32 * kMatmulWarps, 0, st, matmul_k_kernel<T, K>)(
        w.data, w.row_bytes, w.n_in, w.n_out, a, arb, ntok, y, w.n_out);
  else
    GALLEON_LAUNCH(grid, 32 * kMatmulWarps, 0, st, matmul_kernel<T, R, K>)(
        w.data, w.row_bytes, w.n_in, w.n_out, a, arb, ntok, y, w.n_out);
}

// The tensor-core kernel's variant, GALLEON_CUDA_MMA (read when a session is made): y4 (the
// default since the H200 timed it, 2026-11-29: x4, and for Q2_K, Q4_K, Q5_K and IQ4_XS a ring of
// their blocks as stored, PipelinedKBlocks), x4 (packed weights and activations of the
// 32-element types through a ring of cp.async copies, PipelinedBlocks; the K-quants t4 with a
// padded stage: the default before y4), t4 (staged activations, above: the default before
// x4), s4 (4 token groups per warp, counter in shared memory: the default until the H200
// timed t4), s2 (2 token groups, counter in shared memory), r2 (2 token groups, counter in
// registers: the first version), k4 or k8 (the dot products split across 4 or 8 warps,
// above), p4 (k4 with a lane's blocks two at a time, Tile's kPairs), u4 (t4 with packed
// weights), v4 and w4 (t4 and u4 with 4 activation blocks staged at once). Every variant gives
// the same bits; they differ in speed only (docs/cuda.md).
enum class MmaVariant { R2, S2, S4, T4, K4, K8, P4, U4, V4, W4, X4, Y4 };
MmaVariant mma_variant_from_env() {
  const char* e = std::getenv("GALLEON_CUDA_MMA");
  const std::string s = e ? e : "";
  if (s == "r2") return MmaVariant::R2;
  if (s == "s2") return MmaVariant::S2;
  if (s == "s4") return MmaVariant::S4;
  if (s == "k4") return MmaVariant::K4;
  if (s == "k8") return MmaVariant::K8;
  if (s == "p4") return MmaVariant::P4;
  if (s == "u4") return MmaVariant::U4;
  if (s == "v4") return MmaVariant::V4;
  if (s == "w4") return MmaVariant::W4;
  if (s == "t4") return MmaVariant::T4;
  if (s == "x4") return MmaVariant::X4;
  return MmaVariant::Y4;
}
// The tile kernels' variants (read when a session is made): the tensor-core kernel's, and the
// plain tiles' blocks per SM (2, the default; GALLEON_CUDA_PLAIN=b1: 1) or their ring variant
// with 3 slots for the 16-bit types (GALLEON_CUDA_PLAIN=ring: matmul_plain_ring_kernel, 2
// blocks per SM; ptxas: 84 bytes spilled) or 2 (ring2: one round in flight, as the default
// kernel's registers hold it; 32 bytes spilled). F32 takes 2 in both.
struct TileVariant {
  MmaVariant mma;
  int plain_blocks;
  int plain_ring;  // slots of the ring, 0: the default kernel
};
TileVariant tile_variant_from_env() {
  const char* e = std::getenv("GALLEON_CUDA_PLAIN");
  const std::string plain = e ? e : "";
  return {mma_variant_from_env(), plain == "b1" ? 1 : 2,
          plain == "ring" ? 3 : plain == "ring2" ? 2 : 0};
}

// Matmuls of one input for one launch of the prompt tiles: weights of one type and input
// width, each with its output (forward.h's matmuls of one input). One launch serves them
// where their weights lie one after the other in GPU memory (CudaSession uploads a layer's
// Q, K and V, and its gate and up, so; cdev::GemmOut).
struct MatmulGroup {
  const DevWeight* w[cdev::kMaxGemmParts];
  float* y[cdev::kMaxGemmParts];
  int n;
  const uint8_t* act;
  size_t arb;
  int64_t ntok;
};
// The operands of g's matmuls as the rows of one matrix, and where its rows' results go.
struct GroupLaunch {
  cdev::GemmArgs p;
  cdev::GemmOut out;
};
GroupLaunch group_launch(const MatmulGroup& g) {
  const DevWeight& w0 = *g.w[0];
  GroupLaunch l{{w0.data, w0.row_bytes, w0.n_in, 0, g.act, g.arb, g.ntok}, {}};
  l.out.n_parts = g.n;
  for (int i = 0; i < g.n; ++i) {
    l.out.y[i] = g.y[i];
    l.out.first_row[i] = l.p.n_out;
    l.out.n_out[i] = g.w[i]->n_out;
    l.p.n_out += g.w[i]->n_out;
  }
  if (w0.pq && w0.packed_rows >= l.p.n_out) l.p.pq = w0.pq, l.p.ps = w0.ps;
  return l;
}
// Whether the weights of g (one type and input width, so one row size) follow each other in
// memory, as one matrix's rows: one launch.
bool contiguous(const MatmulGroup& g) {
  for (int i = 1; i < g.n; ++i) {
    const DevWeight &a = *g.w[i - 1], &b = *g.w[i];
    if (b.data != a.data + a.row_bytes * size_t(a.n_out)) return false;
  }
  return true;
}

template <GgmlType T, int NT, bool Shared, int kMinBlocks>
void launch_mma_variant(const GroupLaunch& l, cudaStream_t st) {
  const dim3 grid = matmul_grid(l.p.n_out, cdev::mma::kRows, l.p.ntok, 8 * NT * kMmaWarps);
  GALLEON_LAUNCH(grid, 32 * kMmaWarps, 0, st, matmul_mma_kernel<T, NT, Shared, kMinBlocks>)(
      l.p, l.out);
}

template <GgmlType T, int NT, int S, int kMinBlocks, bool kPairs = false>
void launch_mma_split(const GroupLaunch& l, cudaStream_t st) {
  GALLEON_LAUNCH(matmul_grid(l.p.n_out, cdev::mma::kRows, l.p.ntok, 8 * NT), 32 * S, 0, st,
                 matmul_mma_split_kernel<T, NT, S, kMinBlocks, kPairs>)(l.p, l.out);
}

// Variants v4 and w4 stage 4 activation blocks at once for the 32-element types (3 words per
// thread each); the 256-element types' blocks (19 words per thread) one at a time, as t4.
template <GgmlType T>
constexpr int kStageBlocks = cdev::TypeInfo<T>::elems == 32 ? 4 : 1;
template <GgmlType T, bool kPacked, int kBlocks>
void launch_mma_staged(const GroupLaunch& l, cudaStream_t st) {
  GALLEON_LAUNCH(matmul_grid(l.p.n_out, cdev::mma::kRows * kMmaWarps, l.p.ntok, kStagedTokens),
                 32 * kMmaWarps, 0, st, matmul_mma_staged_kernel<T, kPacked, kBlocks>)(l.p, l.out);
}

template <GgmlType T>
void launch_mma_pipelined(const GroupLaunch& l, cudaStream_t st) {
  GALLEON_LAUNCH(matmul_grid(l.p.n_out, cdev::mma::kRows * kMmaWarps, l.p.ntok, kStagedTokens),
                 32 * kMmaWarps, 0, st, matmul_mma_pipelined_kernel<T, kPipeStages>)(l.p, l.out);
}

template <GgmlType T>
void launch_mma_kpipe(const GroupLaunch& l, cudaStream_t st) {
  if constexpr (kKPipes<T>) {
    // (per launch: the attribute is the current device's)
    check(cudaFuncSetAttribute(matmul_mma_kpipe_kernel<T, kKStages>,
                               cudaFuncAttributeMaxDynamicSharedMemorySize, int(kKPipeShared<T>)),
          "cudaFuncSetAttribute (matmul_mma_kpipe_kernel)");
    GALLEON_LAUNCH(matmul_grid(l.p.n_out, cdev::mma::kRows * kMmaWarps, l.p.ntok, kStagedTokens),
                   32 * kMmaWarps, kKPipeShared<T>, st,
                   matmul_mma_kpipe_kernel<T, kKStages>)(l.p, l.out);
  }
}

template <GgmlType T>
void launch_matmul_mma(const GroupLaunch& l, cudaStream_t st, MmaVariant variant) {
  switch (variant) {
    case MmaVariant::R2: return launch_mma_variant<T, 2, false, 1>(l, st);
    case MmaVariant::S2: return launch_mma_variant<T, 2, true, 4>(l, st);
    case MmaVariant::S4: return launch_mma_variant<T, 4, true, 3>(l, st);
    case MmaVariant::T4: return launch_mma_staged<T, false, 1>(l, st);
    case MmaVariant::K4: return launch_mma_split<T, 4, 4, 4>(l, st);
    case MmaVariant::K8: return launch_mma_split<T, 4, 8, 2>(l, st);
    case MmaVariant::P4: return launch_mma_split<T, 4, 4, 4, true>(l, st);
    case MmaVariant::V4: return launch_mma_staged<T, false, kStageBlocks<T>>(l, st);
    case MmaVariant::U4:
    case MmaVariant::W4:
      if (cdev::mma::kPacks<T> && l.p.pq == nullptr)
        return launch_matmul_mma<T>(l, st,
                                    variant == MmaVariant::U4 ? MmaVariant::T4 : MmaVariant::V4);
      if (variant == MmaVariant::U4) return launch_mma_staged<T, true, 1>(l, st);
      return launch_mma_staged<T, true, kStageBlocks<T>>(l, st);
    case MmaVariant::Y4:
      if constexpr (kKPipes<T>) return launch_mma_kpipe<T>(l, st);
      return launch_matmul_mma<T>(l, st, MmaVariant::X4);
    case MmaVariant::X4:  // the K-quants (no packed copy): u4's (t4 with its padded stage);
      // weights left unpacked (GPU memory short: CudaSession::pack): t4
      if constexpr (cdev::mma::kPacks<T>)
        return l.p.pq != nullptr ? launch_mma_pipelined<T>(l, st)
                                 : launch_matmul_mma<T>(l, st, MmaVariant::T4);
      return launch_mma_staged<T, true, 1>(l, st);
  }
}

// Whether sessions of this variant keep a packed copy of the weights of type t for the prompt
// tiles (cdev::mma::pack_lane), besides the rows the one-lane kernels read.
bool packs_weights(TileVariant v, MatmulPath path, GgmlType t) {
  bool packs = false;
  cdev::with_type(t, [&]<GgmlType T>() { packs = cdev::mma::kPacks<T>; });
  const bool packed_variant = v.mma == MmaVariant::U4 || v.mma == MmaVariant::W4 ||
                              v.mma == MmaVariant::X4 || v.mma == MmaVariant::Y4;
  return packs && packed_variant && path == MatmulPath::Tiles;
}
// The bytes of the packed copy of `rows` rows of type t and input width n_in (0 where t has
// none).
size_t packed_bytes(GgmlType t, int64_t rows, int64_t n_in) {
  size_t words = 0;
  cdev::with_type(t, [&]<GgmlType T>() {
    if constexpr (cdev::mma::kPacks<T>)
      words = cdev::mma::pack_quant_words<T>(rows, n_in) +
              cdev::mma::pack_scale_words<T>(rows, n_in);
  });
  return words * sizeof(uint32_t);
}
// The packed copy, in `buf`, of `rows` rows of w's type and input width from `data` (on the
// GPU); w.pq, w.ps and w.packed_rows are set to it.
void pack_weights(DevWeight& w, const uint8_t* data, int64_t rows, DeviceBuffer& buf) {
  cdev::with_type(w.type, [&]<GgmlType T>() {
    if constexpr (cdev::mma::kPacks<T>) {
      const size_t nq = cdev::mma::pack_quant_words<T>(rows, w.n_in);
      const size_t ns = cdev::mma::pack_scale_words<T>(rows, w.n_in);
      buf.reserve((nq + ns) * sizeof(uint32_t));
      uint32_t* pq = buf.get<uint32_t>();
      const cdev::GemmArgs raw{data, w.row_bytes, w.n_in, rows, nullptr, 0, 0};
      const int64_t threads = int64_t(nq / cdev::mma::PackFormat<T>::kWords);
      GALLEON_LAUNCH(blocks_for(threads, 256), 256, 0, nullptr, pack_weights_kernel<T>)(
          raw, pq, pq + nq);
      check_launch("pack_weights_kernel");
      w.pq = pq;
      w.ps = pq + nq;
      w.packed_rows = rows;
    }
  });
}

template <GgmlType T>
void launch_matmul_plain(const GroupLaunch& l, cudaStream_t st, int blocks_per_sm, int ring) {
  namespace pl = cdev::plain;
  const dim3 grid = matmul_grid(l.p.n_out, pl::kRows, l.p.ntok, pl::kTokens);
  constexpr int kRing3 = pl::ring_stages<T>(3), kRing2 = pl::ring_stages<T>(2);
  if (ring == 3 && plain_ring_fits<T>(l.p))
    GALLEON_LAUNCH(grid, pl::kThreads, 0, st, matmul_plain_ring_kernel<T, kRing3>)(l.p, l.out);
  else if (ring == 2 && plain_ring_fits<T>(l.p))
    GALLEON_LAUNCH(grid, pl::kThreads, 0, st, matmul_plain_ring_kernel<T, kRing2>)(l.p, l.out);
  else if (blocks_per_sm == 2)
    GALLEON_LAUNCH(grid, pl::kThreads, 0, st, matmul_plain_kernel<T, 2>)(l.p, l.out);
  else
    GALLEON_LAUNCH(grid, pl::kThreads, 0, st, matmul_plain_kernel<T, 1>)(l.p, l.out);
}

// `requested`, unless it asks for the prompt tiles and the current GPU has no int8 mma.sync
// (compute capability below 8.0). Asked once per session, not per matmul.
MatmulPath available_path(MatmulPath requested) {
  if (requested != MatmulPath::Tiles) return requested;
  int device = 0, major = 0;
  check(cudaGetDevice(&device), "cudaGetDevice");
  check(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device),
        "cudaDeviceGetAttribute");
  return major >= 8 ? requested : MatmulPath::Lanes;
}

// The prompt tiles (tensor cores for the quantized types, shared-memory tiles for the plain
// ones) for the prompts (ntok > 1) of every type that has them, on `path` (available_path's
// answer).
bool use_tiles(GgmlType t, int64_t ntok, MatmulPath path) {
  bool has = false;
  cdev::with_type(t, [&]<GgmlType T>() {
    has = cdev::mma::kHasPath<T> || cdev::plain::kHasPath<T>;
  });
  return has && ntok > 1 && path == MatmulPath::Tiles;
}

// The matmuls of one input (weights of one type and input width): one launch of the prompt
// tiles for all of them where the type has them and their weights follow each other, else a
// launch each.
void run_matmuls(const MatmulGroup& g, cudaStream_t st, MatmulPath path, TileVariant variant) {
  if (g.n > 1 && !contiguous(g)) {
    for (int i = 0; i < g.n; ++i)
      run_matmuls({{g.w[i]}, {g.y[i]}, 1, g.act, g.arb, g.ntok}, st, path, variant);
    return;
  }
  const GgmlType type = g.w[0]->type;
  const bool tiles = use_tiles(type, g.ntok, path);
  cdev::with_type(type, [&]<GgmlType T>() {
    if constexpr (cdev::mma::kHasPath<T>)
      if (tiles) return launch_matmul_mma<T>(group_launch(g), st, variant.mma);
    if constexpr (cdev::plain::kHasPath<T>)
      if (tiles)
        return launch_matmul_plain<T>(group_launch(g), st, variant.plain_blocks,
                                      variant.plain_ring);
    for (int i = 0; i < g.n; ++i) {
      if (g.ntok == 1)
        launch_matmul<T, kDecodeTile.rows, kDecodeTile.tokens>(*g.w[i], g.act, g.arb, g.ntok,
                                                                g.y[i], st);
      else
        launch_matmul<T, kPromptTile.rows, kPromptTile.tokens>(*g.w[i], g.act, g.arb, g.ntok,
                                                                g.y[i], st);
      check_launch("matmul kernel");
    }
  });
  check_launch("matmul kernel (tiles)");
}

// The activations of ntok rows of n values (PlainValues, GluValues) -> dst in the activation
// format of weight type t (A8 or A8K).
template <class Values>
void run_quantize_values(GgmlType t, Values x, int64_t n, int64_t ntok, void* dst,
                         cudaStream_t st) {
  constexpr int kWarps = 4;  // blocks per CUDA block, one warp each
  if (kern::act_format(t) == kern::ActFormat::A8) {
    const int64_t total = n / 32 * ntok;
    GALLEON_LAUNCH(blocks_for(total, kWarps), 32 * kWarps, 0, st, quantize_a8_kernel<Values>)(
        x, n, total, static_cast<kern::A8Block*>(dst));
  } else {
    const int64_t total = n / 256 * ntok;
    GALLEON_LAUNCH(blocks_for(total, kWarps), 32 * kWarps, 0, st, quantize_a8k_kernel<Values>)(
        x, n, total, static_cast<kern::A8KBlock*>(dst));
  }
  check_launch("activation quantization kernel");
}
// x (ntok rows of n floats) -> dst.
void run_quantize(GgmlType t, const float* x, int64_t n, int64_t ntok, void* dst,
                  cudaStream_t st) {
  run_quantize_values(t, PlainValues{x}, n, ntok, dst, st);
}

}  // namespace
}  // namespace galleon::cuda
