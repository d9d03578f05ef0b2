// Fibers: the execution layer runs every CUDA thread of a block as a fiber (its own stack and
// registers) on one OS thread, switching at barriers and warp exchanges. Annotated for
// AddressSanitizer and ThreadSanitizer, which see each fiber as its own thread of control.
#pragma once

#include <cstddef>
#include <mutex>
#include <vector>

namespace fastclip {
namespace simt {

// A stack from a process-wide pool (mmap'ed, with a guard page below it): fibers' stacks are
// reused across launches.
class FiberStack {
 public:
  FiberStack();
  ~FiberStack();
  FiberStack(FiberStack&& other) noexcept;
  FiberStack& operator=(FiberStack&&) = delete;
  FiberStack(const FiberStack&) = delete;

  void* bottom() const { return bottom_; }
  size_t size() const { return size_; }

  // For a stack whose fiber was abandoned mid-run (a failed launch): AddressSanitizer's poison
  // of its frames' redzones, never unwound, is cleared before the stack is reused.
  void discard_frames();

 private:
  void* bottom_;
  size_t size_;
};

// ThreadSanitizer's fibers for the block runners of one host thread's launches, lent to a runner
// for one launch and reused by the later ones: creating and destroying a ThreadSanitizer fiber
// costs about 0.2 ms of system calls (its per-thread state), more than a small block's whole run.
// Reuse orders nothing that was not ordered already: a fiber's uses follow one another in the
// host thread's launches, which run one at a time, or in one runner's blocks, where each block's
// work happens before the next block's threads start. A fiber lent in a launch is lent again
// only after that launch ends (end_launch), never to another runner of the same launch, whose
// blocks run concurrently. Without ThreadSanitizer nothing is lent.
class TsanFiberPool {
 public:
  TsanFiberPool() = default;
  ~TsanFiberPool();
  TsanFiberPool(const TsanFiberPool&) = delete;
  TsanFiberPool& operator=(const TsanFiberPool&) = delete;

  // A fiber's uses (runs of a fiber on it) travel with it: ThreadSanitizer keeps a frame of every
  // run (a fiber's entry never returns), and its shadow stack of 64K frames would overflow after
  // some 22K runs, so a fiber is retired (destroyed, a new one created) after kMaxUses.
  struct Lent {
    void* fiber;
    unsigned uses;
  };
  static constexpr unsigned kMaxUses = 1024;

  Lent lend();                 // an idle fiber, or a new one
  void give_back(Lent fiber);  // lent again after end_launch()
  void end_launch();           // every runner of the launch has given its fibers back

 private:
  std::mutex mutex_;
  std::vector<Lent> idle_, given_back_;
};

struct Fiber {
  void* stack_pointer = nullptr;       // saved while switched out
  const void* stack_bottom = nullptr;  // for AddressSanitizer
  size_t stack_size = 0;
  void* asan_fake_stack = nullptr;
  void* tsan_fiber = nullptr;          // ThreadSanitizer's fiber (or the OS thread's own)
  TsanFiberPool* tsan_pool = nullptr;  // where tsan_fiber was lent from (none: the OS thread's)
  unsigned tsan_uses = 0;              // runs on tsan_fiber so far (TsanFiberPool::kMaxUses)
};

// The calling OS thread's own context, to switch away from and back to.
void adopt_current_thread(Fiber* self);

// Prepares `fiber` to run entry(arg) on `stack` at its first switch_fiber. entry must never
// return: it ends with exit_fiber. ThreadSanitizer's fiber is the one `fiber` already has (from
// its previous run), else one lent by `pool`; one used TsanFiberPool::kMaxUses times is
// destroyed and created anew.
void make_fiber(Fiber* fiber, const FiberStack& stack, void (*entry)(void*), void* arg, TsanFiberPool* pool);

// Gives ThreadSanitizer's fiber back to its pool, or destroys it when it is not `reusable`: one
// abandoned in the middle of a run (a failed launch) keeps that run's stack of calls. Frees the
// fiber's context (the ucontext fallback's); for an adopted OS thread's fiber too, which must
// not be running.
void destroy_fiber(Fiber* fiber, bool reusable);

// Saves the current context in `from` and resumes `to`. With synchronize, ThreadSanitizer sees
// everything `from` did as happening before what `to` does next; without, fibers are as
// unordered as threads, and only the layer's barriers order them.
void switch_fiber(Fiber* from, Fiber* to, bool synchronize);

// The last switch of a finished fiber: like switch_fiber, but `from` never resumes.
[[noreturn]] void exit_fiber(Fiber* from, Fiber* to, bool synchronize);

// For ThreadSanitizer: everything `abandoned` did happens before what `self`, the running
// context, does next, as if `abandoned` had switched to it synchronizing. For a fiber that will
// never run again (left at a barrier by a failed launch): ThreadSanitizer is told of a switch to
// it and back, and no code runs as it.
void adopt_history(Fiber* self, Fiber* abandoned);

// Called first thing in a fiber's entry: completes the switch that started it.
void enter_fiber(Fiber* scheduler);

}  // namespace simt
}  // namespace fastclip
