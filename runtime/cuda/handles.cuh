// The CUDA runtime behind errors and RAII handles (device buffers, streams, graphs), the
// GALLEON_CUDA_* switches read from the environment, the launch macros and grid arithmetic, and
// the warp reductions the kernels share.
//
// Part of runtime/cuda/session.cu's translation unit (its definitions are in an unnamed
// namespace): only session.cu includes it.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "runtime/error.h"

// kernel<<<grid, block, shared_bytes, st>>>(args) is written GALLEON_LAUNCH(grid, block,
// shared_bytes, st, kernel)(args), and a kernel's dynamic shared memory GALLEON_DYNAMIC_SHARED:
// the host runtime of the tests (tests/cuda_host/cuda_runtime.h) defines both its own way.
#if !defined(GALLEON_LAUNCH)
#define GALLEON_LAUNCH(grid, block, shared_bytes, st, ...) \
  __VA_ARGS__<<<grid, block, shared_bytes, st>>>
#define GALLEON_DYNAMIC_SHARED(type, name) extern __shared__ __align__(16) type name[]
#endif

#define GALLEON_GRID_STRIDE(i, total)                                           \
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < (total); \
       i += int64_t(gridDim.x) * blockDim.x)

namespace galleon::cuda {
namespace {

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

// Page-locked host memory (cudaMallocHost), grown by reserve: the GPU copies from and to it
// without a staging copy, and cudaMemcpyAsync returns at once. Growing it drops the contents;
// no copy may be in flight then.
class PinnedBuffer {
 public:
  PinnedBuffer() = default;
  PinnedBuffer(const PinnedBuffer&) = delete;
  PinnedBuffer& operator=(const PinnedBuffer&) = delete;
  ~PinnedBuffer() {
    if (p_) cudaFreeHost(p_);
  }
  void reserve(size_t bytes) {
    if (bytes <= size_) return;
    if (p_) cudaFreeHost(p_);
    p_ = nullptr;
    size_ = 0;
    check(cudaMallocHost(&p_, std::max<size_t>(bytes, 256)), "cudaMallocHost");
    size_ = bytes;
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

}  // namespace
}  // namespace galleon::cuda
