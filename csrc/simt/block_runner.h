// Runs the blocks of a launch on the calling OS thread, one at a time: every CUDA thread of the
// block is a fiber; the scheduler switches to the next ready fiber whenever one reaches a barrier
// or a warp exchange, releasing each barrier's waiters in an order that varies from one barrier
// to the next (forward, reverse, shuffled), so a missing barrier changes results. Threads of a
// block run concurrently with other blocks' (other OS threads), never with each other.
#pragma once

#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "device.h"
#include "fiber.h"
#include "runtime.h"

namespace fastclip {
namespace simt {

class GridBarrier;

// How BlockRunner::run's failure starts when another block broke the grid barrier.
inline constexpr const char* kGridSyncFailed = "grid_sync failed: ";

// What a thread is doing when it switches back to the scheduler.
enum class ThreadState : uint8_t { kReady, kAtBlockBarrier, kAtWarpBarrier, kAtGridBarrier, kExited, kFailed };

class BlockRunner;

struct SimtThread {
  ThreadCoordinates coordinates;  // first: tl_running_thread points here
  BlockRunner* runner = nullptr;
  Fiber fiber;
  int warp = 0;
  int lane = 0;
  std::atomic<ThreadState> state{ThreadState::kReady};
  std::string error;  // set by the thread before it ends in kFailed
};

struct SimtWarp {
  std::atomic<uint64_t> slots[2][32];  // double-buffered: one barrier per exchange
  std::atomic<int> phase{0};           // flipped by the scheduler as each exchange completes
  unsigned lanes = 0;                  // the lanes that exist (all 32 but in a block's last, partial warp)
  std::vector<int> waiting;            // scheduler only
  // Addresses for ThreadSanitizer's happens-before at __syncwarp, one per phase: a lane's
  // release at the next __syncwarp must not reach a lane still acquiring from this one.
  char sync[2] = {0, 0};
};

class BlockRunner {
 public:
  // order_seed picks the first release order and seeds the shuffles: launches vary it. The
  // threads' ThreadSanitizer fibers are lent by tsan_fibers, and given back when the runner ends.
  BlockRunner(const LaunchShape& shape, const std::function<void()>& body, GridBarrier* grid, uint64_t order_seed,
              TsanFiberPool* tsan_fibers);
  ~BlockRunner();

  // Runs block `index` to completion. Returns "" or what went wrong.
  std::string run(unsigned index);

  // Fiber side (device.h's functions).
  void block_barrier(SimtThread* me);
  void warp_barrier(SimtThread* me, unsigned mask);
  void warp_exchange(SimtThread* me, unsigned mask, uint64_t value, uint64_t all_lanes[32]);
  void grid_barrier(SimtThread* me);

 private:
  static void thread_main(void* thread);
  void switch_to_scheduler(SimtThread* me, ThreadState state);
  void release(std::vector<int>& waiters, uint64_t& releases);
  void complete_barriers(int warp);
  std::string describe_stuck_threads() const;

  LaunchShape shape_;
  const std::function<void()>* body_;
  GridBarrier* grid_;
  TsanFiberPool* tsan_fibers_;
  bool failed_ = false;  // a run failed: its threads' fibers were abandoned mid-run
  BlockCoordinates coordinates_;
  std::vector<FiberStack> stacks_;
  std::unique_ptr<SimtThread[]> threads_;
  std::unique_ptr<SimtWarp[]> warps_;
  int num_warps_;
  Fiber scheduler_;
  int live_ = 0;
  std::deque<int> ready_;
  std::vector<int> at_block_barrier_, at_grid_barrier_;
  // Counts of releases, one per barrier kind, each picking the next release order: with one
  // count, a kernel's warp exchanges between two __syncthreads could make every block barrier
  // release in the same order.
  uint64_t block_releases_ = 0, warp_releases_ = 0;
  std::mt19937 shuffle_;
  // Addresses for ThreadSanitizer's happens-before edges, alternating by the barrier's
  // generation (its parity, read by each thread before it switches away): a block's threads run
  // one at a time, each until its next barrier, so with one address a thread's release at
  // barrier k+1 would reach a thread that acquires on resuming from barrier k, ordering their
  // shared phase and hiding its races. The phases and counts are written by the scheduler and
  // read by the threads (atomics: the switches between them do not synchronize).
  std::atomic<int> block_phase_{0};
  char block_barrier_sync_[2] = {0, 0};
  std::atomic<uint64_t> grid_syncs_{0};  // completed grid barriers of the running block
};

}  // namespace simt
}  // namespace fastclip
