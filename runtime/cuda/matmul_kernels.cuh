// The matmul kernels: the one-lane kernels (decoding, and prompts without the tiles), the
// tensor-core tiles of the quantized types and their variants, the plain types' shared-memory
// tiles (docs/cuda.md, "Design").
//
// Part of runtime/cuda/session.cu's translation unit (its definitions are in an unnamed
// namespace): only session.cu includes it.
#pragma once

#include <cstdint>

#include "runtime/cuda/canon_device.h"
#include "runtime/cuda/handles.cuh"
#include "runtime/cuda/mma_tile.h"
#include "runtime/cuda/plain_tile.h"
#include "runtime/cuda/tile_common.h"
#include "runtime/quant.h"

namespace galleon::cuda {
namespace {

constexpr int kMatmulWarps = 8;  // warps per block of the matmul kernels

// y[t * y_stride + r] = canonical dot of weight row r and activation row t: one warp per tile
// of R rows and K tokens (cdev::lane_dots_tile), then the warp tree per (row, token).
template <GgmlType T, int R, int K>
__global__ void matmul_kernel(const uint8_t* W, size_t w_row_bytes, int64_t n, int64_t n_out,
                              const uint8_t* act, size_t act_row_bytes, int64_t ntok, float* y,
                              int64_t y_stride) {
  const int lane = int(threadIdx.x) & 31;
  const int64_t r0 = (int64_t(blockIdx.x) * kMatmulWarps + int64_t(threadIdx.x >> 5)) * R;
  if (r0 >= n_out) return;  // whole warps leave together
  const int nr = int(n_out - r0 < R ? n_out - r0 : R);  // warp-uniform
  const uint8_t* wrows = W + size_t(r0) * w_row_bytes;
  for (int64_t t0 = int64_t(blockIdx.y) * K; t0 < ntok; t0 += int64_t(gridDim.y) * K) {
    const int nt = int(ntok - t0 < K ? ntok - t0 : K);  // warp-uniform
    float v[R][K];
    cdev::lane_dots_tile<T, R, K>(n, wrows, w_row_bytes, nr, act + size_t(t0) * act_row_bytes,
                                  act_row_bytes, nt, lane, v);
#pragma unroll
    for (int r = 0; r < R; ++r)
#pragma unroll
      for (int k = 0; k < K; ++k) {
        if (r >= nr || k >= nt) continue;
        const float sum = cdev::warp_tree(v[r][k]);
        if (lane == 0) y[(t0 + k) * y_stride + r0 + r] = cdev::canonical_nan(sum);
      }
  }
}

// The 256-element types (Q4_K, Q5_K, Q6_K): the 8 threads of each quarter of the warp split
// one block's integer sums (cdev::kpart, exact in any grouping) and sum them with integer
// shuffles; the warp's 4 blocks then go to their canonical lanes (block i to lane i mod 32),
// each lane adding its blocks in increasing order, as cdev::lane_dots does.
template <GgmlType T, int K>
__global__ void matmul_k_kernel(const uint8_t* W, size_t w_row_bytes, int64_t n, int64_t n_out,
                                const uint8_t* act, size_t act_row_bytes, int64_t ntok, float* y,
                                int64_t y_stride) {
  constexpr int kBytes = cdev::TypeInfo<T>::bytes;
  const int lane = int(threadIdx.x) & 31, part = lane & 7, quarter = lane >> 3;
  const int64_t r = int64_t(blockIdx.x) * kMatmulWarps + int64_t(threadIdx.x >> 5);
  if (r >= n_out) return;  // whole warps leave together
  const uint8_t* wrow = W + size_t(r) * w_row_bytes;
  const int64_t count = n / 256;
  for (int64_t t0 = int64_t(blockIdx.y) * K; t0 < ntok;
       t0 += int64_t(gridDim.y) * K) {
    const int nt = int(ntok - t0 < K ? ntok - t0 : K);  // warp-uniform
    const uint8_t* a0 = act + size_t(t0) * act_row_bytes;
    float v[K];
#pragma unroll
    for (int k = 0; k < K; ++k) v[k] = 0.0f;
    for (int64_t i0 = 0; i0 < count; i0 += 4) {
      const int64_t i = i0 + quarter;  // this thread's block
      const bool have = i < count;
      const uint8_t* wb = wrow + size_t(i) * kBytes;
      float c[K];
#pragma unroll
      for (int k = 0; k < K; ++k) {
        const kern::A8KBlock* ab =
            reinterpret_cast<const kern::A8KBlock*>(a0 + size_t(k) * act_row_bytes) + i;
        cdev::KSums s;
        if (have && k < nt) s = cdev::kpart<T>(wb, *ab, part);
        for (int o = 1; o < 8; o <<= 1) {
          s.sumi += __shfl_xor_sync(0xffffffffu, s.sumi, o);
          s.summ += __shfl_xor_sync(0xffffffffu, s.summ, o);
        }
        c[k] = have && k < nt ? cdev::kfinish<T>(wb, *ab, s) : 0.0f;
      }
      // Lane L takes block i0 + q when L == (i0 + q) mod 32, from the quarter q that made it.
      const int q = (lane - int(i0 & 31)) & 31;
#pragma unroll
      for (int k = 0; k < K; ++k) {
        const float got = __shfl_sync(0xffffffffu, c[k], 8 * (q & 3));
        if (q < 4 && i0 + q < count && k < nt) v[k] = v[k] + got;
      }
    }
#pragma unroll
    for (int k = 0; k < K; ++k) {
      if (k >= nt) break;
      const float sum = cdev::warp_tree(v[k]);
      if (lane == 0) y[(t0 + k) * y_stride + r] = cdev::canonical_nan(sum);
    }
  }
}

// The quantized types' prompt matmul on int8 tensor cores (cdev::mma::Tile): the warps of a
// block share 16 weight rows (read from L1 after the first warp) and take tiles of 8 * NT
// tokens in turn. Shared: the tile's binary counter in shared memory (cdev::mma::SharedPending),
// not in registers, so that kMinBlocks blocks fit an SM.
constexpr int kMmaWarps = 4;

// Result e of token group j of a warp tile to y, unless its row or token is past the end.
__device__ void store_mma_result(const cdev::mma::Args& p, int64_t r0, int64_t t0, int lane, int j,
                                 int e, float v, const cdev::GemmOut& out) {
  const int64_t r = r0 + cdev::mma::result_row(lane, e);
  const int64_t t = t0 + cdev::mma::result_token(lane, j, e);
  if (r < p.n_out && t < p.ntok) *out.at(r, t) = cdev::canonical_nan(v);
}
// A warp tile's results (cdev::mma::Tile::run) to y.
template <int NT>
__device__ void store_mma_tile(const cdev::mma::Args& p, int64_t r0, int64_t t0, int lane,
                               const float (&res)[NT][4], const cdev::GemmOut& out) {
#pragma unroll
  for (int j = 0; j < NT; ++j)
#pragma unroll
    for (int e = 0; e < 4; ++e) store_mma_result(p, r0, t0, lane, j, e, res[j][e], out);
}

template <GgmlType T, int NT, bool Shared, int kMinBlocks>
__global__ void __launch_bounds__(32 * kMmaWarps, kMinBlocks)
    matmul_mma_kernel(cdev::mma::Args p, cdev::GemmOut y) {
  using Pending = cdev::mma::SharedPending<NT>;
  __shared__ float pending_store[Shared ? kMmaWarps * Pending::kFloats : 1];
  const int lane = int(threadIdx.x) & 31, warp = int(threadIdx.x) >> 5;
  const int64_t r0 = int64_t(blockIdx.x) * cdev::mma::kRows;
  constexpr int kTokens = 8 * NT;
  for (int64_t t0 = (int64_t(blockIdx.y) * kMmaWarps + warp) * kTokens; t0 < p.ntok;
       t0 += int64_t(gridDim.y) * kMmaWarps * kTokens) {  // warp-uniform
    float out[NT][4];
    const cdev::mma::Tile<T, NT> tile(p, r0, t0, lane);
    if constexpr (Shared) {
      Pending pending{pending_store + warp * Pending::kFloats, lane, {}};
      tile.run(out, pending);
    } else {
      tile.run(out);
    }
    store_mma_tile(p, r0, t0, lane, out, y);
  }
}

// Variant t4 (the default; GALLEON_CUDA_MMA): the 4 warps of a block take 4 x 16
// rows of the same 32 tokens, whose activation block i the block stages in shared memory once
// for its 4 warps (StagedActs), fetching the next block's words while this one is used; the
// counter keeps level 0 in registers and the others in shared memory (41 KiB in all).
// Token k's block lies at word kStride * k of the stage (kStride: the block's words, or more
// against bank conflicts: kPaddedStride). kBlocks > 1 (variants v4 and w4): the next kBlocks
// blocks the tile visits (cdev::mma::next_block's order, across leaves) are staged at once,
// slot s at word s * kTokens * kStride, so that the block's threads meet at two barriers per
// kBlocks blocks instead of per block, with kBlocks blocks' loads in flight.
template <class Block, int kTokens, int kThreads, int kStride = int(sizeof(Block) / 4),
          int kBlocks = 1>
class StagedActs {
 public:
  static constexpr bool kStagesWeights = false;
  static constexpr int kStageWords = kBlocks * kTokens * kStride;
  __device__ StagedActs(const cdev::GemmArgs& p, int64_t t0, uint32_t* stage, int tid)
      : p_(p), t0_(t0), stage_(stage), tid_(tid) {
    if constexpr (kBlocks > 1)  // slots past the tile's last block are stored, never read
#pragma unroll
      for (int s = 0; s < kBlocks; ++s)
#pragma unroll
        for (int r = 0; r < kPerThread; ++r) words_[s][r] = 0;
    fetch_group(0);  // the first blocks of every tile (cdev::mma::next_block's order)
  }
  // Block i (the one after the block before, in the tile's order) is used next; `next` comes
  // after it (-1: none).
  __device__ void begin(int64_t i, int64_t next) {
    if (++slot_ < kBlocks) return;  // block i is in the group staged before
    __syncthreads();  // every warp is done with the previous group (or tile)
    store();
    __syncthreads();
    slot_ = 0;
    if constexpr (kBlocks == 1) {
      fetch_group(next);
    } else {
      int64_t last = i;  // the group's last block, then the one after it
      for (int s = 1; s < kBlocks && last >= 0; ++s) last = following(last);
      if (last >= 0) fetch_group(following(last));
    }
  }
  __device__ const Block& at(int64_t k, int64_t /*i*/) const {
    const int slot = kBlocks == 1 ? 0 : slot_;
    return *reinterpret_cast<const Block*>(stage_ + kStride * (kTokens * slot + k));
  }

 private:
  static constexpr int kWords = int(sizeof(Block) / 4), kTotal = kTokens * kWords;
  static constexpr int kPerThread = (kTotal + kThreads - 1) / kThreads;
  static_assert(sizeof(Block) % 4 == 0 && alignof(Block) <= 4 && kStride >= kWords);
  static constexpr int64_t kElems = sizeof(Block) == sizeof(kern::A8Block) ? 32 : 256;
  static_assert(sizeof(Block) == sizeof(kern::A8Block) || sizeof(Block) == sizeof(kern::A8KBlock));
  // The block the tile visits after block b (-1: none).
  __device__ int64_t following(int64_t b) const {
    return cdev::mma::next_block(cdev::bitrev5(int(b % 32)), b, p_.n / kElems);
  }
  // Blocks b, following(b), ... (kBlocks of them, those before the end) into the slots' words.
  __device__ void fetch_group(int64_t b) {
#pragma unroll
    for (int s = 0; s < kBlocks; ++s) {
      if (b < 0) break;
      fetch(b, words_[s]);
      if (s + 1 < kBlocks) b = following(b);
    }
  }
  __device__ void fetch(int64_t i, uint32_t (&words)[kPerThread]) const {
#pragma unroll
    for (int r = 0; r < kPerThread; ++r) {
      const int w = tid_ + r * kThreads;
      if (w >= kTotal) break;
      const int k = w / kWords;
      int64_t t = t0_ + k;
      if (t > p_.ntok - 1) t = p_.ntok - 1;
      const auto* block = p_.act + size_t(t) * p_.arb + size_t(i) * sizeof(Block);
      words[r] = reinterpret_cast<const uint32_t*>(block)[w - k * kWords];
    }
  }
  __device__ void store() const {
#pragma unroll
    for (int s = 0; s < kBlocks; ++s)
#pragma unroll
      for (int r = 0; r < kPerThread; ++r) {
        const int w = tid_ + r * kThreads;
        if (w >= kTotal) break;
        const int k = w / kWords;
        stage_[kStride * (kTokens * s + k) + (w - k * kWords)] = words_[s][r];
      }
  }
  cdev::GemmArgs p_;
  int64_t t0_;
  uint32_t* stage_;
  int tid_;
  int slot_ = kBlocks - 1;  // the slot of the block in use: the first begin() stores
  uint32_t words_[kBlocks][kPerThread];
};

constexpr int kStagedTokens = 32;  // 4 token groups

// The packed copy of raw's rows (cdev::mma::pack_lane): a thread per lane of each record.
template <GgmlType T>
__global__ void pack_weights_kernel(cdev::GemmArgs raw, uint32_t* pq, uint32_t* ps) {
  const int64_t nb = raw.n / 32, records = cdev::mma::pack_groups(raw.n_out) * nb;
  GALLEON_GRID_STRIDE(k, records * 32) {
    const int64_t record = k / 32;
    cdev::mma::pack_lane<T>(raw, record / nb, record % nb, int(k % 32), pq, ps);
  }
}

// A stride of s = 4 mod 8 words puts the B fragment words a warp reads at once (word t of
// tokens 8j + g, g < 8, t < 4: word s g + t) on 32 different banks: s = 8k + 4 gives s g =
// 4 g (2k + 1) mod 32, 8 different multiples of 4. The blocks' own 9 or 73 words (A8, A8K)
// put tokens g = 0 and 7 on the same banks.
template <class Block>
constexpr int kPaddedStride = int(sizeof(Block) / 4) + (12 - int(sizeof(Block) / 4) % 8) % 8;

// kPacked (variant u4): the weights of the 32-element types from their packed copy (p.pq,
// p.ps; cdev::mma::Tile's kPacked), and the staged activations at kPaddedStride. kBlocks:
// activation blocks staged at once (StagedActs). The 256-element types at 3 blocks per SM (at
// most 168 registers: ptxas 165-168, no spills; unbounded they took up to 196 with the
// sub-blocks' loads ahead), the others at 2.
template <GgmlType T, bool kPacked = false, int kBlocks = 1>
__global__ void __launch_bounds__(32 * kMmaWarps, cdev::TypeInfo<T>::elems == 256 ? 3 : 2)
    matmul_mma_staged_kernel(cdev::mma::Args p, cdev::GemmOut y) {
  using Block = cdev::mma::ActBlock<T>;
  constexpr int kStride = kPacked ? kPaddedStride<Block> : int(sizeof(Block) / 4);
  using Acts = StagedActs<Block, kStagedTokens, 32 * kMmaWarps, kStride, kBlocks>;
  using Pending = cdev::mma::SharedPending<4, 1>;
  __shared__ float pending_store[kMmaWarps * Pending::kFloats];
  __shared__ uint32_t stage[Acts::kStageWords];
  const int tid = int(threadIdx.x), lane = tid & 31, warp = tid >> 5;
  const int64_t r0 = (int64_t(blockIdx.x) * kMmaWarps + warp) * cdev::mma::kRows;
  for (int64_t t0 = int64_t(blockIdx.y) * kStagedTokens; t0 < p.ntok;
       t0 += int64_t(gridDim.y) * kStagedTokens) {  // block-uniform
    float out[4][4];
    const cdev::mma::Tile<T, 4, Acts, false, kPacked && cdev::mma::kPacks<T>> tile(
        p, r0, lane, Acts(p, t0, stage, tid));
    Pending pending{pending_store + warp * Pending::kFloats, lane, {}};
    tile.run(out, pending);
    store_mma_tile(p, r0, t0, lane, out, y);
  }
}

// cp.async (sm_80 and later): kBytes (4, 8 or 16, both addresses aligned to it) from global to
// shared memory, copied by the GPU without passing through registers, of which the first
// src_bytes are read and the rest written as zeros; async_commit closes the thread's group of
// copies, async_wait<N> waits until at most its N newest groups are pending. Only the issuing
// thread may rely on its copies after its wait; the others after a barrier that follows it.
// (The host runtime makes a group's copies when their thread waits for it:
// tests/cuda_host/cuda_runtime.h.) Before sm_80, a plain copy.
// (kFill: src_bytes may be less than kBytes.)
template <int kBytes, bool kFill = false>
__device__ __forceinline__ void async_copy(void* shared_dst, const void* global_src,
                                           unsigned src_bytes = kBytes) {
  static_assert(kBytes == 4 || kBytes == 8 || kBytes == 16);
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  const unsigned dst = unsigned(__cvta_generic_to_shared(shared_dst));
  if constexpr (kFill && kBytes == 16)
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(dst), "l"(global_src),
                 "r"(src_bytes)
                 : "memory");
  else if constexpr (kFill)
    asm volatile("cp.async.ca.shared.global [%0], [%1], %2, %3;" ::"r"(dst), "l"(global_src),
                 "n"(kBytes), "r"(src_bytes)
                 : "memory");
  else if constexpr (kBytes == 16)
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(dst), "l"(global_src)
                 : "memory");
  else
    asm volatile("cp.async.ca.shared.global [%0], [%1], %2;" ::"r"(dst), "l"(global_src),
                 "n"(kBytes)
                 : "memory");
#elif defined(__CUDA_ARCH__)
  const unsigned char* from = static_cast<const unsigned char*>(global_src);
  unsigned char* to = static_cast<unsigned char*>(shared_dst);
  for (unsigned b = 0; b < unsigned(kBytes); ++b) to[b] = b < src_bytes ? from[b] : 0;
#elif defined(GALLEON_CUDA_HOST)
  ::cuda_host::async_copy(shared_dst, global_src, kBytes, src_bytes);
#endif
}
__device__ __forceinline__ void async_commit() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("cp.async.commit_group;" ::: "memory");
#elif defined(GALLEON_CUDA_HOST)
  ::cuda_host::async_commit();
#endif
}
template <int N>
__device__ __forceinline__ void async_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("cp.async.wait_group %0;" ::"n"(N) : "memory");
#elif defined(GALLEON_CUDA_HOST)
  ::cuda_host::async_wait(N);
#endif
}

// The ring of kStages slots the pipelined sources share (PipelinedBlocks, PipelinedKBlocks): the
// blocks a tile visits (cdev::mma::next_block's order), copied kStages - 1 ahead of the block in
// use, a group of cp.async copies per slot. Derived::copy(b, slot) issues this thread's copies
// of block b into slot `slot`; Derived::kElems is the elements per block.
template <class Derived, int kStages>
class BlockRing {
 protected:
  // Before the first block of a tile (every thread of the block).
  __device__ void start() {
    __syncthreads();  // the tile before is done with every slot
#pragma unroll
    for (int s = 0; s + 1 < kStages; ++s) issue();
  }
  // Block i (the one after the block before, in the tile's order) is used next.
  __device__ void advance(int64_t i) {
    async_wait<kStages - 2>();  // this thread's copies of block i are done
    __syncthreads();  // and every thread's; all are done with the block before's slot
    issue();          // into that slot
    slot_ = int(used_ % kStages);
    ++used_;
#if !defined(__CUDA_ARCH__)
    if (slot_block_[slot_] != i) throw std::logic_error("BlockRing: blocks out of order");
#else
    (void)i;
#endif
  }
  int slot_ = 0;  // of the block in use

 private:
  // Block next_'s copies into slot issued_ % kStages (none after the last block), as a group.
  __device__ void issue() {
    const int slot = int(issued_ % kStages);
    if (next_ >= 0) {
      Derived& d = static_cast<Derived&>(*this);
      d.copy(next_, slot);
#if !defined(__CUDA_ARCH__)
      slot_block_[slot] = next_;
#endif
      const int64_t count = d.p_.n / Derived::kElems;
      next_ = cdev::mma::next_block(cdev::bitrev5(int(next_ % 32)), next_, count);
    }
    async_commit();  // a group per slot, empty past the last block: async_wait counts them
    ++issued_;
  }
  int64_t next_ = 0;               // the next block to copy (-1: none)
  int64_t issued_ = 0, used_ = 0;  // groups issued, blocks begun
#if !defined(__CUDA_ARCH__)
  int64_t slot_block_[kStages] = {};  // the block each slot holds (CPU check)
#endif
};

// Variant x4 (GALLEON_CUDA_MMA=x4, and y4's for them; the 32-element types, from their packed
// weights): the blocks
// a tile visits (cdev::mma::next_block's order) flow through a ring of kStages slots in shared
// memory, filled by cp.async kStages - 1 blocks ahead of the block in use, so that several
// blocks' loads are in flight without holding registers. A slot holds a block's activations of
// the tile's 32 tokens (kPaddedStride words apart; the block's threads share the copy) and,
// per warp, the packed record of the block for its 16 rows (cdev::mma::pack_lane's layout:
// each lane copies the quant words it reads itself, the first lanes the scale words). The
// block's threads meet at one barrier per block (t4: two), after which the slot of the block
// before is free for the next copy.
template <GgmlType T, int kStages>
class PipelinedBlocks : public BlockRing<PipelinedBlocks<T, kStages>, kStages> {
  using Ring = BlockRing<PipelinedBlocks<T, kStages>, kStages>;
  friend Ring;

 public:
  using Block = cdev::mma::ActBlock<T>;
  using Format = cdev::mma::PackFormat<T>;
  static_assert(cdev::mma::kPacks<T> && kStages >= 2);
  static constexpr bool kStagesWeights = true;
  static constexpr int64_t kElems = 32;
  static constexpr int kStride = kPaddedStride<Block>;
  static constexpr int kActWords = kStages * kStagedTokens * kStride;  // per block
  static constexpr int kQuantWords = 32 * Format::kWords;
  static constexpr int kRecordWords = kQuantWords + Format::kScaleWords;  // 16-byte multiple
  static constexpr int kWarpWords = kStages * kRecordWords;               // per warp
  static_assert(kRecordWords % 4 == 0 && Format::kScaleWords % 4 == 0);

  // Before the first block of the tile at token t0 (rows r0 .. r0 + 15 for this warp): acts
  // and weights are the block's ring and this warp's. Every thread of the block constructs one.
  __device__ PipelinedBlocks(const cdev::GemmArgs& p, int64_t t0, int64_t r0, uint32_t* acts,
                             uint32_t* weights, int tid)
      : p_(p), r0_(r0), acts_(acts), weights_(weights), lane_(tid & 31) {
#pragma unroll
    for (int r = 0; r < kPerThread; ++r) {
      const int w = tid + r * kThreadsPerBlock, k = w / kWords;
      int64_t t = t0 + k;
      if (t > p.ntok - 1) t = p.ntok - 1;
      src_[r] = w < kTotal ? p.act + size_t(t) * p.arb + 4 * size_t(w - k * kWords) : nullptr;
      dst_[r] = kStride * k + (w - k * kWords);
    }
    Ring::start();
  }
  // Block i (the one after the block before, in the tile's order) is used next.
  __device__ void begin(int64_t i, int64_t /*next*/) { Ring::advance(i); }
  __device__ const Block& at(int64_t k, int64_t /*i*/) const {
    return *reinterpret_cast<const Block*>(acts_ + kStride * (kStagedTokens * this->slot_ + k));
  }
  __device__ const uint32_t* quants(int64_t /*i*/) const {
    return weights_ + kRecordWords * this->slot_;
  }
  __device__ const uint32_t* scales(int64_t /*i*/) const {
    return weights_ + kRecordWords * this->slot_ + kQuantWords;
  }

 private:
  static constexpr int kThreadsPerBlock = 32 * kMmaWarps;
  static constexpr int kWords = int(sizeof(Block) / 4), kTotal = kStagedTokens * kWords;
  static constexpr int kPerThread = (kTotal + kThreadsPerBlock - 1) / kThreadsPerBlock;
  // This thread's copies of block b into slot `slot` (BlockRing).
  __device__ void copy(int64_t b, int slot) {
    const size_t bytes = size_t(b) * sizeof(Block);
#pragma unroll
    for (int r = 0; r < kPerThread; ++r)
      if (src_[r]) async_copy<4>(acts_ + kStagedTokens * kStride * slot + dst_[r], src_[r] + bytes);
    const size_t rec = cdev::mma::packed_record(p_, r0_, b);
    uint32_t* to = weights_ + kRecordWords * slot;
    async_copy<4 * Format::kWords>(to + Format::kWords * lane_,
                                   p_.pq + (rec * 32 + size_t(lane_)) * Format::kWords);
    if (4 * lane_ < Format::kScaleWords)
      async_copy<16>(to + kQuantWords + 4 * lane_, p_.ps + rec * Format::kScaleWords + 4 * lane_);
  }

  cdev::GemmArgs p_;
  int64_t r0_;
  uint32_t* acts_;
  uint32_t* weights_;
  int lane_;
  const uint8_t* src_[kPerThread];  // this thread's activation words of block 0 (null: none)
  int dst_[kPerThread];             // and where they go in a slot
};

constexpr int kPipeStages = 4;  // x4's slots: 3 blocks in flight, 43-47 KiB with the counter

template <GgmlType T, int kStages>
__global__ void __launch_bounds__(32 * kMmaWarps, 2)
    matmul_mma_pipelined_kernel(cdev::mma::Args p, cdev::GemmOut y) {
  using Pipe = PipelinedBlocks<T, kStages>;
  using Pending = cdev::mma::SharedPending<4, 1>;
  struct alignas(16) Rings {  // 16-byte copies and loads of the weight records
    uint32_t weights[kMmaWarps * Pipe::kWarpWords];
    uint32_t acts[Pipe::kActWords];
  };
  __shared__ float pending_store[kMmaWarps * Pending::kFloats];
  __shared__ Rings rings;
  static_assert(sizeof(pending_store) + sizeof(Rings) <= 48 * 1024, "static shared memory");
  const int tid = int(threadIdx.x), lane = tid & 31, warp = tid >> 5;
  const int64_t r0 = (int64_t(blockIdx.x) * kMmaWarps + warp) * cdev::mma::kRows;
  for (int64_t t0 = int64_t(blockIdx.y) * kStagedTokens; t0 < p.ntok;
       t0 += int64_t(gridDim.y) * kStagedTokens) {  // block-uniform
    float out[4][4];
    const cdev::mma::Tile<T, 4, Pipe, false, true> tile(
        p, r0, lane, Pipe(p, t0, r0, rings.acts, rings.weights + warp * Pipe::kWarpWords, tid));
    Pending pending{pending_store + warp * Pending::kFloats, lane, {}};
    tile.run(out, pending);
    store_mma_tile(p, r0, t0, lane, out, y);
  }
}

// Variant y4 (the default since the H200 timed it, 2026-11-29: 1.1B Q4_K prompts 17481 ->
// 21880 tok/s against x4; GALLEON_CUDA_MMA): x4's ring for
// the 256-element types whose blocks are whole 4-byte words (Q2_K, Q4_K, Q5_K, IQ4_XS), from
// their rows as stored (they have no packed copy): a slot holds the block's activations of the
// tile's 32 tokens (kPaddedStride words apart) and, per warp, block i of each of its 16 rows
// (kBytes apart: 16-byte aligned for Q4_K and Q5_K, whose 36- and 44-word strides put the words
// a warp reads at once, k-group t of rows g, on 32 banks), copied in kKCopy-byte pieces by the
// warp's lanes; the tile reads its weights there (Tile's wblock). A block of 256 elements gives
// each warp 32 or 64 mma per token group set, so kKStages slots (one block ahead) hide the
// copies; with the counter's 32 KiB the kernel takes 68-72 KiB of dynamic shared memory, 3
// blocks per SM on an H100/H200 (t4's K-quant kernel: 3, from 41 KiB of static memory).
// The other 256-element types (Q3_K, Q6_K: 2-byte aligned blocks) take x4's kernel (t4 with
// the padded stage). The block order and the slots are PipelinedBlocks' (above).
template <GgmlType T>
constexpr int kKCopy = cdev::TypeInfo<T>::bytes % 16 == 0  ? 16
                       : cdev::TypeInfo<T>::bytes % 8 == 0 ? 8
                       : cdev::TypeInfo<T>::bytes % 4 == 0 ? 4
                                                           : 0;
template <GgmlType T>
constexpr bool kKPipes =
    cdev::mma::kHasPath<T> && cdev::TypeInfo<T>::elems == 256 && kKCopy<T> > 0;
constexpr int kKStages = 2;

template <GgmlType T, int kStages>
class PipelinedKBlocks : public BlockRing<PipelinedKBlocks<T, kStages>, kStages> {
  using Ring = BlockRing<PipelinedKBlocks<T, kStages>, kStages>;
  friend Ring;

 public:
  using Block = cdev::mma::ActBlock<T>;
  static_assert(kKPipes<T> && kStages >= 2);
  static constexpr bool kStagesWeights = true;
  static constexpr int64_t kElems = 256;
  static constexpr int kBytes = cdev::TypeInfo<T>::bytes;
  static constexpr int kStride = kPaddedStride<Block>;
  static constexpr int kActWords = kStages * kStagedTokens * kStride;       // per block
  static constexpr int kRowsWords = cdev::mma::kRows * kBytes / 4;           // a warp's slot
  static constexpr int kWarpWords = kStages * kRowsWords;                    // per warp
  static_assert(kRowsWords % 4 == 0, "16-byte aligned weight slots");

  // Before the first block of the tile at token t0 (rows r0 .. r0 + 15 for this warp): acts
  // and weights are the block's ring and this warp's. Every thread of the block constructs one.
  __device__ PipelinedKBlocks(const cdev::GemmArgs& p, int64_t t0, int64_t r0, uint32_t* acts,
                              uint32_t* weights, int tid)
      : p_(p), t0_(t0), r0_(r0), acts_(acts), weights_(weights), tid_(tid) {
    Ring::start();
  }
  // Block i (the one after the block before, in the tile's order) is used next.
  __device__ void begin(int64_t i, int64_t /*next*/) { Ring::advance(i); }
  __device__ const Block& at(int64_t k, int64_t /*i*/) const {
    return *reinterpret_cast<const Block*>(acts_ + kStride * (kStagedTokens * this->slot_ + k));
  }
  // The block in use of this warp's row r0 + row (0 .. 15).
  __device__ const uint8_t* weight_block(int row) const {
    return reinterpret_cast<const uint8_t*>(weights_ + kRowsWords * this->slot_) + row * kBytes;
  }

 private:
  static constexpr int kThreadsPerBlock = 32 * kMmaWarps;
  static constexpr int kWords = int(sizeof(Block) / 4), kTotal = kStagedTokens * kWords;
  static constexpr int kPerThread = (kTotal + kThreadsPerBlock - 1) / kThreadsPerBlock;
  static constexpr int kPieces = cdev::mma::kRows * kBytes / kKCopy<T>;  // per warp and block
  // This thread's copies of block b into slot `slot` (BlockRing).
  __device__ void copy(int64_t b, int slot) {
    uint32_t* to = acts_ + kStagedTokens * kStride * slot;
#pragma unroll
    for (int r = 0; r < kPerThread; ++r) {
      const int w = tid_ + r * kThreadsPerBlock;
      if (w >= kTotal) break;
      const int k = w / kWords, word = w - k * kWords;
      int64_t t = t0_ + k;
      if (t > p_.ntok - 1) t = p_.ntok - 1;
      async_copy<4>(to + kStride * k + word,
                    p_.act + size_t(t) * p_.arb + size_t(b) * sizeof(Block) + 4 * word);
    }
    uint8_t* wto = reinterpret_cast<uint8_t*>(weights_ + kRowsWords * slot);
    const int lane = tid_ & 31;
#pragma unroll
    for (int r = 0; r < (kPieces + 31) / 32; ++r) {
      const int piece = lane + 32 * r;
      if (piece >= kPieces) break;
      const int row = piece * kKCopy<T> / kBytes, off = piece * kKCopy<T> - row * kBytes;
      int64_t rr = r0_ + row;
      if (rr > p_.n_out - 1) rr = p_.n_out - 1;
      async_copy<kKCopy<T>>(wto + piece * kKCopy<T>,
                            p_.w + size_t(rr) * p_.wrb + size_t(b) * kBytes + off);
    }
  }

  cdev::GemmArgs p_;
  int64_t t0_, r0_;
  uint32_t* acts_;
  uint32_t* weights_;
  int tid_;
};

// y4's dynamic shared memory: the counter's levels, the warps' weight rings, the activations.
template <GgmlType T>
constexpr size_t kKPipeShared =
    (size_t(kMmaWarps) * cdev::mma::SharedPending<4, 1>::kFloats +
     size_t(kMmaWarps) * PipelinedKBlocks<T, kKStages>::kWarpWords +
     size_t(PipelinedKBlocks<T, kKStages>::kActWords)) * 4;

template <GgmlType T, int kStages>
__global__ void __launch_bounds__(32 * kMmaWarps, 3)
    matmul_mma_kpipe_kernel(cdev::mma::Args p, cdev::GemmOut y) {
  using Pipe = PipelinedKBlocks<T, kStages>;
  using Pending = cdev::mma::SharedPending<4, 1>;
  GALLEON_DYNAMIC_SHARED(uint32_t, kpipe_shared);  // 16-byte aligned
  uint32_t* weights = kpipe_shared;  // the warps' rings first
  uint32_t* acts = weights + kMmaWarps * Pipe::kWarpWords;
  float* pending_store = reinterpret_cast<float*>(acts + Pipe::kActWords);
  const int tid = int(threadIdx.x), lane = tid & 31, warp = tid >> 5;
  const int64_t r0 = (int64_t(blockIdx.x) * kMmaWarps + warp) * cdev::mma::kRows;
  for (int64_t t0 = int64_t(blockIdx.y) * kStagedTokens; t0 < p.ntok;
       t0 += int64_t(gridDim.y) * kStagedTokens) {  // block-uniform
    float out[4][4];
    const cdev::mma::Tile<T, 4, Pipe> tile(
        p, r0, lane, Pipe(p, t0, r0, acts, weights + warp * Pipe::kWarpWords, tid));
    Pending pending{pending_store + warp * Pending::kFloats, lane, {}};
    tile.run(out, pending);
    store_mma_tile(p, r0, t0, lane, out, y);
  }
}

// Variants k4 and k8 (GALLEON_CUDA_MMA=k4|k8): the dot products split
// across the S warps of a block. They take the same 16 rows x 8 * NT tokens, warp w the leaves
// w * 32 / S .. (w + 1) * 32 / S - 1 (a subtree of the warp tree, cdev::mma::Tile::run_leaves,
// its counter in shared memory); then the block joins the S subtrees of each result as the
// tree's upper levels (cdev::mma::join_subtrees), each warp some of the results. So a matmul
// has S times the warps of s4, each with 1/S of the blocks of a dot product in turn. Variant
// p4 (GALLEON_CUDA_MMA=p4) is k4 with two blocks of a lane at a time
// (Tile's kPairs: both blocks' loads in flight together; the 32-element types).
template <GgmlType T, int NT, int S, int kMinBlocks, bool kPairs>
__global__ void __launch_bounds__(32 * S, kMinBlocks)
    matmul_mma_split_kernel(cdev::mma::Args p, cdev::GemmOut y) {
  constexpr int kLevels = cdev::mma::kSplitLevels<S>;
  static_assert(kLevels >= 1, "S: 2, 4, 8 or 16 warps");
  using Pending = cdev::mma::SharedPending<NT, 0, kLevels>;
  // A warp's counter; at the end its results, where level 0 was (read by the other warps).
  __shared__ float pending_store[S * Pending::kFloats];
  const int lane = int(threadIdx.x) & 31, warp = int(threadIdx.x) >> 5;
  float* mine = pending_store + warp * Pending::kFloats;
  const int64_t r0 = int64_t(blockIdx.x) * cdev::mma::kRows;
  constexpr int kTokens = 8 * NT;
  for (int64_t t0 = int64_t(blockIdx.y) * kTokens; t0 < p.ntok;
       t0 += int64_t(gridDim.y) * kTokens) {  // block-uniform
    float out[NT][4];
    const cdev::mma::Tile<T, NT, cdev::mma::GlobalActs<cdev::mma::ActBlock<T>>, kPairs> tile(
        p, r0, t0, lane);
    Pending pending{mine, lane, {}};
    tile.template run_leaves<kLevels>(warp * (1 << kLevels), out, pending);
#pragma unroll
    for (int j = 0; j < NT; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) mine[(j * 4 + e) * 32 + lane] = out[j][e];
    __syncthreads();
    for (int c = warp; c < NT * 4; c += S) {  // warp-uniform
      float x[S];
#pragma unroll
      for (int w = 0; w < S; ++w) x[w] = pending_store[w * Pending::kFloats + c * 32 + lane];
      store_mma_result(p, r0, t0, lane, c / 4, c % 4, cdev::mma::join_subtrees<S>(x), y);
    }
    __syncthreads();  // the results are read before the next tile's counter overwrites them
  }
}

// A plain tile's end: each warp's paired tree, then its lanes' finished sums to y (those of
// rows and tokens inside the matrix).
__device__ __forceinline__ void finish_plain_tile(const cdev::GemmArgs& p, int64_t r0, int64_t t0,
                                                  int warp, int lane,
                                                  float (&v)[cdev::plain::kOut],
                                                  const cdev::GemmOut& y) {
  namespace pl = cdev::plain;
  pl::paired_tree(v, lane);
#pragma unroll
  for (int k = 0; k < pl::kOut / 32; ++k) {
    const int o = pl::tree_output(lane, k);
    const int64_t r = r0 + pl::warp_row(warp) + o / pl::kWarpTokens;
    const int64_t t = t0 + pl::warp_token(warp) + o % pl::kWarpTokens;
    if (r < p.n_out && t < p.ntok) *y.at(r, t) = cdev::canonical_nan(v[k]);
  }
}

// The plain types' prompt matmul (cdev::plain): a block stages kChunk elements of kRows
// weight rows and kTokens tokens per round (the next round's pieces are loaded into registers
// while this one is computed); each warp then reduces its kOut dot products with the paired tree.
// kMinBlocks: 2 blocks per SM (the default: at most 128 registers, 28-60 bytes spilled, so that
// one block's barriers and loads overlap the other's arithmetic; 1.1B F16 512-token prompts 25%
// faster on the H200), or 1 (GALLEON_CUDA_PLAIN=b1: 179-181 registers, no spills).
template <GgmlType T, int kMinBlocks>
__global__ void __launch_bounds__(cdev::plain::kThreads, kMinBlocks)
    matmul_plain_kernel(cdev::GemmArgs p, cdev::GemmOut y) {
  namespace pl = cdev::plain;
  __shared__ pl::Stage stage;
  const int tid = int(threadIdx.x), lane = tid & 31, warp = tid >> 5;
  const int64_t r0 = int64_t(blockIdx.x) * pl::kRows;
  const int64_t rounds = (p.n + pl::kChunk - 1) / pl::kChunk;
  for (int64_t t0 = int64_t(blockIdx.y) * pl::kTokens; t0 < p.ntok;
       t0 += int64_t(gridDim.y) * pl::kTokens) {  // block-uniform
    const pl::Stager<T> stager(p, r0, t0, tid);
    typename pl::Stager<T>::Pieces q;
    float v[pl::kOut];
#pragma unroll
    for (int o = 0; o < pl::kOut; ++o) v[o] = 0.0f;
    stager.fetch(0, q);
    for (int64_t c = 0; c < rounds; ++c) {
      __syncthreads();  // every warp is done with the previous round's stage
      stager.store(q, stage);
      __syncthreads();
      if (c + 1 < rounds) stager.fetch(c + 1, q);
      pl::accumulate(stage, warp, lane, v);
    }
    finish_plain_tile(p, r0, t0, warp, lane, v, y);
  }
}

// Round c's pieces of thread tid (as cdev::plain::Stager shares them out) of the tile at rows
// r0 and tokens t0 into s. Rows and tokens are worked out per round rather than kept, which
// leaves the registers to the arithmetic.
template <GgmlType T>
__device__ __forceinline__ void issue_plain_round(const cdev::GemmArgs& p, int64_t r0, int64_t t0,
                                                  int tid, int64_t c,
                                                  cdev::plain::RawStage<T>& s) {
  namespace pl = cdev::plain;
  constexpr int kSize = T == GgmlType::F32 ? 4 : 2;  // bytes of a weight
  constexpr int kW = pl::kWeightPieces / pl::kThreads, kX = pl::kPieces - kW;
  // The bytes of the piece at element e0 of a row inside its n elements (none past the
  // matrix's rows or tokens: `live` false).
  auto inside = [&](bool live, int64_t e0, int size) -> unsigned {
    if (!live || e0 >= p.n) return 0;
    const int64_t left = p.n - e0;
    return unsigned(size * (left < 4 ? left : 4));
  };
#pragma unroll
  for (int j = 0; j < kW + kX; ++j) {
    const bool weight = j < kW;
    const int pc = tid + pl::kThreads * (weight ? j : j - kW);
    const int row = pc / pl::kQuads, quad = pc % pl::kQuads;
    const int64_t e0 = c * pl::kChunk + 4 * quad;
    if (weight) {
      const int64_t r = r0 + row;
      const unsigned bytes = inside(r < p.n_out, e0, kSize);
      async_copy<4 * kSize, true>(&s.w[row][4 * quad],
                                  bytes ? p.w + size_t(r) * p.wrb + size_t(e0) * kSize : p.w,
                                  bytes);
    } else {
      const int64_t t = t0 + row;
      const unsigned bytes = inside(t < p.ntok, e0, 4);
      async_copy<16, true>(&s.x[row][4 * quad],
                           bytes ? p.act + size_t(t) * p.arb + size_t(e0) * 4 : p.act, bytes);
    }
  }
}

// Whether the ring variant can copy p's pieces: the weight rows and the activation rows start
// aligned to a piece's bytes.
template <GgmlType T>
bool plain_ring_fits(const cdev::GemmArgs& p) {
  constexpr size_t w = T == GgmlType::F32 ? 16 : 8;  // a weight piece's bytes
  return reinterpret_cast<uintptr_t>(p.w) % w == 0 && p.wrb % w == 0 &&
         reinterpret_cast<uintptr_t>(p.act) % 16 == 0 && p.arb % 16 == 0;
}

// The ring variant of the plain tiles (GALLEON_CUDA_PLAIN=ring; written without a GPU, not yet
// run on one): the rounds flow through kStages RawStage slots, copied by cp.async
// kStages - 1 rounds ahead of the round computed (the weights as stored, widened when read),
// so that no piece waits in registers for its round and nothing is converted or stored by the
// threads; the block's threads meet at one barrier per round (the default: two). Where a piece
// lies partly past a row's end, its copy reads the bytes inside and writes zeros for the rest
// (cp.async's src-size); rows and tokens past the matrix's are zeros. The same products in the
// same order, so the same bits. For rows and activations aligned to a piece's bytes
// (plain_ring_fits); else the default kernel.
template <GgmlType T, int kStages>
__global__ void __launch_bounds__(cdev::plain::kThreads, 2)
    matmul_plain_ring_kernel(cdev::GemmArgs p, cdev::GemmOut y) {
  namespace pl = cdev::plain;
  __shared__ pl::RawStage<T> ring[kStages];
  static_assert(sizeof(ring) <= 48 * 1024, "static shared memory");
  const int tid = int(threadIdx.x), lane = tid & 31, warp = tid >> 5;
  const int64_t r0 = int64_t(blockIdx.x) * pl::kRows;
  const int64_t rounds = (p.n + pl::kChunk - 1) / pl::kChunk;
  for (int64_t t0 = int64_t(blockIdx.y) * pl::kTokens; t0 < p.ntok;
       t0 += int64_t(gridDim.y) * pl::kTokens) {  // block-uniform
    float v[pl::kOut];
#pragma unroll
    for (int o = 0; o < pl::kOut; ++o) v[o] = 0.0f;
    __syncthreads();  // the tile before is done with every slot
#pragma unroll
    for (int c = 0; c + 1 < kStages; ++c) {
      if (c < rounds) issue_plain_round<T>(p, r0, t0, tid, c, ring[c]);
      async_commit();  // a group per round, empty past the last: async_wait counts them
    }
    for (int64_t c = 0; c < rounds; ++c) {
      async_wait<kStages - 2>();  // this thread's pieces of round c are in
      __syncthreads();  // and every thread's; all are done with round c - 1's slot
      const int64_t ahead = c + kStages - 1;
      if (ahead < rounds) issue_plain_round<T>(p, r0, t0, tid, ahead, ring[ahead % kStages]);
      async_commit();
      pl::accumulate(ring[c % kStages], warp, lane, v);
    }
    finish_plain_tile(p, r0, t0, warp, lane, v, y);
  }
}

}  // namespace
}  // namespace galleon::cuda
