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
#include "runtime/cuda/canon_device.h"
#include "runtime/cuda/cuda_backend.h"
#include "runtime/cuda/cuda_testing.h"
#include "runtime/cuda/forward.h"
#include "runtime/cuda/mma_tile.h"
#include "runtime/cuda/plain_tile.h"
#include "runtime/cuda/steps.h"
#include "runtime/error.h"
#include "runtime/model.h"
#include "runtime/quant.h"

// kernel<<<grid, block, shared_bytes, st>>>(args) is written GALLEON_LAUNCH(grid, block,
// shared_bytes, st, kernel)(args), and a kernel's dynamic shared memory GALLEON_DYNAMIC_SHARED:
// the host runtime of the tests (tests/cuda_host/cuda_runtime.h) defines both its own way.
#if !defined(GALLEON_LAUNCH)
#define GALLEON_LAUNCH(grid, block, shared_bytes, st, ...) \
  __VA_ARGS__<<<grid, block, shared_bytes, st>>>
#define GALLEON_DYNAMIC_SHARED(type, name) extern __shared__ __align__(16) type name[]
#endif

namespace galleon::cuda {
namespace {

// ---------------------------------------------------------------- errors and RAII handles

[[noreturn]] void cuda_fail(cudaError_t e, const char* what) {
  const ErrorKind kind = e == cudaErrorMemoryAllocation ? ErrorKind::Io
                         : (e == cudaErrorNoDevice || e == cudaErrorInsufficientDriver ||
                            e == cudaErrorInvalidDevice || e == cudaErrorInitializationError ||
                            e == cudaErrorSystemDriverMismatch || e == cudaErrorNotSupported ||
                            e == cudaErrorUnsupportedPtxVersion || e == cudaErrorNoKernelImageForDevice ||
                            e == cudaErrorSystemNotReady || e == cudaErrorCompatNotSupportedOnDevice)
                             ? ErrorKind::Unsupported
                             : ErrorKind::Internal;
  fail(kind, std::string("CUDA: ") + what + ": " + cudaGetErrorString(e) + " (" +
                 cudaGetErrorName(e) + ")");
}

void check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) cuda_fail(e, what);
}

// A device allocation, grown on demand (contents are not kept when it grows).
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  ~DeviceBuffer() {
    if (p_) cudaFree(p_);
  }
  void reserve(size_t bytes) {
    if (bytes <= size_) return;
    if (p_) {
      check(cudaDeviceSynchronize(), "cudaDeviceSynchronize");  // work may still use it
      cudaFree(p_);
    }
    p_ = nullptr;
    size_ = 0;
    check(cudaMalloc(&p_, std::max<size_t>(bytes, 256)), "cudaMalloc");
    size_ = bytes;
  }
  void upload(const void* src, size_t bytes) {
    reserve(bytes);
    check(cudaMemcpy(p_, src, bytes, cudaMemcpyHostToDevice), "cudaMemcpy to the GPU");
  }
  template <class T = void>
  T* get() const { return static_cast<T*>(p_); }

 private:
  void* p_ = nullptr;
  size_t size_ = 0;
};

class Stream {
 public:
  // A blocking stream: ordered with the synchronous copies of the legacy default stream.
  Stream() { check(cudaStreamCreate(&s_), "cudaStreamCreate"); }
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;
  ~Stream() { cudaStreamDestroy(s_); }
  cudaStream_t get() const { return s_; }

 private:
  cudaStream_t s_ = nullptr;
};

bool env_flag(const char* name, bool fallback) {
  const char* e = std::getenv(name);
  return e && *e ? std::string(e) != "0" : fallback;
}

// GALLEON_CUDA_SYNC=1 waits for every kernel, so that a failing kernel is the one named.
bool sync_every_kernel() {
  static const bool sync = env_flag("GALLEON_CUDA_SYNC", false);
  return sync;
}

void check_launch(const char* kernel) {
  check(cudaGetLastError(), kernel);
  if (sync_every_kernel()) check(cudaDeviceSynchronize(), kernel);
}

// An instantiated CUDA graph: one decoding step's kernels, replayed with one launch.
class GraphExec {
 public:
  GraphExec() = default;
  GraphExec(const GraphExec&) = delete;
  GraphExec& operator=(const GraphExec&) = delete;
  ~GraphExec() { reset(); }
  void reset() {
    if (exec_) cudaGraphExecDestroy(exec_);
    exec_ = nullptr;
  }
  explicit operator bool() const { return exec_ != nullptr; }
  // Ends the capture on st and instantiates what it recorded.
  void end_capture(cudaStream_t st) {
    reset();
    cudaGraph_t g = nullptr;
    check(cudaStreamEndCapture(st, &g), "cudaStreamEndCapture");
    const cudaError_t e = cudaGraphInstantiate(&exec_, g, 0);
    cudaGraphDestroy(g);
    if (e != cudaSuccess) {
      exec_ = nullptr;
      cuda_fail(e, "cudaGraphInstantiate");
    }
  }
  void launch(cudaStream_t st) { check(cudaGraphLaunch(exec_, st), "cudaGraphLaunch"); }

 private:
  cudaGraphExec_t exec_ = nullptr;
};

unsigned blocks_for(int64_t n, int per_block) {
  return unsigned(std::min<int64_t>((n + per_block - 1) / per_block, 1 << 30));
}
// The grid of a matmul kernel whose blocks take `rows` weight rows and `tokens` tokens per
// round (blocks along y loop over the tokens past 65535 rounds).
dim3 matmul_grid(int64_t n_out, int rows, int64_t ntok, int tokens) {
  return dim3(blocks_for(n_out, rows),
              unsigned(std::min<int64_t>((ntok + tokens - 1) / tokens, 65535)));
}

// ---------------------------------------------------------------- kernels

#define GALLEON_GRID_STRIDE(i, total)                                           \
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < (total); \
       i += int64_t(gridDim.x) * blockDim.x)

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

// Variant x4 (GALLEON_CUDA_MMA=x4; the 32-element types, from their packed weights): the blocks
// a tile visits (cdev::mma::next_block's order) flow through a ring of kStages slots in shared
// memory, filled by cp.async kStages - 1 blocks ahead of the block in use, so that several
// blocks' loads are in flight without holding registers. A slot holds a block's activations of
// the tile's 32 tokens (kPaddedStride words apart; the block's threads share the copy) and,
// per warp, the packed record of the block for its 16 rows (cdev::mma::pack_lane's layout:
// each lane copies the quant words it reads itself, the first lanes the scale words). The
// block's threads meet at one barrier per block (t4: two), after which the slot of the block
// before is free for the next copy.
template <GgmlType T, int kStages>
class PipelinedBlocks {
 public:
  using Block = cdev::mma::ActBlock<T>;
  using Format = cdev::mma::PackFormat<T>;
  static_assert(cdev::mma::kPacks<T> && kStages >= 2);
  static constexpr bool kStagesWeights = true;
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
    __syncthreads();  // the tile before is done with every slot
#pragma unroll
    for (int s = 0; s + 1 < kStages; ++s) issue();
  }
  // Block i (the one after the block before, in the tile's order) is used next.
  __device__ void begin(int64_t i, int64_t /*next*/) {
    async_wait<kStages - 2>();  // this thread's copies of block i are done
    __syncthreads();  // and every thread's; all are done with the block before's slot
    issue();          // into that slot
    slot_ = int(used_ % kStages);
    ++used_;
#if !defined(__CUDA_ARCH__)
    if (slot_block_[slot_] != i) throw std::logic_error("PipelinedBlocks: blocks out of order");
#else
    (void)i;
#endif
  }
  __device__ const Block& at(int64_t k, int64_t /*i*/) const {
    return *reinterpret_cast<const Block*>(acts_ + kStride * (kStagedTokens * slot_ + k));
  }
  __device__ const uint32_t* quants(int64_t /*i*/) const {
    return weights_ + kRecordWords * slot_;
  }
  __device__ const uint32_t* scales(int64_t /*i*/) const {
    return weights_ + kRecordWords * slot_ + kQuantWords;
  }

 private:
  static constexpr int kThreadsPerBlock = 32 * kMmaWarps;
  static constexpr int kWords = int(sizeof(Block) / 4), kTotal = kStagedTokens * kWords;
  static constexpr int kPerThread = (kTotal + kThreadsPerBlock - 1) / kThreadsPerBlock;
  // Block next_'s copies into slot issued_ % kStages (none after the last block), as a group.
  __device__ void issue() {
    const int slot = int(issued_ % kStages);
    if (next_ >= 0) {
      const size_t bytes = size_t(next_) * sizeof(Block);
#pragma unroll
      for (int r = 0; r < kPerThread; ++r)
        if (src_[r]) async_copy<4>(acts_ + kStagedTokens * kStride * slot + dst_[r], src_[r] + bytes);
      const size_t rec = cdev::mma::packed_record(p_, r0_, next_);
      uint32_t* to = weights_ + kRecordWords * slot;
      async_copy<4 * Format::kWords>(to + Format::kWords * lane_,
                                     p_.pq + (rec * 32 + size_t(lane_)) * Format::kWords);
      if (4 * lane_ < Format::kScaleWords)
        async_copy<16>(to + kQuantWords + 4 * lane_, p_.ps + rec * Format::kScaleWords + 4 * lane_);
#if !defined(__CUDA_ARCH__)
      slot_block_[slot] = next_;
#endif
      next_ = cdev::mma::next_block(cdev::bitrev5(int(next_ % 32)), next_, p_.n / 32);
    }
    async_commit();  // a group per slot, empty past the last block: async_wait counts them
    ++issued_;
  }

  cdev::GemmArgs p_;
  int64_t r0_;
  uint32_t* acts_;
  uint32_t* weights_;
  int lane_;
  const uint8_t* src_[kPerThread];  // this thread's activation words of block 0 (null: none)
  int dst_[kPerThread];             // and where they go in a slot
  int64_t next_ = 0;                // the next block to copy (-1: none)
  int64_t issued_ = 0, used_ = 0;   // groups issued, blocks begun
  int slot_ = 0;                    // of the block in use
#if !defined(__CUDA_ARCH__)
  int64_t slot_block_[kStages] = {};  // the block each slot holds (CPU check)
#endif
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

// The largest of the lanes' values (none NaN): the same in any order, except that of +0 and -0
// either may win (the quantization's values are >= 0; attention's maxima allow either).
__device__ inline float warp_max(float m) {
  for (int o = 16; o >= 1; o >>= 1) {
    const float other = __shfl_xor_sync(0xffffffffu, m, o);
    m = other > m ? other : m;
  }
  return m;
}
__device__ inline int warp_sum(int s, int width) {
  for (int o = 1; o < width; o <<= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
  return s;
}

// Activation quantization (docs/arithmetic.md section 4), one warp per block of a token's row:
// amax is a maximum (exact in any order; NaN never compares greater, as in cdev::act_scale),
// each quant depends on its element and the scale alone, and the integer sums are exact.
// A8: lane j quantizes element j.
__global__ void quantize_a8_kernel(const float* x, int64_t n, int64_t total, kern::A8Block* out) {
  const int lane = int(threadIdx.x) & 31;
  const int64_t b = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) >> 5;
  if (b >= total) return;  // whole warps leave together
  const int64_t nb = n / 32;
  const float xv = x[(b / nb) * n + 32 * (b % nb) + lane];
  const float a = fabsf(xv);
  const float amax = warp_max(a > 0.0f ? a : 0.0f);
  const float d = amax / 127.0f;
  const float inv = d == 0.0f ? 0.0f : 1.0f / d;
  const int q = cdev::act_quant(xv, inv);
  out[b].q[lane] = int8_t(q);
  const int sum = warp_sum(q, 32);
  if (lane == 0) {
    out[b].d = d;
    out[b].sum = sum;
  }
}

// A8K: lane l quantizes elements 8l .. 8l + 7; lanes 2g and 2g + 1 make bsums[g].
__global__ void quantize_a8k_kernel(const float* x, int64_t n, int64_t total, kern::A8KBlock* out) {
  const int lane = int(threadIdx.x) & 31;
  const int64_t b = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) >> 5;
  if (b >= total) return;  // whole warps leave together
  const int64_t nb = n / 256;
  const float* src = x + (b / nb) * n + 256 * (b % nb) + 8 * lane;
  float xv[8];
  float m = 0.0f;
#pragma unroll
  for (int j = 0; j < 8; ++j) {
    xv[j] = src[j];
    const float a = fabsf(xv[j]);
    m = a > m ? a : m;
  }
  const float amax = warp_max(m);
  const float d = amax / 127.0f;
  const float inv = d == 0.0f ? 0.0f : 1.0f / d;
  int s = 0;
#pragma unroll
  for (int j = 0; j < 8; ++j) {
    const int q = cdev::act_quant(xv[j], inv);
    out[b].q[8 * lane + j] = int8_t(q);
    s += q;
  }
  s = warp_sum(s, 2);
  if ((lane & 1) == 0) out[b].bsums[lane >> 1] = int16_t(s);
  if (lane == 0) out[b].d = d;
}

constexpr int kNormWarps = 8;

// y = (x * (1 / sqrt(sum_sq(x) / n + eps))) * w for kNormWarps tokens per block: warp w makes
// the canonical sum of squares of token kNormWarps * block + w, then every thread applies the
// scales (a token's row at a time).
__global__ void rms_norm_kernel(const float* x, const float* w, int64_t n, float eps,
                                int64_t ntok, float* y) {
  __shared__ float s_scale[kNormWarps];
  const int warp = int(threadIdx.x) >> 5, lane = int(threadIdx.x) & 31;
  const int64_t t0 = int64_t(blockIdx.x) * kNormWarps;
  const int64_t rows = ntok - t0 < kNormWarps ? ntok - t0 : kNormWarps;
  if (warp < rows) {  // warp-uniform
    const float* xr = x + (t0 + warp) * n;
    const float ss = cdev::warp_tree(cdev::lane_dot_f32(xr, xr, n, lane));
    if (lane == 0) s_scale[warp] = cdev::step::rms_scale(cdev::canonical_nan(ss), n, eps);
  }
  __syncthreads();
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + (t0 + r) * n;
    float* yr = y + (t0 + r) * n;
    const float scale = s_scale[r];
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x)
      yr[i] = cdev::step::rms_apply(xr[i], scale, w[i]);
  }
}

__global__ void add_kernel(float* x, const float* b, int64_t dim, int64_t total, bool broadcast) {
  GALLEON_GRID_STRIDE(i, total) cdev::step::add(x, b, dim, i, broadcast);
}

// The kernels that depend on the position read n_past from GPU memory (CudaExec::pos_).
__global__ void rope_kernel(float* x, int64_t n_heads, int64_t hd, int64_t n_rot, bool neox,
                            int64_t ntok, const int64_t* n_past, const float* cos_t,
                            const float* sin_t) {
  const int64_t past = *n_past;
  GALLEON_GRID_STRIDE(k, ntok * n_heads * (n_rot / 2))
  cdev::step::rope(x, k, n_heads, hd, n_rot, neox, past, cos_t, sin_t);
}

// cache rows n_past .. n_past + ntok - 1 (kv_dim floats each) = src.
__global__ void store_kv_kernel(float* cache, const float* src, const int64_t* n_past,
                                int64_t total, int64_t kv_dim) {
  float* dst = cache + *n_past * kv_dim;
  GALLEON_GRID_STRIDE(i, total) dst[i] = src[i];
}

__global__ void silu_mul_kernel(float* g, const float* u, int64_t total) {
  GALLEON_GRID_STRIDE(i, total) cdev::step::silu_mul(g, u, i);
}

__global__ void expf_kernel(float* x, int64_t total) {  // cuda::testing::map only
  GALLEON_GRID_STRIDE(i, total) x[i] = cdev::expf(x[i]);
}

constexpr int kAttnThreads = cdev::attn::kThreads;
constexpr size_t kAttnShared = 48 * 1024;  // the default dynamic shared memory of a block

// One block per (token, head); the scores e live in shared memory after the lanes when
// `shared_scores`, else in scratch (n_ctx floats per (token, head)). The steps are those of
// runtime/cuda/attention.h (emulated on the CPU by cuda_emu_test):
// 1. s_j = dot_f32(q, k_j) * scale, one warp per j;  2. m = max s_j (each warp's running
// maximum in j order, then the warps' in order: a maximum is the same in any order, NaN never
// replacing it; of +0 and -0 either may win, and e_j is the same for both);  3. e_j =
// expf(s_j - m);  4. the 32 lanes (j mod 32) of e_j * v_j[d] and of e_j, one thread per
// (lane, d);  5. the canonical tree over the lanes in shared memory;  6. o_d = L[0][d] / sum.
__global__ void attention_kernel(const float* q, const float* kc, const float* vc, int64_t n_head,
                                 int64_t group, int64_t hd, int64_t kv_dim, const int64_t* n_past,
                                 int64_t n_ctx, float kq_scale, float* scratch, float* out,
                                 bool shared_scores) {
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
    const float s = cdev::canonical_nan(v) * kq_scale;
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
// apart; row r over positions j < row_n(r) <= n_kv): the scores s_j = dot_f32(q, k_j) * scale,
// 64 K rows at a time staged in ks (coalesced loads), 4 threads per score
// (attn::score_quad_part, then the tree's last two steps by shuffles within the quad), each K
// row's values read once for the N rows; then each row's maximum: per thread, per warp, then
// the warps in order, to s_max. Every thread of the block calls it; s_max is ready on return.
template <int N, class RowN>
__device__ void attn_scores(const float* qs, int64_t q_row, float* ks, const float* k,
                            int64_t kv_dim, int64_t hd, int64_t n_kv, RowN row_n,
                            const cdev::attn::ScoreLayout& scores, float kq_scale,
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
    attn::stage_k_rows(tid, k + j0 * kv_dim, kv_dim, int(hd), int(rows), stride, ks);
    __syncthreads();
    // This thread's elements of its K row, read once for the N rows' scores.
    float kv[attn::kQuadValues] = {};
    if (row < rows) attn::quad_values(ks + row * stride, hd, u, kv);
#pragma unroll
    for (int r = 0; r < N; ++r) {
      float qv[attn::kQuadValues];
      attn::quad_values(qs + r * q_row, hd, u, qv);
      const float part = row < rows ? attn::score_quad_part(qv, kv, hd, u) : 0.0f;
      const float a = part + __shfl_down_sync(0xffffffffu, part, 2);
      const float sum = a + __shfl_down_sync(0xffffffffu, a, 1);
      if (u == 0 && row < rows && j0 + row < row_n(r)) {
        const float sc = cdev::canonical_nan(sum) * kq_scale;
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
                           int64_t n_ctx, float kq_scale, float* scratch, float* out,
                           bool shared_scores, int64_t n_kv_scores, int tree_heads) {
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
                 kq_scale, s_warp_max, s_max);
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
// rows past G * T and those of tokens past the prompt have none), whose scores stay in shared memory
// (lane-major, R "heads"); step 4 by row groups through the binary counter (attn::RowGroupWork),
// each thread o_d of its kRowGroup rows and C columns. Needs hd <= 64 and hd, kv_dim multiples of
// 4; the host picks it only where the scores fit (else attention_tiles_kernel).
template <int G, int T>
__global__ void __launch_bounds__(kAttnThreads, 2)  // 2 blocks per SM: at most 128 registers
    attention_rows_kernel(const float* q, const float* kc, const float* vc, int64_t n_head,
                          int64_t hd, int64_t kv_dim, const int64_t* n_past, int64_t ntok,
                          float kq_scale, float* out, int64_t n_kv_scores) {
  namespace attn = cdev::attn;
  constexpr int R = attn::block_rows(G, T), kWarps = kAttnThreads / 32, C = attn::kRowCols<R>;
  static_assert(R <= 32 && (R / attn::kRowGroup) * (attn::kQuadMaxHd / C) <= kAttnThreads);
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
  attn_scores<R>(qs, q_row, ks, kc + off, kv_dim, hd, n_last, row_n, scores, kq_scale, s_warp_max,
                 s_max);
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

// ---------------------------------------------------------------- the session

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

// The tensor-core kernel's variant, GALLEON_CUDA_MMA (read when a session is made): t4 (the
// default: staged activations, above), s4 (4 token groups per warp, counter in shared memory:
// the default until the H200 timed t4), s2 (2 token groups, counter in shared memory), r2 (2
// token groups, counter in registers: the first version), k4 or k8 (the dot products split
// across 4 or 8 warps, above), p4 (k4 with a lane's blocks two at a time, Tile's kPairs), u4
// (t4 with packed weights), v4 and w4 (t4 and u4 with 4 activation blocks staged at once), x4
// (packed weights and activations through a ring of cp.async copies: PipelinedBlocks).
// Every variant gives the same bits; they differ in speed only (docs/cuda.md).
enum class MmaVariant { R2, S2, S4, T4, K4, K8, P4, U4, V4, W4, X4 };
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
  if (s == "x4") return MmaVariant::X4;
  return MmaVariant::T4;
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
        return launch_matmul_mma<T>(l, st, variant == MmaVariant::U4 ? MmaVariant::T4 : MmaVariant::V4);
      if (variant == MmaVariant::U4) return launch_mma_staged<T, true, 1>(l, st);
      return launch_mma_staged<T, true, kStageBlocks<T>>(l, st);
    case MmaVariant::X4:  // the K-quants (no packed copy): u4's (t4 with its padded stage)
      if constexpr (cdev::mma::kPacks<T>)
        if (l.p.pq != nullptr) return launch_mma_pipelined<T>(l, st);
      return launch_mma_staged<T, true, 1>(l, st);
  }
}

// Whether sessions of this variant keep a packed copy of the weights of type t for the prompt
// tiles (cdev::mma::pack_lane), besides the rows the one-lane kernels read.
bool packs_weights(TileVariant v, MatmulPath path, GgmlType t) {
  bool packs = false;
  cdev::with_type(t, [&]<GgmlType T>() { packs = cdev::mma::kPacks<T>; });
  return packs && (v.mma == MmaVariant::U4 || v.mma == MmaVariant::W4 || v.mma == MmaVariant::X4) &&
         path == MatmulPath::Tiles;
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

// x (ntok rows of n) -> dst in the activation format of weight type t (A8 or A8K).
void run_quantize(GgmlType t, const float* x, int64_t n, int64_t ntok, void* dst,
                  cudaStream_t st) {
  constexpr int kWarps = 4;  // blocks per CUDA block, one warp each
  if (kern::act_format(t) == kern::ActFormat::A8) {
    const int64_t total = n / 32 * ntok;
    GALLEON_LAUNCH(blocks_for(total, kWarps), 32 * kWarps, 0, st, quantize_a8_kernel)(
        x, n, total, static_cast<kern::A8Block*>(dst));
  } else {
    const int64_t total = n / 256 * ntok;
    GALLEON_LAUNCH(blocks_for(total, kWarps), 32 * kWarps, 0, st, quantize_a8k_kernel)(
        x, n, total, static_cast<kern::A8KBlock*>(dst));
  }
  check_launch("activation quantization kernel");
}

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
    act_[slot].reserve(kern::act_row_bytes(t, n) * size_t(ntok));
    profile_.step("quantize activations", batch_,
                  [&] { run_quantize(t, x, n, ntok, act_[slot].get(), st_); });
    return act_[slot].get();
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
                 float kq_scale, float* scores, float* out) {
    // K tiles for prompts only: a block takes G heads of a token, so that a decoding step's
    // n_head / G blocks leave most of the GPU idle (an H200 decoded 1.1B F16 at 303 tok/s
    // with them, 383 without).
    if (attn_tiles_ && ntok > 1 && hd <= cdev::attn::kQuadMaxHd) {
      if (attn_rows_ > 0 && attention_rows(q, kc, vc, n_head, group, hd, kv_dim, ntok, n_past,
                                           kq_scale, out))
        return;
      return attention_tiles(q, kc, vc, n_head, group, hd, kv_dim, ntok, n_past, n_ctx, kq_scale,
                             scores, out);
    }
    // The scores go to shared memory when they fit in the default 48 KiB with the lanes (n_ctx
    // of them: a decoding step's graph serves every position; the kernel reads it from pos_).
    const size_t lanes = size_t(cdev::attn::lane_floats(hd)) * sizeof(float);
    const size_t with_scores = lanes + size_t(n_ctx) * sizeof(float);
    const bool shared_scores = with_scores <= kAttnShared;
    profile_.step("attention", batch_, [&] {
      GALLEON_LAUNCH(dim3(unsigned(ntok), unsigned(n_head)), kAttnThreads,
                     shared_scores ? with_scores : lanes, st_, attention_kernel)(
          q, kc, vc, n_head, group, hd, kv_dim, pos_, n_ctx, kq_scale, scores, out,
          shared_scores);
      check_launch("attention kernel");
    });
  }
  // attention_rows_kernel<G, T> with R = attn_rows_ rows per block (R / 2 where R's scores do
  // not fit in attn_shared_), for the groups G it is built for; false where it does not apply
  // (then attention_tiles).
  bool attention_rows(const float* q, const float* kc, const float* vc, int64_t n_head,
                      int64_t group, int64_t hd, int64_t kv_dim, int64_t ntok, int64_t n_past,
                      float kq_scale, float* out) {
    if (hd % 4 != 0 || kv_dim % 4 != 0 || attn_scratch_) return false;
    const int64_t n_kv = n_past + ntok;
    int rows = attn_rows_;
    auto bytes = [&](int r) {
      return size_t(cdev::attn::rows_shared_floats(r, hd, n_kv)) * sizeof(float);
    };
    while (rows > 16 && bytes(rows) > attn_shared_) rows /= 2;
    if (bytes(rows) > attn_shared_) return false;
    // T = rows / G tokens per block (G = 1: 16 rows, as 32 tokens of one head spilled 240
    // bytes), the rows rounded up to whole row groups.
    auto launch = [&]<int G>() {
      constexpr int kWideT = G == 1 ? 16 : 32 / G, kNarrowT = 16 / G;
      if (rows == 32)
        launch_rows<G, kWideT>(q, kc, vc, n_head, hd, kv_dim, ntok, n_kv, kq_scale, out, 1);
      else
        launch_rows<G, kNarrowT>(q, kc, vc, n_head, hd, kv_dim, ntok, n_kv, kq_scale, out, 0);
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
  // attention_rows_kernel<G, T> for ntok prompt tokens, the last of them at n_kv positions
  // (wide: 1 for the kernels of 32 rows, 0 for those of 16).
  template <int G, int T>
  void launch_rows(const float* q, const float* kc, const float* vc, int64_t n_head, int64_t hd,
                   int64_t kv_dim, int64_t ntok, int64_t n_kv, float kq_scale, float* out,
                   int wide) {
    const size_t shared =
        size_t(cdev::attn::rows_shared_floats(cdev::attn::block_rows(G, T), hd, n_kv)) *
        sizeof(float);
    const uint32_t bit = 1u << (2 * G + wide);  // distinct for the (G, T) built
    if (shared > kAttnShared && !(rows_raised_ & bit)) {  // once per session and kernel
      check(cudaFuncSetAttribute(attention_rows_kernel<G, T>,
                                 cudaFuncAttributeMaxDynamicSharedMemorySize, int(attn_shared_)),
            "cudaFuncSetAttribute (attention kernel)");
      rows_raised_ |= bit;
    }
    profile_.step("attention (rows)", batch_, [&] {
      GALLEON_LAUNCH(dim3(unsigned((ntok + T - 1) / T), unsigned(n_head / G)), kAttnThreads,
                     shared, st_, attention_rows_kernel<G, T>)(
          q, kc, vc, n_head, hd, kv_dim, pos_, ntok, kq_scale, out, n_kv);
      check_launch("attention kernel (rows)");
    });
  }
  // attention_tiles_kernel<G>: G = group for the group sizes it is built for, else 1.
  void attention_tiles(const float* q, const float* kc, const float* vc, int64_t n_head,
                       int64_t group, int64_t hd, int64_t kv_dim, int64_t ntok, int64_t n_past,
                       int64_t n_ctx, float kq_scale, float* scores, float* out) {
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
        const unsigned bit = 1u << (G + (kColumns ? 16 : 0));
        if (shared > kAttnShared && !(attn_raised_ & bit)) {  // once per session and kernel
          check(cudaFuncSetAttribute(attention_tiles_kernel<G, kColumns>,
                                     cudaFuncAttributeMaxDynamicSharedMemorySize,
                                     int(attn_shared_)),
                "cudaFuncSetAttribute (attention kernel)");
          attn_raised_ |= bit;
        }
        profile_.step("attention (K tiles)", batch_, [&] {
          GALLEON_LAUNCH(dim3(unsigned(ntok), unsigned(n_head / G)), kAttnThreads, shared, st_,
                         attention_tiles_kernel<G, kColumns>)(
              q, kc, vc, n_head, group, hd, kv_dim, pos_, n_ctx, kq_scale, scores, out,
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
  // The activation buffers, for CudaSession's graph key.
  const void* act_buffer(int slot) const { return act_[slot].get(); }
  void silu_mul(float* g, const float* u, int64_t total) {
    profile_.step("silu_mul", batch_, [&] {
      GALLEON_LAUNCH(blocks_for(total, 256), 256, 0, st_, silu_mul_kernel)(g, u, total);
      check_launch("silu kernel");
    });
  }

 private:
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
  // Steps 4 to 6 of the K-tile kernel by column warps (opt-in until timed on a GPU).
  bool attn_columns_ = env_flag("GALLEON_CUDA_ATTN_COLUMNS", false);
  // Rows per block of attention_rows_kernel (GALLEON_CUDA_ATTN_ROWS=16 or 32; 0: off, the
  // default until timed on a GPU).
  int attn_rows_ = attention_rows_from_env();
  size_t attn_shared_ = attention_shared_limit();
  // Bit G (+ 16 for kColumns): attention_tiles_kernel<G, kColumns> may take attn_shared_.
  unsigned attn_raised_ = 0;
  // Bit 2 G + 1 (32 rows) or 2 G (16 rows): attention_rows_kernel<G, T> may take attn_shared_.
  uint32_t rows_raised_ = 0;
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

 private:
  // Rows::Last and Rows::None compute the last row or none (a single token's row always).
  void do_eval(const std::vector<int32_t>& tokens, std::vector<float>& logits,
               Rows rows) override;
  DevWeight upload_weight(const Weight& w);
  void upload_together(std::initializer_list<const Weight*> ws);
  void pack(const DevWeight& d, int64_t rows);
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
  DeviceBuffer k_cache_, v_cache_, rope_cos_, rope_sin_;
  std::vector<float> host_cos_, host_sin_, host_x_;
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
  rope_cos_.reserve(rope);
  rope_sin_.reserve(rope);
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
  DevWeight p = d;
  owned_.push_back(std::make_unique<DeviceBuffer>());
  pack_weights(p, d.data, rows, *owned_.back());
  packed_[d.data] = p;
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
  rope_table_rows(model_, rope_rows_, need, host_cos_, host_sin_);
  const size_t off = size_t(rope_rows_ * half), count = size_t((need - rope_rows_) * half);
  check(cudaMemcpy(rope_cos_.get<float>() + off, host_cos_.data() + off, count * 4,
                   cudaMemcpyHostToDevice), "cudaMemcpy (rope table)");
  check(cudaMemcpy(rope_sin_.get<float>() + off, host_sin_.data() + off, count * 4,
                   cudaMemcpyHostToDevice), "cudaMemcpy (rope table)");
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
  // The embedding rows, dequantized exactly on the host.
  embed_tokens(model_, tokens, host_x_);
  check(cudaMemcpyAsync(x_.get(), host_x_.data(), host_x_.size() * F, cudaMemcpyHostToDevice,
                        stream_.get()),
        "cudaMemcpyAsync (embeddings)");
  const Buffers b{x_.get<float>(),      xn_.get<float>(),     q_.get<float>(),
                  k_.get<float>(),      v_.get<float>(),      att_.get<float>(),
                  tmp_.get<float>(),    gate_.get<float>(),   up_.get<float>(),
                  logits_.get<float>(), scores_.get<float>(), k_cache_.get<float>(),
                  v_cache_.get<float>(), rope_cos_.get<float>(), rope_sin_.get<float>()};
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
