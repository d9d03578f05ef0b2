#include "block_runner.h"

#include <algorithm>
#include <bit>
#include <stdexcept>

#include "grid_barrier.h"
#include "sanitizers.h"

namespace fastclip {
namespace simt {

__thread const ThreadCoordinates* tl_running_thread = nullptr;

namespace {

void set_running(const SimtThread* thread) {
  __atomic_store_n(&tl_running_thread, thread ? &thread->coordinates : nullptr, __ATOMIC_RELAXED);
}

SimtThread* running_simt_thread(const char* what) {
  const ThreadCoordinates* t = __atomic_load_n(&tl_running_thread, __ATOMIC_RELAXED);
  if (t == nullptr) fail_outside_kernel(what);
  // coordinates is SimtThread's first member.
  return reinterpret_cast<SimtThread*>(const_cast<ThreadCoordinates*>(t));
}

}  // namespace

void fail_outside_kernel(const char* what) {
  throw std::logic_error(std::string("simt: ") + what + " outside a kernel launched through simt::launch");
}

BlockRunner::BlockRunner(const LaunchShape& shape, const std::function<void()>& body, GridBarrier* grid,
                         uint64_t order_seed, TsanFiberPool* tsan_fibers)
    : shape_(shape),
      body_(&body),
      grid_(grid),
      tsan_fibers_(tsan_fibers),
      threads_(new SimtThread[shape.block]),
      num_warps_(static_cast<int>((shape.block + 31) / 32)),
      block_releases_(order_seed),
      warp_releases_(order_seed),
      shuffle_(static_cast<std::mt19937::result_type>(order_seed)) {
  coordinates_.block_dim = dim3(shape.block, 1, 1);
  coordinates_.grid_dim = dim3(shape.grid, 1, 1);
  warps_.reset(new SimtWarp[num_warps_]);
  stacks_.reserve(shape.block);
  for (unsigned i = 0; i < shape.block; ++i) stacks_.emplace_back();
  adopt_current_thread(&scheduler_);
}

BlockRunner::~BlockRunner() {
  for (unsigned i = 0; i < shape_.block; ++i) destroy_fiber(&threads_[i].fiber, /*reusable=*/!failed_);
  destroy_fiber(&scheduler_, /*reusable=*/true);  // the OS thread's: only its context is freed
  if (failed_) {
    for (FiberStack& stack : stacks_) stack.discard_frames();
  }
}

void BlockRunner::thread_main(void* arg) {
  SimtThread* me = static_cast<SimtThread*>(arg);
  // Before anything is read: the scheduler's setup of the block and of this thread happens
  // before the thread's run (its ThreadSanitizer fiber, lent again from an earlier run, carries
  // no ordering from its creation). A no-op in the AddressSanitizer build, where enter_fiber
  // must come first.
  tsan_acquire(me);
  BlockRunner* runner = me->runner;
  enter_fiber(&runner->scheduler_);
  ThreadState end = ThreadState::kExited;
  try {
    (*runner->body_)();
  } catch (const std::exception& e) {
    me->error = e.what();
    end = ThreadState::kFailed;
  } catch (...) {
    me->error = "a thread threw a non-standard exception";
    end = ThreadState::kFailed;
  }
  me->state.store(end, std::memory_order_relaxed);
  exit_fiber(&me->fiber, &runner->scheduler_, /*synchronize=*/true);
}

// A thread's switches back to the scheduler do not synchronize: only the layer's barriers order
// a block's threads (and a ThreadSanitizer synchronization costs time in the number of fibers,
// while warp shuffles switch often). Its last switch, at exit, does: everything the thread did,
// that switch's own reads of the scheduler's context included, happens before what the
// scheduler does next (the next block, the runner's end, the reuse of its memory). The
// scheduler never passes this on to the block's other threads: its switches to them do not
// synchronize, and the releases they acquire (each thread's own, at its setup) come before any
// of them runs. A failed run's threads left at a barrier are taken over by adopt_history.
void BlockRunner::switch_to_scheduler(SimtThread* me, ThreadState state) {
  me->state.store(state, std::memory_order_relaxed);
  switch_fiber(&me->fiber, &scheduler_, /*synchronize=*/false);
}

void BlockRunner::block_barrier(SimtThread* me) {
  char* const sync = &block_barrier_sync_[block_phase_.load(std::memory_order_relaxed)];
  tsan_release(sync);
  switch_to_scheduler(me, ThreadState::kAtBlockBarrier);
  tsan_acquire(sync);
}

void BlockRunner::warp_exchange(SimtThread* me, unsigned mask, uint64_t value, uint64_t all_lanes[32]) {
  SimtWarp& warp = warps_[me->warp];
  if ((mask & warp.lanes) != warp.lanes) {
    throw std::logic_error("simt: a warp-synchronous call's mask leaves out lanes of the warp (mask " +
                           std::to_string(mask) + ", lanes " + std::to_string(warp.lanes) + "); the layer " +
                           "models only whole-warp calls");
  }
  const int phase = warp.phase.load(std::memory_order_relaxed);
  warp.slots[phase][me->lane].store(value, std::memory_order_relaxed);
  switch_to_scheduler(me, ThreadState::kAtWarpBarrier);
  if (all_lanes != nullptr) {
    for (int lane = 0; lane < 32; ++lane) {
      all_lanes[lane] = (warp.lanes >> lane) & 1u ? warp.slots[phase][lane].load(std::memory_order_relaxed) : value;
    }
  }
}

// Reuses the exchange's barrier; only __syncwarp orders memory (shuffles exchange values).
void BlockRunner::warp_barrier(SimtThread* me, unsigned mask) {
  SimtWarp& warp = warps_[me->warp];
  char* const sync = &warp.sync[warp.phase.load(std::memory_order_relaxed)];
  tsan_release(sync);
  warp_exchange(me, mask, 0, nullptr);
  tsan_acquire(sync);
}

void BlockRunner::grid_barrier(SimtThread* me) {
  if (grid_ == nullptr) throw std::logic_error("simt: grid_sync in a launch that is not cooperative");
  void* const sync = grid_->sync_address(grid_syncs_.load(std::memory_order_relaxed));
  tsan_release(sync);
  switch_to_scheduler(me, ThreadState::kAtGridBarrier);
  tsan_acquire(sync);
}

void BlockRunner::release(std::vector<int>& waiters, uint64_t& releases) {
  switch (releases++ % 3) {
    case 0: break;
    case 1: std::reverse(waiters.begin(), waiters.end()); break;
    default: std::shuffle(waiters.begin(), waiters.end(), shuffle_); break;
  }
  for (int id : waiters) ready_.push_back(id);
  waiters.clear();
}

// Releases the barriers that every live thread involved has reached.
void BlockRunner::complete_barriers(int warp_index) {
  SimtWarp& warp = warps_[warp_index];
  // Strict, as CUDA specifies (not as recent GPUs tolerate): a barrier completes only when every
  // thread of the block (lane of the warp) reaches it; one that exited first makes it divergent.
  const int lanes = std::popcount(warp.lanes);
  if (!warp.waiting.empty() && static_cast<int>(warp.waiting.size()) == lanes) {
    warp.phase.store(warp.phase.load(std::memory_order_relaxed) ^ 1, std::memory_order_relaxed);
    release(warp.waiting, warp_releases_);
  }
  if (!at_block_barrier_.empty() && at_block_barrier_.size() == shape_.block) {
    block_phase_.store(block_phase_.load(std::memory_order_relaxed) ^ 1, std::memory_order_relaxed);
    release(at_block_barrier_, block_releases_);
  }
}

std::string BlockRunner::describe_stuck_threads() const {
  int warp_waiters = 0;
  for (int w = 0; w < num_warps_; ++w) warp_waiters += static_cast<int>(warps_[w].waiting.size());
  return "the threads of block " + std::to_string(coordinates_.block_idx.x) +
         " cannot all reach the same barrier (divergent __syncthreads or warp-synchronous call): " +
         std::to_string(at_block_barrier_.size()) + " wait at __syncthreads, " + std::to_string(warp_waiters) +
         " at a warp exchange, " + std::to_string(at_grid_barrier_.size()) + " at grid_sync, " +
         std::to_string(shape_.block - live_) + " exited";
}

std::string BlockRunner::run(unsigned index) {
  coordinates_.block_idx = uint3{index, 0, 0};
  const int n = static_cast<int>(shape_.block);
  live_ = n;
  ready_.clear();
  at_block_barrier_.clear();
  at_grid_barrier_.clear();
  block_phase_.store(0, std::memory_order_relaxed);
  grid_syncs_.store(0, std::memory_order_relaxed);
  for (int w = 0; w < num_warps_; ++w) {
    const int lanes = std::min(32, n - 32 * w);
    warps_[w].lanes = lanes == 32 ? ~0u : (1u << lanes) - 1u;
    warps_[w].phase.store(0, std::memory_order_relaxed);
    warps_[w].waiting.clear();
  }
  std::vector<int> start(n);
  for (int i = 0; i < n; ++i) {
    SimtThread& t = threads_[i];
    t.coordinates = ThreadCoordinates{uint3{static_cast<unsigned>(i), 0, 0}, &coordinates_};
    t.runner = this;
    t.warp = i / 32;
    t.lane = i % 32;
    t.state.store(ThreadState::kReady, std::memory_order_relaxed);
    t.error.clear();
    make_fiber(&t.fiber, stacks_[i], &BlockRunner::thread_main, &t, tsan_fibers_);
    tsan_release(&t);  // thread_main's first acquire
    start[i] = i;
  }
  release(start, block_releases_);

  std::string failure;
  // The scheduler's own errors (out of memory for its queues) fail the block as a thread's do.
  try {
    while (live_ > 0) {
      if (ready_.empty()) {
        if (!at_grid_barrier_.empty() && at_grid_barrier_.size() == shape_.block) {
          if (!grid_->arrive_and_wait()) {
            failure = kGridSyncFailed + grid_->why();
            break;
          }
          grid_syncs_.store(grid_syncs_.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
          release(at_grid_barrier_, block_releases_);
          continue;
        }
        failure = describe_stuck_threads();
        break;
      }
      const int id = ready_.front();
      ready_.pop_front();
      SimtThread& t = threads_[id];
      set_running(&t);
      switch_fiber(&scheduler_, &t.fiber, /*synchronize=*/false);
      set_running(nullptr);
      switch (t.state.load(std::memory_order_relaxed)) {
        case ThreadState::kAtBlockBarrier: at_block_barrier_.push_back(id); break;
        case ThreadState::kAtWarpBarrier: warps_[t.warp].waiting.push_back(id); break;
        case ThreadState::kAtGridBarrier: at_grid_barrier_.push_back(id); break;
        case ThreadState::kExited: --live_; break;
        case ThreadState::kFailed:
          failure = "thread " + std::to_string(id) + " of block " + std::to_string(index) + ": " + t.error;
          break;
        case ThreadState::kReady: failure = "simt: a thread switched back without a reason"; break;
      }
      if (!failure.empty()) break;
      complete_barriers(t.warp);
    }
  } catch (const std::exception& e) {
    set_running(nullptr);
    failure = "simt: the scheduler of block " + std::to_string(index) + " failed: " + e.what();
  } catch (...) {
    set_running(nullptr);
    failure = "simt: the scheduler of block " + std::to_string(index) + " failed";
  }
  if (grid_ != nullptr) {
    if (failure.empty()) grid_->block_exited();
    else grid_->break_barrier("block " + std::to_string(index) + " failed: " + failure);
  }
  if (!failure.empty()) {
    failed_ = true;
    for (int i = 0; i < n; ++i) {
      const ThreadState state = threads_[i].state.load(std::memory_order_relaxed);
      if (state != ThreadState::kExited && state != ThreadState::kFailed) {
        adopt_history(&scheduler_, &threads_[i].fiber);
      }
    }
  }
  return failure;
}

// The device functions: the running thread's runner does the work.
void block_barrier() {
  SimtThread* me = running_simt_thread("__syncthreads");
  me->runner->block_barrier(me);
}

void warp_barrier(unsigned mask) {
  SimtThread* me = running_simt_thread("__syncwarp");
  me->runner->warp_barrier(me, mask);
}

void warp_exchange(unsigned mask, uint64_t value, uint64_t all_lanes[32]) {
  SimtThread* me = running_simt_thread("a warp shuffle or vote");
  me->runner->warp_exchange(me, mask, value, all_lanes);
}

void grid_barrier() {
  SimtThread* me = running_simt_thread("grid_sync");
  me->runner->grid_barrier(me);
}

void trap(const char* why) { throw std::runtime_error(std::string("__trap: ") + why); }

}  // namespace simt
}  // namespace fastclip
