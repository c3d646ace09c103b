#include "runtime/threadpool.h"

#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <climits>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define GALLEON_PAUSE() _mm_pause()
#else
#define GALLEON_PAUSE() std::this_thread::yield()
#endif

namespace galleon {
namespace {

// Busy-wait briefly (a few microseconds) before sleeping: long spins starve descheduled
// threads when there are more threads than cores.
constexpr int kSpinIterations = 4000;

static_assert(sizeof(std::atomic<uint32_t>) == sizeof(uint32_t));

// Sleeps while *word == expected (returns at once otherwise, or spuriously).
void futex_wait(std::atomic<uint32_t>& word, uint32_t expected) {
  syscall(SYS_futex, reinterpret_cast<uint32_t*>(&word), FUTEX_WAIT_PRIVATE, expected, nullptr,
          nullptr, 0);
}

void futex_wake_all(std::atomic<uint32_t>& word) {
  syscall(SYS_futex, reinterpret_cast<uint32_t*>(&word), FUTEX_WAKE_PRIVATE, INT_MAX, nullptr,
          nullptr, 0);
}

// Waits until word != value: spin first, then sleep, counted in `sleepers` so that wakers
// can skip the system call when nobody sleeps. Both sides use sequentially consistent order:
// a waker stores the word then reads sleepers; a sleeper increments sleepers then reads the
// word, so at least one of them sees the other.
void wait_while_equal(std::atomic<uint32_t>& word, uint32_t value, std::atomic<uint32_t>& sleepers) {
  for (int spins = 0; spins < kSpinIterations; ++spins) {
    if (word.load(std::memory_order_acquire) != value) return;
    GALLEON_PAUSE();
  }
  sleepers.fetch_add(1, std::memory_order_seq_cst);
  while (word.load(std::memory_order_seq_cst) == value) futex_wait(word, value);
  sleepers.fetch_sub(1, std::memory_order_seq_cst);
}

void wake_all_sleepers(std::atomic<uint32_t>& word, std::atomic<uint32_t>& sleepers) {
  if (sleepers.load(std::memory_order_seq_cst) != 0) futex_wake_all(word);
}

}  // namespace

ThreadPool::ThreadPool(int n_threads)
    : n_threads_(n_threads < 1 ? 1 : n_threads), segments_(size_t(n_threads_)) {
  for (int i = 1; i < n_threads_; ++i) workers_.emplace_back([this, i] { worker_loop(i); });
}

ThreadPool::~ThreadPool() {
  stop_.store(true, std::memory_order_release);
  generation_.fetch_add(1, std::memory_order_seq_cst);
  futex_wake_all(generation_);
  for (auto& t : workers_) t.join();
}

// A task of the segment, from its front or its back; -1 when it is empty.
int64_t ThreadPool::claim(Segment& seg, bool front) {
  uint64_t r = seg.range.load(std::memory_order_relaxed);
  for (;;) {
    const uint64_t lo = r & 0xffffffffu, hi = r >> 32;
    if (lo >= hi) return -1;
    const uint64_t next = front ? (lo + 1) | (hi << 32) : lo | ((hi - 1) << 32);
    if (seg.range.compare_exchange_weak(r, next, std::memory_order_relaxed))
      return int64_t(front ? lo : hi - 1);
  }
}

void ThreadPool::run_tasks(int self) {
  for (int64_t t; (t = claim(segments_[size_t(self)], true)) >= 0;) (*fn_)(t);
  for (int k = 1; k < n_threads_; ++k) {
    Segment& other = segments_[size_t((self + k) % n_threads_)];
    for (int64_t t; (t = claim(other, false)) >= 0;) (*fn_)(t);
  }
}

void ThreadPool::worker_loop(int self) {
  uint32_t seen = 0;
  for (;;) {
    wait_while_equal(generation_, seen, gen_sleepers_);
    seen = generation_.load(std::memory_order_acquire);
    if (stop_.load(std::memory_order_acquire)) return;
    run_tasks(self);
    if (pending_.fetch_sub(1, std::memory_order_seq_cst) == 1) wake_all_sleepers(pending_, pending_sleepers_);
  }
}

void ThreadPool::parallel_for(int64_t n_tasks, const std::function<void(int64_t)>& fn) {
  if (n_tasks <= 0) return;
  if (workers_.empty() || n_tasks == 1 || n_tasks > int64_t(0xffffffff)) {
    for (int64_t t = 0; t < n_tasks; ++t) fn(t);
    return;
  }
  fn_ = &fn;
  const uint64_t n = uint64_t(n_tasks), threads = uint64_t(n_threads_);
  for (uint64_t i = 0; i < threads; ++i)  // [n * i / threads, n * (i + 1) / threads)
    segments_[i].range.store((n * i / threads) | ((n * (i + 1) / threads) << 32),
                             std::memory_order_relaxed);
  pending_.store(uint32_t(workers_.size()), std::memory_order_relaxed);
  generation_.fetch_add(1, std::memory_order_seq_cst);  // publishes the fields above
  wake_all_sleepers(generation_, gen_sleepers_);
  run_tasks(0);
  for (uint32_t left; (left = pending_.load(std::memory_order_acquire)) != 0;)
    wait_while_equal(pending_, left, pending_sleepers_);
  fn_ = nullptr;
}

}  // namespace galleon
