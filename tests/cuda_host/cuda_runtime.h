// The CUDA runtime on the CPU, for tests: runtime/cuda/session.cu compiled with g++ against this
// header (tests/cuda_host/session_host.cpp) runs its own kernels and host code on the CPU, so
// that the launches, grids, shared memory, barriers and shuffles written for the GPU are
// exercised where there is no GPU (docs/cuda.md, "The host runtime").
//
// - A kernel launch runs every block in turn; each thread of a block is a fiber (ucontext) that
//   runs until it waits at __syncthreads() or a warp shuffle, so barriers and shuffles have
//   their GPU meaning. A barrier that can never complete (a __syncthreads() some threads skip, a
//   shuffle with exited lanes), lanes meeting at different shuffles, a bad launch
//   configuration, or too much dynamic shared memory is an error: the launch's, reported by
//   cudaGetLastError() and every later call, like a GPU fault.
// - Device memory is host memory from the heap (AddressSanitizer sees overruns), filled with
//   0xff bytes (NaN) when allocated; a block's dynamic shared memory is a fresh heap array of
//   exactly the requested size, filled the same way.
// - Blocks run threads in increasing order, and every other block in decreasing order, so a
//   missing barrier shows whichever way it matters.
// - Streams execute at once, in order; stream capture records kernels and copies, a graph
//   launch replays them.
// Only what session.cu uses is here. __shared__ variables are function statics: blocks run one
// at a time, so a kernel's statics are its block's shared memory.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <tuple>
#include <type_traits>
#include <utility>

#define GALLEON_CUDA_HOST 1
#define __host__
#define __device__
#define __global__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static

struct uint3 {
  unsigned x = 0, y = 0, z = 0;
};
struct dim3 {
  unsigned x, y, z;
  constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};

enum cudaError_t {
  cudaSuccess = 0,
  cudaErrorInvalidValue = 1,
  cudaErrorMemoryAllocation = 2,
  cudaErrorInitializationError = 3,
  cudaErrorInvalidConfiguration = 9,
  cudaErrorInsufficientDriver = 35,
  cudaErrorNoDevice = 100,
  cudaErrorInvalidDevice = 101,
  cudaErrorNoKernelImageForDevice = 209,
  cudaErrorUnsupportedPtxVersion = 222,
  cudaErrorLaunchFailure = 719,
  cudaErrorNotSupported = 801,
  cudaErrorSystemNotReady = 802,
  cudaErrorSystemDriverMismatch = 803,
  cudaErrorCompatNotSupportedOnDevice = 804,
  cudaErrorStreamCaptureUnsupported = 900,
  cudaErrorStreamCaptureInvalidated = 901,
};
enum cudaMemcpyKind {
  cudaMemcpyHostToHost = 0,
  cudaMemcpyHostToDevice = 1,
  cudaMemcpyDeviceToHost = 2,
  cudaMemcpyDeviceToDevice = 3,
  cudaMemcpyDefault = 4,
};
enum cudaStreamCaptureMode {
  cudaStreamCaptureModeGlobal = 0,
  cudaStreamCaptureModeThreadLocal = 1,
  cudaStreamCaptureModeRelaxed = 2,
};
enum cudaStreamCaptureStatus {
  cudaStreamCaptureStatusNone = 0,
  cudaStreamCaptureStatusActive = 1,
  cudaStreamCaptureStatusInvalidated = 2,
};
enum cudaDeviceAttr {
  cudaDevAttrComputeCapabilityMajor = 75,
  cudaDevAttrMaxSharedMemoryPerMultiprocessor = 81,
  cudaDevAttrMaxSharedMemoryPerBlockOptin = 97,
};
enum cudaFuncAttribute { cudaFuncAttributeMaxDynamicSharedMemorySize = 8 };

struct CUstream_st;
struct CUevent_st;
struct CUgraph_st;
struct CUgraphExec_st;
using cudaStream_t = CUstream_st*;
using cudaEvent_t = CUevent_st*;
using cudaGraph_t = CUgraph_st*;
using cudaGraphExec_t = CUgraphExec_st*;

const char* cudaGetErrorString(cudaError_t e);
const char* cudaGetErrorName(cudaError_t e);
cudaError_t cudaGetLastError();
cudaError_t cudaGetDeviceCount(int* count);
cudaError_t cudaSetDevice(int device);
cudaError_t cudaGetDevice(int* device);
cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr attr, int device);
cudaError_t cudaDeviceSynchronize();
// Clears a launch's error (as on a GPU, where it also frees everything: not here).
cudaError_t cudaDeviceReset();
// Device memory is host memory, counted against a capacity of CUDA_HOST_MEMORY_MIB (default
// 65536), which cudaMalloc keeps to and cudaMemGetInfo reports (tests: a GPU short of memory).
cudaError_t cudaMalloc(void** p, size_t bytes);
cudaError_t cudaFree(void* p);
cudaError_t cudaMemGetInfo(size_t* free, size_t* total);
// Page-locked host memory: plain host memory here.
cudaError_t cudaMallocHost(void** p, size_t bytes);
cudaError_t cudaFreeHost(void* p);
cudaError_t cudaMemcpy(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind);
cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind,
                            cudaStream_t st = nullptr);
cudaError_t cudaStreamCreate(cudaStream_t* st);
cudaError_t cudaStreamDestroy(cudaStream_t st);
cudaError_t cudaStreamSynchronize(cudaStream_t st);
cudaError_t cudaStreamBeginCapture(cudaStream_t st, cudaStreamCaptureMode mode);
cudaError_t cudaStreamEndCapture(cudaStream_t st, cudaGraph_t* graph);
cudaError_t cudaStreamIsCapturing(cudaStream_t st, cudaStreamCaptureStatus* status);
cudaError_t cudaGraphInstantiate(cudaGraphExec_t* exec, cudaGraph_t graph,
                                 unsigned long long flags = 0);
cudaError_t cudaGraphDestroy(cudaGraph_t graph);
cudaError_t cudaGraphExecDestroy(cudaGraphExec_t exec);
cudaError_t cudaGraphLaunch(cudaGraphExec_t exec, cudaStream_t st);
cudaError_t cudaEventCreate(cudaEvent_t* ev);
cudaError_t cudaEventDestroy(cudaEvent_t ev);
cudaError_t cudaEventRecord(cudaEvent_t ev, cudaStream_t st = nullptr);
cudaError_t cudaEventSynchronize(cudaEvent_t ev);
cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t start, cudaEvent_t stop);

namespace cuda_host {

// The running GPU thread's coordinates.
struct ThreadCoords {
  uint3 thread_idx, block_idx;
  dim3 block_dim, grid_dim;
};
const ThreadCoords& coords();

// A kernel launch: body runs once per GPU thread (on its fiber). kernel: the kernel function,
// whose cudaFuncSetAttribute limits its dynamic shared memory.
void launch(dim3 grid, dim3 block, size_t shared_bytes, cudaStream_t st, const char* name,
            const void* kernel, std::function<void()> body);
// cudaFuncSetAttribute's work.
cudaError_t set_func_attribute(const void* kernel, cudaFuncAttribute attr, int value);

// Where a shuffle is written.
struct Site {
  const char* file;
  int line;
};

// __syncthreads(); the running block's dynamic shared memory; a warp shuffle of 4 bytes
// (kind: 0 index, 1 xor, 2 down) written at `site`.
void sync_block();
void* dynamic_shared();

// cp.async (sm_80 and later: copies from global to shared memory that a thread issues, commits
// as a group and waits for): here a thread's copies wait, group by group, until the thread
// waits for their group, and are made then. So a thread that reads its copy before its wait,
// or another thread's before the barrier after that thread's wait, sees the old bytes, as it
// may on a GPU. Copies not yet committed, or never waited for, are never made. `bytes` is 4, 8
// or 16, and both addresses must be aligned to it (else the block fails, as the GPU faults);
// src_bytes <= bytes of them are read, the rest of the bytes written are zeros.
void async_copy(void* shared_dst, const void* global_src, size_t bytes, size_t src_bytes);
void async_commit();
// The thread's committed groups, all but the `pending` newest, are done.
void async_wait(int pending);
uint32_t shuffle(unsigned mask, uint32_t bits, int kind, int arg, int width, Site site);

// kernel<<<grid, block, shared_bytes, st>>>(args...): the arguments are converted to the
// kernel's parameter types and copied, as a launch does.
template <class... P>
class Launcher {
 public:
  Launcher(dim3 grid, dim3 block, size_t shared_bytes, cudaStream_t st, const char* name,
           void (*kernel)(P...))
      : grid_(grid), block_(block), shared_(shared_bytes), st_(st), name_(name), kernel_(kernel) {}
  template <class... A>
  void operator()(A&&... args) const {
    static_assert(sizeof...(A) == sizeof...(P), "a kernel launch with the wrong argument count");
    std::tuple<std::decay_t<P>...> copied(std::forward<A>(args)...);
    void (*kernel)(P...) = kernel_;
    launch(grid_, block_, shared_, st_, name_, reinterpret_cast<const void*>(kernel),
           [kernel, copied]() { std::apply(kernel, copied); });
  }

 private:
  dim3 grid_, block_;
  size_t shared_;
  cudaStream_t st_;
  const char* name_;
  void (*kernel_)(P...);
};
template <class... P>
Launcher<P...> make_launcher(dim3 grid, dim3 block, size_t shared_bytes, cudaStream_t st,
                             const char* name, void (*kernel)(P...)) {
  return Launcher<P...>(grid, block, shared_bytes, st, name, kernel);
}

template <class T>
[[gnu::always_inline]] inline T shuffle_value(unsigned mask, T v, int kind, int arg, int width, Site site) {
  static_assert(sizeof(T) == 4 && std::is_trivially_copyable_v<T>, "4-byte shuffles only");
  uint32_t bits;
  std::memcpy(&bits, &v, 4);
  bits = shuffle(mask, bits, kind, arg, width, site);
  std::memcpy(&v, &bits, 4);
  return v;
}

}  // namespace cuda_host

// The kernel's dynamic shared memory may go past 48 KiB up to the device's opt-in limit.
template <class... P>
cudaError_t cudaFuncSetAttribute(void (*kernel)(P...), cudaFuncAttribute attr, int value) {
  return ::cuda_host::set_func_attribute(reinterpret_cast<const void*>(kernel), attr, value);
}

#define GALLEON_LAUNCH(grid, block, shared_bytes, st, ...) \
  ::cuda_host::make_launcher(grid, block, shared_bytes, st, #__VA_ARGS__, &__VA_ARGS__)
#define GALLEON_DYNAMIC_SHARED(type, name) type* name = static_cast<type*>(::cuda_host::dynamic_shared())

#define threadIdx (::cuda_host::coords().thread_idx)
#define blockIdx (::cuda_host::coords().block_idx)
#define blockDim (::cuda_host::coords().block_dim)
#define gridDim (::cuda_host::coords().grid_dim)

inline void __syncthreads() { ::cuda_host::sync_block(); }

// The call site (file and line, as default arguments) must be the same for every lane.
template <class T>
[[gnu::always_inline]] inline T __shfl_sync(unsigned mask, T v, int src, int width = 32, const char* file = __builtin_FILE(),
              int line = __builtin_LINE()) {
  return ::cuda_host::shuffle_value(mask, v, 0, src, width, {file, line});
}
template <class T>
[[gnu::always_inline]] inline T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = 32,
                  const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
  return ::cuda_host::shuffle_value(mask, v, 1, lane_mask, width, {file, line});
}
template <class T>
[[gnu::always_inline]] inline T __shfl_down_sync(unsigned mask, T v, unsigned delta, int width = 32,
                   const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
  return ::cuda_host::shuffle_value(mask, v, 2, int(delta), width, {file, line});
}
