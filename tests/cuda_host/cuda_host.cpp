// The CUDA runtime on the CPU (cuda_runtime.h): memory, streams, graphs, events, and kernels run
// block by block with one fiber per GPU thread.
#include "tests/cuda_host/cuda_runtime.h"

#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>

#include <chrono>
#include <map>
#include <mutex>
#include <cstdio>
#include <algorithm>
#include <cstdlib>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

// AddressSanitizer is told of every switch between stacks (GCC and clang announce it differently).
#if defined(__SANITIZE_ADDRESS__)
#define GALLEON_HOST_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define GALLEON_HOST_ASAN 1
#endif
#endif
#if defined(GALLEON_HOST_ASAN)
#include <sanitizer/common_interface_defs.h>
#endif

namespace cuda_host {
namespace {

constexpr size_t kDynamicSharedLimit = 48 * 1024;  // without cudaFuncSetAttribute
// An H100's shared memory: per SM, and the most a block may opt in to.
constexpr int kSharedPerSm = 228 * 1024;
constexpr int kSharedOptin = 227 * 1024;
constexpr unsigned kMaxThreads = 1024;
constexpr size_t kStackBytes = 512 * 1024;

// ---------------------------------------------------------------- errors

// The first error of a launch stays (a GPU fault is sticky); launch configuration errors are
// returned once by cudaGetLastError.
struct ErrorState {
  cudaError_t sticky = cudaSuccess;
  std::string sticky_text;
  cudaError_t last = cudaSuccess;
  std::string last_text;
};
ErrorState& errors() {
  static ErrorState e;
  return e;
}

void fault(const std::string& what) {
  ErrorState& e = errors();
  if (e.sticky != cudaSuccess) return;
  std::fprintf(stderr, "cuda_host: %s\n", what.c_str());
  e.sticky = cudaErrorLaunchFailure;
  e.sticky_text = "unspecified launch failure: " + what;
}

void launch_error(cudaError_t code, const std::string& what) {
  ErrorState& e = errors();
  e.last = code;
  e.last_text = what;
}

// ---------------------------------------------------------------- fibers

// A fiber's stack, with a guard page below it. The stacks' tops are staggered (index i's is
// 208 i mod 4096 bytes plus 5 i mod 32 pages below its end): tops at the same offset in
// equally spaced mappings would all fall in the same cache sets, and a warp's shuffle touches
// 32 of them.
class Stack {
 public:
  explicit Stack(size_t index) {
    const size_t page = size_t(sysconf(_SC_PAGESIZE));
    void* p = mmap(nullptr, kStackBytes + page, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) std::abort();
    mprotect(p, page, PROT_NONE);  // an overflow faults instead of writing elsewhere
    base_ = p;
    guard_ = page;
    size_ = kStackBytes - (index * 208) % 4096 - (index * 5) % 32 * 4096;
  }
  Stack(const Stack&) = delete;
  Stack& operator=(const Stack&) = delete;
  ~Stack() { munmap(base_, kStackBytes + guard_); }
  void* bottom() const { return static_cast<char*>(base_) + guard_; }
  size_t size() const { return size_; }

 private:
  void* base_;
  size_t guard_, size_;
};

// A saved execution context. On x86-64 a stack pointer, switched by galleon_host_switch (the
// System V callee-saved registers pushed on the old stack, popped from the new one: no system
// call, unlike swapcontext, which also saves the signal mask); elsewhere a ucontext.
#if defined(__x86_64__)
extern "C" void galleon_host_switch(void** save_sp, void* new_sp);
asm(R"(
  .text
  .p2align 4
  .globl galleon_host_switch
  .type galleon_host_switch, @function
galleon_host_switch:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
  .size galleon_host_switch, .-galleon_host_switch
)");

struct Context {
  void* sp = nullptr;
};
// A context that enters entry() (which never returns) on stack s.
void start_context(Context& c, const Stack& s, void (*entry)()) {
  const uintptr_t top = (reinterpret_cast<uintptr_t>(s.bottom()) + s.size()) & ~uintptr_t(15);
  void** sp = reinterpret_cast<void**>(top);
  *--sp = nullptr;                          // entry's return address: it never returns
  *--sp = reinterpret_cast<void*>(entry);   // where galleon_host_switch's ret goes
  for (int i = 0; i < 6; ++i) *--sp = nullptr;  // rbp, rbx, r12 .. r15
  c.sp = sp;
}
void switch_context(Context& from, Context& to) { galleon_host_switch(&from.sp, to.sp); }
#else
struct Context {
  ucontext_t uc;
};
void start_context(Context& c, const Stack& s, void (*entry)()) {
  getcontext(&c.uc);
  c.uc.uc_stack.ss_sp = s.bottom();
  c.uc.uc_stack.ss_size = s.size();
  c.uc.uc_link = nullptr;
  makecontext(&c.uc, entry, 0);
}
void switch_context(Context& from, Context& to) { swapcontext(&from.uc, &to.uc); }
#endif

struct Barrier {
  int arrived = 0;
  uint64_t generation = 0;
};

// A cp.async copy that waits for its thread's wait_group.
struct AsyncCopy {
  void* dst;
  const void* src;
  size_t bytes, src_bytes;
};

struct Fiber {
  Context context;
  ThreadCoords coords;
  int lane = 0, warp = 0;
  bool started = false, done = false;
  Barrier* waiting = nullptr;  // blocked until waiting->generation != wait_generation
  uint64_t wait_generation = 0;
  uint64_t shuffles = 0;  // shuffles made: which exchange slots the next one uses
  void* fake_stack = nullptr;
  std::vector<AsyncCopy> async_open;                // issued since the last commit
  std::vector<std::vector<AsyncCopy>> async_groups;  // committed, not yet waited for, oldest first
};

struct Warp {
  Barrier barrier;
  int threads = 0;
  uint32_t values[2][32];
  Site sites[2][32];
};

// The block being run.
struct Block {
  const char* kernel = "";
  std::vector<Fiber> fibers;
  std::vector<Warp> warps;
  Barrier barrier;
  int live = 0;
  Fiber* current = nullptr;
  std::unique_ptr<unsigned char[]> shared;
  const std::function<void()>* body = nullptr;
  std::string failure;  // set by a fiber: the block stops
  bool reverse = false;  // threads in decreasing order
  int position = 0;      // of the running fiber, in that order
  Context scheduler;
  const void* scheduler_stack = nullptr;
  size_t scheduler_stack_size = 0;
};

std::vector<std::unique_ptr<Stack>>& stacks() {
  static std::vector<std::unique_ptr<Stack>> s;
  return s;
}
Block* g_block = nullptr;

std::string dims(uint3 d) {
  std::string s(1, '(');
  s += std::to_string(d.x) + ',' + std::to_string(d.y) + ',' + std::to_string(d.z) + ')';
  return s;
}
std::string dims(dim3 d) { return dims(uint3{d.x, d.y, d.z}); }

// "kernel block (x,y,z)", and " thread t" for a fiber.
std::string block_name(const Block& b) {
  return std::string(b.kernel) + " block " + dims(b.fibers[0].coords.block_idx);
}
std::string where(const Fiber& f) {
  return block_name(*g_block) + " thread " + std::to_string(f.coords.thread_idx.x);
}

void fiber_main();

// Control passes from fiber to fiber directly: one that waits or exits switches to the next
// one in the block's order (increasing or decreasing thread index, from its own place) that can
// run, and to the scheduler only when there is none: then the block has finished, or cannot.

Fiber& fiber_at(Block& b, int position) {
  const int n = int(b.fibers.size());
  return b.fibers[size_t(b.reverse ? n - 1 - position : position)];
}

// The next fiber after the current position that can run (its position becomes current), or
// nullptr.
[[gnu::always_inline]] inline Fiber* pick_next(Block& b) {
  const int n = int(b.fibers.size());
  for (int k = 1; k <= n; ++k) {
    const int position = (b.position + k) % n;
    Fiber& f = fiber_at(b, position);
    if (f.done) continue;
    if (f.waiting) {
      if (f.waiting->generation == f.wait_generation) continue;
      f.waiting = nullptr;
    }
    b.position = position;
    return &f;
  }
  return nullptr;
}

const Stack& stack_of(Block& b, const Fiber& f) { return *stacks()[size_t(&f - b.fibers.data())]; }

// Leaves `from` (the scheduler's context when null; a fiber that has exited when `dying`) for
// fiber `to` (the scheduler when null); returns when `from` is resumed.
[[gnu::always_inline]] inline void switch_to(Block& b, Fiber* from, Fiber* to, bool dying = false) {
  Context& from_context = from ? from->context : b.scheduler;
  void* scheduler_fake = nullptr;
  void** save = from ? (dying ? nullptr : &from->fake_stack) : &scheduler_fake;
  if (to && !to->started) {
    to->started = true;
    start_context(to->context, stack_of(b, *to), fiber_main);
  }
  b.current = to;
#if defined(GALLEON_HOST_ASAN)
  if (to)
    __sanitizer_start_switch_fiber(save, stack_of(b, *to).bottom(), stack_of(b, *to).size());
  else
    __sanitizer_start_switch_fiber(save, b.scheduler_stack, b.scheduler_stack_size);
#endif
  switch_context(from_context, to ? to->context : b.scheduler);
  if (dying) std::abort();  // an exited fiber is never resumed
#if defined(GALLEON_HOST_ASAN)
  __sanitizer_finish_switch_fiber(*save, nullptr, nullptr);
#endif
  (void)save;
  b.current = from;
}

// The running fiber waits, or has exited: another runs.
[[gnu::always_inline]] inline void yield(bool exited) {
  Block& b = *g_block;
  Fiber* self = b.current;
  Fiber* next = b.failure.empty() ? pick_next(b) : nullptr;
  switch_to(b, self, next, exited);
}

void fiber_main() {
  Block& b = *g_block;
#if defined(GALLEON_HOST_ASAN)
  const void* bottom = nullptr;
  size_t size = 0;
  __sanitizer_finish_switch_fiber(nullptr, &bottom, &size);
  if (!b.scheduler_stack) {  // the first fiber is entered from the scheduler
    b.scheduler_stack = bottom;
    b.scheduler_stack_size = size;
  }
#endif
  try {
    (*b.body)();
  } catch (const std::exception& e) {
    if (b.failure.empty()) b.failure = where(*b.current) + ": " + e.what();
  } catch (...) {
    if (b.failure.empty()) b.failure = where(*b.current) + ": the kernel threw an exception";
  }
  Fiber& f = *b.current;
  f.done = true;
  --b.live;
  // Exited threads no longer count at __syncthreads().
  if (b.barrier.arrived > 0 && b.barrier.arrived == b.live) {
    b.barrier.arrived = 0;
    ++b.barrier.generation;
  }
  yield(true);
}

// Waits until `expected` threads have arrived at `bar` (the caller among them).
[[gnu::always_inline]] inline void arrive(Barrier& bar, int expected) {
  if (++bar.arrived >= expected) {
    bar.arrived = 0;
    ++bar.generation;
    return;
  }
  Fiber& f = *g_block->current;
  f.waiting = &bar;
  f.wait_generation = bar.generation;
  yield(false);
}

// Stops the block (from a fiber): why. The fiber's stack is abandoned, so nothing on it may own
// memory: the message is moved out.
[[noreturn]] void fail_block(std::string why) {
  Block& b = *g_block;
  b.failure = std::move(why);
  switch_to(b, b.current, nullptr);
  std::abort();  // a failed block is never resumed
}

std::string stuck(const Block& b) {
  int at_block = 0, at_warp = 0, done = 0;
  for (const Fiber& f : b.fibers) {
    if (f.done) ++done;
    else if (f.waiting == &b.barrier) ++at_block;
    else ++at_warp;
  }
  return std::to_string(at_block) + " threads wait at __syncthreads(), " + std::to_string(at_warp) +
         " at a warp shuffle, " + std::to_string(done) + " have exited";
}

// Runs one block; false (with *why) when it cannot finish.
bool run_block(Block& b, std::string* why) {
  b.position = int(b.fibers.size()) - 1;  // the first fiber picked is position 0
  if (Fiber* first = pick_next(b)) switch_to(b, nullptr, first);
  if (!b.failure.empty()) {
    *why = b.failure;
    return false;
  }
  if (b.live > 0) {
    *why = block_name(b) + ": a barrier that cannot complete: " + stuck(b);
    return false;
  }
  return true;
}

// ---------------------------------------------------------------- kernels


// The dynamic shared memory limits cudaFuncSetAttribute set, per kernel.
struct SharedLimits {
  std::mutex mu;
  std::map<const void*, size_t> by_kernel;
};
SharedLimits& shared_limits() {
  static SharedLimits l;
  return l;
}
size_t dynamic_shared_limit(const void* kernel) {
  SharedLimits& l = shared_limits();
  std::lock_guard<std::mutex> lock(l.mu);
  const auto it = l.by_kernel.find(kernel);
  return it == l.by_kernel.end() ? kDynamicSharedLimit : it->second;
}

bool valid_config(dim3 grid, dim3 block, size_t shared_bytes, const char* name,
                  const void* kernel) {
  const uint64_t threads = uint64_t(block.x) * block.y * block.z;
  if (grid.x == 0 || grid.y == 0 || grid.z == 0 || grid.x > 0x7fffffffu || grid.y > 65535 ||
      grid.z > 65535 || threads == 0 || threads > kMaxThreads || block.z > 64) {
    launch_error(cudaErrorInvalidConfiguration,
                 std::string("invalid configuration argument: ") + name + " grid " + dims(grid) +
                     " block " + dims(block));
    return false;
  }
  if (const size_t limit = dynamic_shared_limit(kernel); shared_bytes > limit) {
    launch_error(cudaErrorInvalidValue, std::string("invalid argument: ") + name + " asks for " +
                                            std::to_string(shared_bytes) +
                                            " bytes of dynamic shared memory (at most " +
                                            std::to_string(limit) + ")");
    return false;
  }
  return true;
}

// Block block_idx of the launch, threads in increasing order or (`reverse`) decreasing; false
// (with *why) when it cannot finish.
bool run_one_block(dim3 grid, dim3 block, uint3 block_idx, size_t shared_bytes, const char* name,
                   const std::function<void()>& body, bool reverse, std::string* why) {
  const int threads = int(block.x * block.y * block.z);
  Block b;
  b.kernel = name;
  b.body = &body;
  b.reverse = reverse;
  b.fibers.resize(size_t(threads));
  b.warps.resize(size_t((threads + 31) / 32));
  for (int t = 0; t < threads; ++t) {
    Fiber& f = b.fibers[size_t(t)];
    f.coords.thread_idx = {unsigned(t) % block.x, unsigned(t) / block.x % block.y,
                           unsigned(t) / (block.x * block.y)};
    f.coords.block_idx = block_idx;
    f.coords.block_dim = block;
    f.coords.grid_dim = grid;
    f.lane = t % 32;
    f.warp = t / 32;
    ++b.warps[size_t(f.warp)].threads;
  }
  b.live = threads;
  b.shared.reset(new unsigned char[shared_bytes > 0 ? shared_bytes : 1]);
  std::memset(b.shared.get(), 0xff, shared_bytes);
  g_block = &b;
  const bool ok = run_block(b, why);
  g_block = nullptr;
  return ok;
}

void run_kernel(dim3 grid, dim3 block, size_t shared_bytes, const char* name,
                const std::function<void()>& body) {
  if (errors().sticky != cudaSuccess) return;
  const size_t threads = size_t(block.x) * block.y * block.z;
  while (stacks().size() < threads) stacks().push_back(std::make_unique<Stack>(stacks().size()));
  uint64_t index = 0;
  for (unsigned bz = 0; bz < grid.z; ++bz)
    for (unsigned by = 0; by < grid.y; ++by)
      for (unsigned bx = 0; bx < grid.x; ++bx, ++index) {
        std::string why;
        if (!run_one_block(grid, block, {bx, by, bz}, shared_bytes, name, body, index % 2 == 1,
                           &why)) {
          fault(why);
          return;
        }
      }
}

// ---------------------------------------------------------------- streams and graphs

using Op = std::function<void()>;

struct Capture {
  bool active = false, invalidated = false;
  std::vector<Op> ops;
};

}  // namespace
}  // namespace cuda_host

struct CUstream_st {
  cuda_host::Capture capture;
};
struct CUevent_st {
  std::chrono::steady_clock::time_point at;
};
struct CUgraph_st {
  std::vector<cuda_host::Op> ops;
};
struct CUgraphExec_st {
  std::vector<cuda_host::Op> ops;
};

namespace cuda_host {
namespace {

std::vector<CUstream_st*>& live_streams() {
  static std::vector<CUstream_st*> s;
  return s;
}

// A stream call: recorded while the stream captures, else run now.
void submit(cudaStream_t st, Op op) {
  if (st && st->capture.active) {
    st->capture.ops.push_back(std::move(op));
    return;
  }
  op();
}

// Synchronous calls are not allowed while a stream captures: the capture is invalidated.
bool capture_forbids(const char* call) {
  for (CUstream_st* s : live_streams())
    if (s->capture.active) {
      s->capture.invalidated = true;
      launch_error(cudaErrorStreamCaptureUnsupported,
                   std::string(call) + " while a stream is being captured");
      return true;
    }
  return false;
}

cudaError_t status() { return errors().sticky; }

}  // namespace

const ThreadCoords& coords() { return g_block->current->coords; }

void launch(dim3 grid, dim3 block, size_t shared_bytes, cudaStream_t st, const char* name,
            const void* kernel, std::function<void()> body) {
  if (!valid_config(grid, block, shared_bytes, name, kernel)) return;
  submit(st, [grid, block, shared_bytes, name, body = std::move(body)]() {
    run_kernel(grid, block, shared_bytes, name, body);
  });
}

cudaError_t set_func_attribute(const void* kernel, cudaFuncAttribute attr, int value) {
  if (kernel == nullptr || attr != cudaFuncAttributeMaxDynamicSharedMemorySize || value < 0 ||
      value > kSharedOptin)
    return cudaErrorInvalidValue;
  SharedLimits& l = shared_limits();
  std::lock_guard<std::mutex> lock(l.mu);
  l.by_kernel[kernel] = size_t(value);
  return cudaSuccess;
}

void sync_block() {
  Block& b = *g_block;
  arrive(b.barrier, b.live);
}

void* dynamic_shared() { return g_block->shared.get(); }

void async_copy(void* shared_dst, const void* global_src, size_t bytes, size_t src_bytes) {
  Fiber& f = *g_block->current;
  const auto misaligned = [bytes](const void* p) {
    return reinterpret_cast<uintptr_t>(p) % bytes != 0;
  };
  if ((bytes != 4 && bytes != 8 && bytes != 16) || misaligned(shared_dst) ||
      misaligned(global_src) || src_bytes > bytes)
    fail_block(where(f) + ": a cp.async of " + std::to_string(bytes) + " bytes (" +
               std::to_string(src_bytes) +
               " read) between addresses not aligned to it (4, 8 or 16 bytes, aligned; at most "
               "that many read)");
  f.async_open.push_back({shared_dst, global_src, bytes, src_bytes});
}

void async_commit() {
  Fiber& f = *g_block->current;
  f.async_groups.push_back(std::move(f.async_open));
  f.async_open.clear();
}

void async_wait(int pending) {
  Fiber& f = *g_block->current;
  const size_t keep = size_t(pending > 0 ? pending : 0);
  if (f.async_groups.size() <= keep) return;
  const size_t done = f.async_groups.size() - keep;
  for (size_t g = 0; g < done; ++g)
    for (const AsyncCopy& c : f.async_groups[g]) {
      std::memcpy(c.dst, c.src, c.src_bytes);
      std::memset(static_cast<unsigned char*>(c.dst) + c.src_bytes, 0, c.bytes - c.src_bytes);
    }
  f.async_groups.erase(f.async_groups.begin(), f.async_groups.begin() + ptrdiff_t(done));
}

namespace {

[[noreturn, gnu::noinline, gnu::cold]] void fail_partial_shuffle(unsigned mask, int width,
                                                                 int threads) {
  fail_block(where(*g_block->current) + ": a shuffle with mask " + std::to_string(mask) +
             ", width " + std::to_string(width) + " in a warp of " + std::to_string(threads) +
             " threads (only whole warps are emulated)");
}

[[noreturn, gnu::noinline, gnu::cold]] void fail_sites(const Site& mine, const Site& first) {
  const Fiber& f = *g_block->current;
  fail_block(where(f) + ": the lanes of warp " + std::to_string(f.warp) +
             " met at different shuffles: " + mine.file + ":" + std::to_string(mine.line) +
             ", and lane 0 at " + first.file + ":" + std::to_string(first.line));
}

}  // namespace

uint32_t shuffle(unsigned mask, uint32_t bits, int kind, int arg, int width, Site site) {
  Block& b = *g_block;
  Fiber& f = *b.current;
  Warp& w = b.warps[size_t(f.warp)];
  if (mask != 0xffffffffu || width != 32 || w.threads != 32)
    fail_partial_shuffle(mask, width, w.threads);
  const int slot = int(f.shuffles++ & 1);
  w.values[slot][f.lane] = bits;
  w.sites[slot][f.lane] = site;
  arrive(w.barrier, 32);
  // Each lane compares its site with lane 0's: together, every lane's.
  const Site& first = w.sites[slot][0];
  if (first.line != site.line || (first.file != site.file && std::strcmp(first.file, site.file)))
    fail_sites(site, first);
  int src = f.lane;
  if (kind == 0) src = arg & 31;
  else if (kind == 1) src = f.lane ^ (arg & 31);
  else if (f.lane + arg < 32) src = f.lane + arg;
  return w.values[slot][src];
}

}  // namespace cuda_host

using cuda_host::errors;

const char* cudaGetErrorString(cudaError_t e) {
  if (e == errors().sticky && e != cudaSuccess) return errors().sticky_text.c_str();
  if (e == errors().last && e != cudaSuccess) return errors().last_text.c_str();
  switch (e) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorInvalidDevice: return "invalid device ordinal";
    case cudaErrorNoDevice: return "no CUDA-capable device is detected";
    case cudaErrorLaunchFailure: return "unspecified launch failure";
    default: return "CUDA error (host runtime)";
  }
}

const char* cudaGetErrorName(cudaError_t e) {
  switch (e) {
    case cudaSuccess: return "cudaSuccess";
    case cudaErrorInvalidValue: return "cudaErrorInvalidValue";
    case cudaErrorMemoryAllocation: return "cudaErrorMemoryAllocation";
    case cudaErrorInvalidConfiguration: return "cudaErrorInvalidConfiguration";
    case cudaErrorInvalidDevice: return "cudaErrorInvalidDevice";
    case cudaErrorNoDevice: return "cudaErrorNoDevice";
    case cudaErrorLaunchFailure: return "cudaErrorLaunchFailure";
    case cudaErrorStreamCaptureUnsupported: return "cudaErrorStreamCaptureUnsupported";
    case cudaErrorStreamCaptureInvalidated: return "cudaErrorStreamCaptureInvalidated";
    default: return "cudaError (host runtime)";
  }
}

cudaError_t cudaGetLastError() {
  cuda_host::ErrorState& e = errors();
  if (e.sticky != cudaSuccess) return e.sticky;
  const cudaError_t r = e.last;
  e.last = cudaSuccess;
  return r;
}

// One device; none (cudaErrorNoDevice, as without a GPU) when GALLEON_CUDA_HOST_DEVICES=0.
cudaError_t cudaGetDeviceCount(int* count) {
  const char* e = std::getenv("GALLEON_CUDA_HOST_DEVICES");
  *count = e && std::string(e) == "0" ? 0 : 1;
  return *count ? cudaSuccess : cudaErrorNoDevice;
}
cudaError_t cudaSetDevice(int device) { return device == 0 ? cudaSuccess : cudaErrorInvalidDevice; }
cudaError_t cudaGetDevice(int* device) {
  *device = 0;
  return cudaSuccess;
}
// An sm_90 device (the tensor-core paths are taken).
cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr attr, int device) {
  if (device != 0) return cudaErrorInvalidDevice;
  switch (attr) {
    case cudaDevAttrComputeCapabilityMajor: *value = 9; return cudaSuccess;
    case cudaDevAttrMaxSharedMemoryPerMultiprocessor: *value = cuda_host::kSharedPerSm; return cudaSuccess;
    case cudaDevAttrMaxSharedMemoryPerBlockOptin: *value = cuda_host::kSharedOptin; return cudaSuccess;
  }
  return cudaErrorInvalidValue;
}

cudaError_t cudaDeviceSynchronize() {
  if (cuda_host::capture_forbids("cudaDeviceSynchronize")) return cudaErrorStreamCaptureUnsupported;
  return cuda_host::status();
}

cudaError_t cudaDeviceReset() {
  errors() = cuda_host::ErrorState{};
  return cudaSuccess;
}

namespace {
// The device memory in use (each allocation's size) and its capacity.
struct DeviceMemory {
  std::mutex mutex;
  std::unordered_map<void*, size_t> sizes;
  size_t used = 0;
  size_t capacity() const {
    const char* e = std::getenv("CUDA_HOST_MEMORY_MIB");
    const unsigned long long mib = e && *e ? std::strtoull(e, nullptr, 10) : 65536;
    return size_t(mib) << 20;
  }
};
DeviceMemory& device_memory() {
  static DeviceMemory m;
  return m;
}
}  // namespace

cudaError_t cudaMalloc(void** p, size_t bytes) {
  DeviceMemory& dm = device_memory();
  std::lock_guard<std::mutex> lock(dm.mutex);
  if (bytes > dm.capacity() - std::min(dm.used, dm.capacity())) return cudaErrorMemoryAllocation;
  void* m = nullptr;
  if (posix_memalign(&m, 256, bytes > 0 ? bytes : 1) != 0) return cudaErrorMemoryAllocation;
  std::memset(m, 0xff, bytes);  // NaN: uninitialised device memory shows in the results
  dm.sizes[m] = bytes;
  dm.used += bytes;
  *p = m;
  return cudaSuccess;
}
cudaError_t cudaFree(void* p) {
  DeviceMemory& dm = device_memory();
  std::lock_guard<std::mutex> lock(dm.mutex);
  const auto it = dm.sizes.find(p);
  if (it != dm.sizes.end()) {
    dm.used -= it->second;
    dm.sizes.erase(it);
  }
  std::free(p);
  return cudaSuccess;
}
cudaError_t cudaMallocHost(void** p, size_t bytes) {
  void* m = nullptr;
  if (posix_memalign(&m, 256, bytes > 0 ? bytes : 1) != 0) return cudaErrorMemoryAllocation;
  *p = m;
  return cudaSuccess;
}
cudaError_t cudaFreeHost(void* p) {
  std::free(p);
  return cudaSuccess;
}
cudaError_t cudaMemGetInfo(size_t* free, size_t* total) {
  DeviceMemory& dm = device_memory();
  std::lock_guard<std::mutex> lock(dm.mutex);
  *total = dm.capacity();
  *free = *total - std::min(dm.used, *total);
  return cudaSuccess;
}

cudaError_t cudaMemcpy(void* dst, const void* src, size_t bytes, cudaMemcpyKind) {
  if (cuda_host::capture_forbids("cudaMemcpy")) return cudaErrorStreamCaptureUnsupported;
  if (cuda_host::status() != cudaSuccess) return cuda_host::status();
  std::memcpy(dst, src, bytes);
  return cudaSuccess;
}
cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t bytes, cudaMemcpyKind,
                            cudaStream_t st) {
  if (cuda_host::status() != cudaSuccess) return cuda_host::status();
  cuda_host::submit(st, [dst, src, bytes]() {
    if (cuda_host::status() == cudaSuccess) std::memcpy(dst, src, bytes);
  });
  return cudaSuccess;
}

cudaError_t cudaStreamCreate(cudaStream_t* st) {
  *st = new CUstream_st;
  cuda_host::live_streams().push_back(*st);
  return cudaSuccess;
}
cudaError_t cudaStreamDestroy(cudaStream_t st) {
  auto& s = cuda_host::live_streams();
  for (size_t i = 0; i < s.size(); ++i)
    if (s[i] == st) s.erase(s.begin() + long(i));
  delete st;
  return cudaSuccess;
}
cudaError_t cudaStreamSynchronize(cudaStream_t st) {
  if (st && st->capture.active) {
    st->capture.invalidated = true;
    return cudaErrorStreamCaptureUnsupported;
  }
  return cuda_host::status();
}
cudaError_t cudaStreamBeginCapture(cudaStream_t st, cudaStreamCaptureMode) {
  if (!st || st->capture.active) return cudaErrorInvalidValue;
  st->capture = cuda_host::Capture{};
  st->capture.active = true;
  return cudaSuccess;
}
cudaError_t cudaStreamEndCapture(cudaStream_t st, cudaGraph_t* graph) {
  if (!st || !st->capture.active) return cudaErrorInvalidValue;
  cuda_host::Capture c = std::move(st->capture);
  st->capture = cuda_host::Capture{};
  *graph = nullptr;
  if (c.invalidated) return cudaErrorStreamCaptureInvalidated;
  *graph = new CUgraph_st{std::move(c.ops)};
  return cudaSuccess;
}
cudaError_t cudaStreamIsCapturing(cudaStream_t st, cudaStreamCaptureStatus* status) {
  *status = st && st->capture.active
                ? (st->capture.invalidated ? cudaStreamCaptureStatusInvalidated
                                           : cudaStreamCaptureStatusActive)
                : cudaStreamCaptureStatusNone;
  return cudaSuccess;
}
cudaError_t cudaGraphInstantiate(cudaGraphExec_t* exec, cudaGraph_t graph, unsigned long long) {
  if (!graph) return cudaErrorInvalidValue;
  *exec = new CUgraphExec_st{graph->ops};
  return cudaSuccess;
}
cudaError_t cudaGraphDestroy(cudaGraph_t graph) {
  delete graph;
  return cudaSuccess;
}
cudaError_t cudaGraphExecDestroy(cudaGraphExec_t exec) {
  delete exec;
  return cudaSuccess;
}
cudaError_t cudaGraphLaunch(cudaGraphExec_t exec, cudaStream_t st) {
  if (!exec) return cudaErrorInvalidValue;
  if (cuda_host::status() != cudaSuccess) return cuda_host::status();
  const std::vector<cuda_host::Op> ops = exec->ops;
  cuda_host::submit(st, [ops]() {
    for (const cuda_host::Op& op : ops) op();
  });
  return cudaSuccess;
}

cudaError_t cudaEventCreate(cudaEvent_t* ev) {
  *ev = new CUevent_st;
  return cudaSuccess;
}
cudaError_t cudaEventDestroy(cudaEvent_t ev) {
  delete ev;
  return cudaSuccess;
}
cudaError_t cudaEventRecord(cudaEvent_t ev, cudaStream_t st) {
  cuda_host::submit(st, [ev]() { ev->at = std::chrono::steady_clock::now(); });
  return cudaSuccess;
}
cudaError_t cudaEventSynchronize(cudaEvent_t) { return cuda_host::status(); }
cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t start, cudaEvent_t stop) {
  *ms = std::chrono::duration<float, std::milli>(stop->at - start->at).count();
  return cudaSuccess;
}
