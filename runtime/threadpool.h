// A persistent pool of worker threads. parallel_for hands out task indices; which thread runs a
// task never changes a result (kernels split output rows, never a reduction).
// The tasks are split into one contiguous segment per thread: a thread runs its own segment
// front to back (consecutive tasks are adjacent rows: one sequential stream for the hardware
// prefetchers), then takes tasks from the back of the other segments until none is left.
// Workers spin briefly, then sleep on a futex (Linux); no condition variables.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <thread>
#include <vector>

namespace galleon {

class ThreadPool {
 public:
  explicit ThreadPool(int n_threads);  // n_threads >= 1; the caller is thread 0
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const { return n_threads_; }
  // Runs fn(task) for task in [0, n_tasks) across the threads and waits for all of them.
  void parallel_for(int64_t n_tasks, const std::function<void(int64_t task)>& fn);

 private:
  // Tasks [front, back) of a segment, packed as front | back << 32 so that the owner (taking
  // from the front) and thieves (from the back) claim with one compare-and-swap.
  struct alignas(64) Segment {
    std::atomic<uint64_t> range{0};
  };
  void worker_loop(int self);
  void run_tasks(int self);
  static int64_t claim(Segment& seg, bool front);

  int n_threads_;
  std::vector<std::thread> workers_;
  std::atomic<uint32_t> generation_{0};  // bumped to start work; futex word for workers
  std::atomic<uint32_t> pending_{0};     // workers still busy; futex word for the caller
  std::atomic<uint32_t> gen_sleepers_{0};      // threads asleep on generation_
  std::atomic<uint32_t> pending_sleepers_{0};  // threads asleep on pending_
  std::atomic<bool> stop_{false};
  const std::function<void(int64_t)>* fn_ = nullptr;
  std::vector<Segment> segments_;  // one per thread
};

}  // namespace galleon
