// The host CUDA runtime itself (cuda_runtime.h): barriers and shuffles keep their GPU meaning,
// and the mistakes a GPU punishes (a race on shared memory, a shuffle some lanes skip, lanes at
// different shuffles, a bad launch) are errors here too. Kernels as session.cu writes them.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cstring>
#include <string>
#include <vector>

namespace {

// out[block * n + t] = t's mirror n - 1 - t, exchanged through dynamic shared memory; `sync`
// false leaves out the barrier between the writes and the reads (a race).
__global__ void mirror_kernel(int* out, bool sync) {
  GALLEON_DYNAMIC_SHARED(int, s);
  const int t = int(threadIdx.x), n = int(blockDim.x);
  s[t] = t;
  if (sync) __syncthreads();
  out[int(blockIdx.x) * n + t] = s[n - 1 - t];
}

// Per lane: the xor-butterfly sum of the lane indices, the value of lane + 3 (shfl_down) and
// of lane 5 (shfl).
__global__ void warp_kernel(int* sum, int* down, int* from5) {
  const int lane = int(threadIdx.x) & 31, t = int(threadIdx.x);
  int v = lane;
  for (int o = 16; o >= 1; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  sum[t] = v;
  down[t] = __shfl_down_sync(0xffffffffu, lane, 3);
  from5[t] = __shfl_sync(0xffffffffu, lane, 5);
}

// Lanes 16..31 leave; lanes 0..15 wait at a shuffle for them.
__global__ void half_warp_shuffle_kernel(int* out) {
  const int lane = int(threadIdx.x) & 31;
  if (lane >= 16) return;
  out[lane] = __shfl_xor_sync(0xffffffffu, lane, 1);
}

// Odd and even lanes at different shuffles.
__global__ void split_shuffle_kernel(int* out) {
  const int lane = int(threadIdx.x) & 31;
  int v;
  if (lane & 1)
    v = __shfl_xor_sync(0xffffffffu, lane, 1);
  else
    v = __shfl_xor_sync(0xffffffffu, lane, 1);
  out[lane] = v;
}

// Lanes 0..15 wait at __syncthreads() for lanes 16..31, which wait at a shuffle for them.
__global__ void barrier_against_shuffle_kernel(int* out) {
  const int t = int(threadIdx.x);
  if (t < 16)
    __syncthreads();
  else
    out[t] = __shfl_xor_sync(0xffffffffu, t, 1);
}

__global__ void add_one_kernel(int* x) { *x += 1; }

// cp.async as session.cu issues it (the host runtime's calls; 32 threads, 96 ints of dynamic
// shared memory s). Group 1: s[t] = a[t]; group 2: s[32 + t] = b[t]; group 3: the low 2 bytes
// of c[t] to s[64 + t], the rest zeros. seen[k * 32 + t] is what thread t reads: k = 0, s[t]
// before any wait; 1 and 2, s[t] and s[32 + t] once all but the newest 2 groups are done; 3
// and 4, s[32 + t] and s[64 + t] once all are; 5, its neighbour's s[(t + 1) % 32] before the
// barrier; 6, after it.
__global__ void async_copy_kernel(const int* a, const int* b, const int* c, int* seen) {
  GALLEON_DYNAMIC_SHARED(int, s);
  const int t = int(threadIdx.x);
  ::cuda_host::async_copy(&s[t], &a[t], 4, 4);
  ::cuda_host::async_commit();
  ::cuda_host::async_copy(&s[32 + t], &b[t], 4, 4);
  ::cuda_host::async_commit();
  ::cuda_host::async_copy(&s[64 + t], &c[t], 4, 2);
  seen[0 * 32 + t] = s[t];
  ::cuda_host::async_commit();
  ::cuda_host::async_wait(2);  // group 1 done
  seen[1 * 32 + t] = s[t];
  seen[2 * 32 + t] = s[32 + t];
  ::cuda_host::async_wait(0);  // all done
  seen[3 * 32 + t] = s[32 + t];
  seen[4 * 32 + t] = s[64 + t];
  seen[5 * 32 + t] = s[(t + 1) % 32];
  __syncthreads();
  seen[6 * 32 + t] = s[(t + 1) % 32];
}

// A cp.async whose shared address is not aligned to its size.
__global__ void misaligned_async_copy_kernel(const int* a) {
  GALLEON_DYNAMIC_SHARED(int, s);
  ::cuda_host::async_copy(&s[1], a, 8, 8);
  ::cuda_host::async_commit();
  ::cuda_host::async_wait(0);
}

template <class T>
std::vector<T> download(const T* d, size_t n) {
  std::vector<T> h(n);
  EXPECT_EQ(cudaMemcpy(h.data(), d, n * sizeof(T), cudaMemcpyDeviceToHost), cudaSuccess);
  return h;
}

template <class T>
T* device_array(size_t n) {
  void* p = nullptr;
  EXPECT_EQ(cudaMalloc(&p, n * sizeof(T)), cudaSuccess);
  return static_cast<T*>(p);
}

// The launch's error (sticky) and its text; the device is reset for the next test.
std::string launch_failure() {
  const cudaError_t e = cudaGetLastError();
  EXPECT_EQ(e, cudaErrorLaunchFailure);
  const std::string text = cudaGetErrorString(e);
  EXPECT_EQ(cudaDeviceReset(), cudaSuccess);
  EXPECT_EQ(cudaGetLastError(), cudaSuccess);
  return text;
}

TEST(CudaHost, BarrierAndDynamicSharedMemory) {
  const int n = 96, blocks = 3;
  int* out = device_array<int>(n * blocks);
  GALLEON_LAUNCH(blocks, n, n * sizeof(int), nullptr, mirror_kernel)(out, true);
  ASSERT_EQ(cudaGetLastError(), cudaSuccess);
  const std::vector<int> got = download(out, n * blocks);
  for (int b = 0; b < blocks; ++b)
    for (int t = 0; t < n; ++t) EXPECT_EQ(got[size_t(b * n + t)], n - 1 - t) << b << " " << t;
  cudaFree(out);
}

// Without the barrier some thread reads its mirror's cell before the mirror wrote it: shared
// memory starts as 0xff bytes, so the value is -1 (in the blocks run upwards, the first half;
// in those run downwards, the second half).
TEST(CudaHost, AMissingBarrierShows) {
  const int n = 64, blocks = 2;
  int* out = device_array<int>(n * blocks);
  GALLEON_LAUNCH(blocks, n, n * sizeof(int), nullptr, mirror_kernel)(out, false);
  ASSERT_EQ(cudaGetLastError(), cudaSuccess);
  const std::vector<int> got = download(out, n * blocks);
  for (int b = 0; b < blocks; ++b) {
    int stale = 0;
    for (int t = 0; t < n; ++t) stale += got[size_t(b * n + t)] == -1;
    EXPECT_EQ(stale, n / 2) << "block " << b;
  }
  cudaFree(out);
}

TEST(CudaHost, ShufflesExchangeWithinTheWarp) {
  const int n = 64;
  int* sum = device_array<int>(n);
  int* down = device_array<int>(n);
  int* from5 = device_array<int>(n);
  GALLEON_LAUNCH(1, n, 0, nullptr, warp_kernel)(sum, down, from5);
  ASSERT_EQ(cudaGetLastError(), cudaSuccess);
  const std::vector<int> s = download(sum, n), d = download(down, n), f = download(from5, n);
  int lanes = 0;
  for (int l = 0; l < 32; ++l) lanes += l;
  for (int t = 0; t < n; ++t) {
    const int lane = t % 32;
    EXPECT_EQ(s[size_t(t)], lanes) << t;
    EXPECT_EQ(d[size_t(t)], lane + 3 < 32 ? lane + 3 : lane) << t;
    EXPECT_EQ(f[size_t(t)], 5) << t;
  }
  cudaFree(sum);
  cudaFree(down);
  cudaFree(from5);
}

TEST(CudaHost, AShuffleWithExitedLanesIsAFault) {
  int* out = device_array<int>(32);
  GALLEON_LAUNCH(1, 32, 0, nullptr, half_warp_shuffle_kernel)(out);
  const std::string text = launch_failure();
  EXPECT_NE(text.find("half_warp_shuffle_kernel"), std::string::npos) << text;
  EXPECT_NE(text.find("cannot complete"), std::string::npos) << text;
  cudaFree(out);
}

TEST(CudaHost, LanesAtDifferentShufflesAreAFault) {
  int* out = device_array<int>(32);
  GALLEON_LAUNCH(1, 32, 0, nullptr, split_shuffle_kernel)(out);
  const std::string text = launch_failure();
  EXPECT_NE(text.find("different shuffles"), std::string::npos) << text;
  cudaFree(out);
}

TEST(CudaHost, ABarrierThatCannotCompleteIsAFault) {
  int* out = device_array<int>(32);
  GALLEON_LAUNCH(1, 32, 0, nullptr, barrier_against_shuffle_kernel)(out);
  const std::string text = launch_failure();
  EXPECT_NE(text.find("16 threads wait at __syncthreads(), 16 at a warp shuffle"),
            std::string::npos)
      << text;
  cudaFree(out);
}

TEST(CudaHost, BadLaunchConfigurationsAreErrors) {
  int* out = device_array<int>(1);
  GALLEON_LAUNCH(1, 2048, 0, nullptr, add_one_kernel)(out);
  EXPECT_EQ(cudaGetLastError(), cudaErrorInvalidConfiguration);
  GALLEON_LAUNCH(dim3(1, 70000), 32, 0, nullptr, add_one_kernel)(out);
  EXPECT_EQ(cudaGetLastError(), cudaErrorInvalidConfiguration);
  GALLEON_LAUNCH(1, 64, 64 * 1024, nullptr, mirror_kernel)(out, true);
  EXPECT_EQ(cudaGetLastError(), cudaErrorInvalidValue);
  EXPECT_EQ(cudaGetLastError(), cudaSuccess);  // not sticky
  cudaFree(out);
}

// Past 48 KiB of dynamic shared memory a kernel needs cudaFuncSetAttribute first, up to the
// device's opt-in limit; the attribute is the kernel's own.
TEST(CudaHost, DynamicSharedMemoryPastTheDefaultNeedsTheAttribute) {
  int optin = 0;
  ASSERT_EQ(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, 0), cudaSuccess);
  ASSERT_GT(optin, 64 * 1024);
  EXPECT_EQ(cudaFuncSetAttribute(mirror_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                 optin + 1),
            cudaErrorInvalidValue);
  ASSERT_EQ(cudaFuncSetAttribute(mirror_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                 64 * 1024),
            cudaSuccess);
  const int n = 64;
  int* out = device_array<int>(n);
  GALLEON_LAUNCH(1, n, 64 * 1024, nullptr, mirror_kernel)(out, true);
  ASSERT_EQ(cudaGetLastError(), cudaSuccess);
  const std::vector<int> got = download(out, n);
  for (int t = 0; t < n; ++t) EXPECT_EQ(got[size_t(t)], n - 1 - t) << t;
  GALLEON_LAUNCH(1, n, 64 * 1024 + 4, nullptr, mirror_kernel)(out, true);
  EXPECT_EQ(cudaGetLastError(), cudaErrorInvalidValue);
  GALLEON_LAUNCH(1, 64, 49 * 1024, nullptr, add_one_kernel)(out);
  EXPECT_EQ(cudaGetLastError(), cudaErrorInvalidValue);
  ASSERT_EQ(cudaFuncSetAttribute(mirror_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                 48 * 1024),
            cudaSuccess);
  cudaFree(out);
}

// A thread's cp.async copies are made when it waits for their group, so what a GPU may not show
// yet (its own copies before its wait, another thread's before the barrier after that thread's
// wait) is the old bytes here.
TEST(CudaHost, AsyncCopiesLandWhenWaitedFor) {
  const int n = 32;
  std::vector<int> ha(n), hb(n), hc(n);
  for (int t = 0; t < n; ++t) ha[size_t(t)] = 100 + t, hb[size_t(t)] = 200 + t, hc[size_t(t)] = 0x7abc0000 + t;
  int *a = device_array<int>(n), *b = device_array<int>(n), *c = device_array<int>(n);
  int* seen = device_array<int>(7 * n);
  ASSERT_EQ(cudaMemcpy(a, ha.data(), n * sizeof(int), cudaMemcpyHostToDevice), cudaSuccess);
  ASSERT_EQ(cudaMemcpy(b, hb.data(), n * sizeof(int), cudaMemcpyHostToDevice), cudaSuccess);
  ASSERT_EQ(cudaMemcpy(c, hc.data(), n * sizeof(int), cudaMemcpyHostToDevice), cudaSuccess);
  GALLEON_LAUNCH(1, n, 3 * n * sizeof(int), nullptr, async_copy_kernel)(a, b, c, seen);
  ASSERT_EQ(cudaGetLastError(), cudaSuccess);
  const std::vector<int> got = download(seen, 7 * n);
  auto at = [&](int k, int t) { return got[size_t(k * n + t)]; };
  for (int t = 0; t < n; ++t) {
    EXPECT_EQ(at(0, t), -1) << "before the wait, thread " << t;
    EXPECT_EQ(at(1, t), 100 + t) << t;
    EXPECT_EQ(at(2, t), -1) << "a group not waited for, thread " << t;
    EXPECT_EQ(at(3, t), 200 + t) << t;
    EXPECT_EQ(at(4, t), t) << "2 bytes read, 2 zeros, thread " << t;
    // Threads run in increasing order: the neighbour has not waited yet, but for the last
    // thread, whose neighbour is thread 0.
    EXPECT_EQ(at(5, t), t + 1 < n ? -1 : 100) << "before the barrier, thread " << t;
    EXPECT_EQ(at(6, t), 100 + (t + 1) % n) << t;
  }
  GALLEON_LAUNCH(1, 1, 16, nullptr, misaligned_async_copy_kernel)(a);
  const std::string text = launch_failure();
  EXPECT_NE(text.find("cp.async of 8 bytes"), std::string::npos) << text;
  for (int* p : {a, b, c, seen}) cudaFree(p);
}

TEST(CudaHost, DeviceMemoryStartsAsNaN) {
  float* p = device_array<float>(5);
  for (float v : download(p, 5)) EXPECT_NE(v, v);
  cudaFree(p);
}

TEST(CudaHost, GraphsReplayWhatTheStreamCaptured) {
  cudaStream_t st = nullptr;
  ASSERT_EQ(cudaStreamCreate(&st), cudaSuccess);
  int* x = device_array<int>(1);
  const int zero = 0;
  ASSERT_EQ(cudaMemcpy(x, &zero, sizeof zero, cudaMemcpyHostToDevice), cudaSuccess);
  ASSERT_EQ(cudaStreamBeginCapture(st, cudaStreamCaptureModeThreadLocal), cudaSuccess);
  GALLEON_LAUNCH(1, 1, 0, st, add_one_kernel)(x);
  GALLEON_LAUNCH(1, 1, 0, st, add_one_kernel)(x);
  cudaGraph_t g = nullptr;
  ASSERT_EQ(cudaStreamEndCapture(st, &g), cudaSuccess);
  EXPECT_EQ(download(x, 1)[0], 0) << "captured work does not run";
  cudaGraphExec_t exec = nullptr;
  ASSERT_EQ(cudaGraphInstantiate(&exec, g, 0), cudaSuccess);
  cudaGraphDestroy(g);
  for (int i = 0; i < 3; ++i) ASSERT_EQ(cudaGraphLaunch(exec, st), cudaSuccess);
  ASSERT_EQ(cudaStreamSynchronize(st), cudaSuccess);
  EXPECT_EQ(download(x, 1)[0], 6);
  cudaGraphExecDestroy(exec);

  // A synchronous copy while capturing invalidates the capture.
  ASSERT_EQ(cudaStreamBeginCapture(st, cudaStreamCaptureModeThreadLocal), cudaSuccess);
  int h = 0;
  EXPECT_EQ(cudaMemcpy(&h, x, sizeof h, cudaMemcpyDeviceToHost), cudaErrorStreamCaptureUnsupported);
  cudaGraph_t bad = nullptr;
  EXPECT_EQ(cudaStreamEndCapture(st, &bad), cudaErrorStreamCaptureInvalidated);
  EXPECT_EQ(bad, nullptr);
  cudaGetLastError();
  cudaFree(x);
  cudaStreamDestroy(st);
}

}  // namespace
