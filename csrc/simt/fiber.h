// Fibers: the execution layer runs every CUDA thread of a block as a fiber (its own stack and
// registers) on one OS thread, switching at barriers and warp exchanges. Annotated for
// AddressSanitizer and ThreadSanitizer, which see each fiber as its own thread of control.
#pragma once

#include <cstddef>

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

 private:
  void* bottom_;
  size_t size_;
};

struct Fiber {
  void* stack_pointer = nullptr;        // saved while switched out
  const void* stack_bottom = nullptr;   // for AddressSanitizer
  size_t stack_size = 0;
  void* asan_fake_stack = nullptr;
  void* tsan_fiber = nullptr;           // ThreadSanitizer's fiber (or the OS thread's own)
  bool owns_tsan_fiber = false;
};

// The calling OS thread's own context, to switch away from and back to.
void adopt_current_thread(Fiber* self);

// Prepares `fiber` to run entry(arg) on `stack` at its first switch_fiber. entry must never
// return: it ends with exit_fiber.
void make_fiber(Fiber* fiber, const FiberStack& stack, void (*entry)(void*), void* arg);

// Releases what make_fiber acquired (ThreadSanitizer's fiber).
void destroy_fiber(Fiber* fiber);

// Saves the current context in `from` and resumes `to`. With synchronize, ThreadSanitizer sees
// everything `from` did as happening before what `to` does next; without, fibers are as
// unordered as threads, and only the layer's barriers order them.
void switch_fiber(Fiber* from, Fiber* to, bool synchronize);

// The last switch of a finished fiber: like switch_fiber, but `from` never resumes.
[[noreturn]] void exit_fiber(Fiber* from, Fiber* to);

// Called first thing in a fiber's entry: completes the switch that started it.
void enter_fiber(Fiber* scheduler);

}  // namespace simt
}  // namespace fastclip
