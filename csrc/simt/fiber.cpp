#include "fiber.h"

#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <new>
#include <stdexcept>
#include <string>
#include <vector>

#include "sanitizers.h"

// The switch in assembly: x86-64 System V (ELF, 64-bit pointers). Elsewhere, or with
// FASTCLIP_SIMT_UCONTEXT (to test it), the portable fallback.
#if defined(__x86_64__) && defined(__ELF__) && !defined(__ILP32__) && !defined(FASTCLIP_SIMT_UCONTEXT)
#define FASTCLIP_SIMT_ASM_SWITCH 1
#else
#include <ucontext.h>
#endif

namespace fastclip {
namespace simt {
namespace {

// Kernels' frames are small; sanitizers grow them several times over.
constexpr size_t kStackBytes = kSanitized ? 512 * 1024 : 64 * 1024;

size_t page_size() {
  static const size_t size = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  return size;
}

// Stacks freed by finished launches, ready for the next.
std::mutex pool_mutex;
std::vector<void*>& free_stacks() {
  static auto* stacks = new std::vector<void*>();  // never destroyed: fibers may outlive static destructors
  return *stacks;
}

[[noreturn]] void fail_to_map(const char* what) {
  const int error = errno;
  throw std::runtime_error(std::string("simt: a fiber stack's ") + what + " failed (" + std::strerror(error) +
                           "): out of memory, or of memory mappings (each stack takes two; the limit is the " +
                           "sysctl vm.max_map_count)");
}

void* take_stack() {
  {
    std::lock_guard<std::mutex> lock(pool_mutex);
    if (!free_stacks().empty()) {
      void* stack = free_stacks().back();
      free_stacks().pop_back();
      return stack;
    }
  }
  const size_t guard = page_size();
  void* mapping =
      mmap(nullptr, guard + kStackBytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (mapping == MAP_FAILED) fail_to_map("mmap");
  // An overflowing fiber faults instead of corrupting its neighbour. The guard splits the mapping
  // in two: a launch's stacks take two of the process's mappings each.
  if (mprotect(mapping, guard, PROT_NONE) != 0) {
    const int error = errno;
    munmap(mapping, guard + kStackBytes);
    errno = error;
    fail_to_map("mprotect of the guard page");
  }
  return static_cast<uint8_t*>(mapping) + guard;
}

}  // namespace

FiberStack::FiberStack() : bottom_(take_stack()), size_(kStackBytes) {}

FiberStack::FiberStack(FiberStack&& other) noexcept : bottom_(other.bottom_), size_(other.size_) {
  other.bottom_ = nullptr;
}

void FiberStack::discard_frames() {
#ifdef FASTCLIP_SIMT_ASAN
  if (bottom_ != nullptr) __asan_unpoison_memory_region(bottom_, size_);
#endif
}

FiberStack::~FiberStack() {
  if (bottom_ == nullptr) return;
  std::lock_guard<std::mutex> lock(pool_mutex);
  free_stacks().push_back(bottom_);
}

#if defined(FASTCLIP_SIMT_ASM_SWITCH)

// switch_stack(save, next): pushes the callee-saved registers and the SSE/x87 control words,
// stores the stack pointer in *save, loads `next` and pops the same from it. A new fiber's
// stack is laid out as if it had switched away at fiber_start, which calls r13(r12).
extern "C" void fastclip_simt_switch_stack(void** save, void* next);
extern "C" void fastclip_simt_fiber_start();
asm(R"(
  .text
  .p2align 4
  .type fastclip_simt_switch_stack,@function
fastclip_simt_switch_stack:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  subq $8, %rsp
  stmxcsr (%rsp)
  fnstcw 4(%rsp)
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  ldmxcsr (%rsp)
  fldcw 4(%rsp)
  addq $8, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
  .size fastclip_simt_switch_stack, .-fastclip_simt_switch_stack

  .p2align 4
  .type fastclip_simt_fiber_start,@function
fastclip_simt_fiber_start:
  movq %r12, %rdi
  callq *%r13
  ud2
  .size fastclip_simt_fiber_start, .-fastclip_simt_fiber_start
)");

namespace {

void prepare_stack(Fiber* fiber, void (*entry)(void*), void* arg) {
  auto* top = reinterpret_cast<uint64_t*>(static_cast<uint8_t*>(const_cast<void*>(fiber->stack_bottom)) +
                                          fiber->stack_size - 128);
  uint32_t mxcsr;
  uint16_t fpu_control;
  asm volatile("stmxcsr %0" : "=m"(mxcsr));
  asm volatile("fnstcw %0" : "=m"(fpu_control));
  top[0] = static_cast<uint64_t>(mxcsr) | (static_cast<uint64_t>(fpu_control) << 32);
  top[1] = 0;                                                       // r15
  top[2] = 0;                                                       // r14
  top[3] = reinterpret_cast<uint64_t>(entry);                       // r13
  top[4] = reinterpret_cast<uint64_t>(arg);                         // r12
  top[5] = 0;                                                       // rbx
  top[6] = 0;                                                       // rbp
  top[7] = reinterpret_cast<uint64_t>(&fastclip_simt_fiber_start);  // return address
  fiber->stack_pointer = top;
}

void switch_stack(Fiber* from, void* to_stack_pointer) {
  fastclip_simt_switch_stack(&from->stack_pointer, to_stack_pointer);
}

void free_context(Fiber*) {}  // a fiber's context is on its own stack

}  // namespace

#else  // portable fallback: ucontext, two system calls per switch

namespace {

// A fiber's context, allocated at its first use and freed by destroy_fiber: stack_pointer
// points to it.
struct FallbackContext {
  ucontext_t context;
  void (*entry)(void*);
  void* arg;
};

void start_from_ucontext(unsigned hi, unsigned lo) {
  auto* start = reinterpret_cast<FallbackContext*>(static_cast<uintptr_t>((static_cast<uint64_t>(hi) << 32) | lo));
  start->entry(start->arg);
}

FallbackContext* context_of(Fiber* fiber) {
  if (fiber->stack_pointer == nullptr) fiber->stack_pointer = new FallbackContext();
  return static_cast<FallbackContext*>(fiber->stack_pointer);
}

void free_context(Fiber* fiber) {
  delete static_cast<FallbackContext*>(fiber->stack_pointer);
  fiber->stack_pointer = nullptr;
}

void prepare_stack(Fiber* fiber, void (*entry)(void*), void* arg) {
  FallbackContext* start = context_of(fiber);
  ucontext_t* uc = &start->context;
  getcontext(uc);
  uc->uc_stack.ss_sp = const_cast<void*>(fiber->stack_bottom);
  uc->uc_stack.ss_size = fiber->stack_size;
  uc->uc_link = nullptr;
  start->entry = entry;
  start->arg = arg;
  const auto bits = static_cast<uint64_t>(reinterpret_cast<uintptr_t>(start));
  makecontext(uc, reinterpret_cast<void (*)()>(&start_from_ucontext), 2, static_cast<unsigned>(bits >> 32),
              static_cast<unsigned>(bits));
}

void switch_stack(Fiber* from, void* to_stack_pointer) {
  swapcontext(&context_of(from)->context, &static_cast<FallbackContext*>(to_stack_pointer)->context);
}

}  // namespace

#endif

void adopt_current_thread(Fiber* self) {
  *self = Fiber{};
#ifdef FASTCLIP_SIMT_TSAN
  self->tsan_fiber = __tsan_get_current_fiber();
#endif
}

TsanFiberPool::~TsanFiberPool() {
  end_launch();
#ifdef FASTCLIP_SIMT_TSAN
  for (const Lent& lent : idle_) __tsan_destroy_fiber(lent.fiber);
#endif
}

TsanFiberPool::Lent TsanFiberPool::lend() {
  std::lock_guard<std::mutex> lock(mutex_);
  if (idle_.empty()) {
#ifdef FASTCLIP_SIMT_TSAN
    return Lent{__tsan_create_fiber(0), 0};
#else
    return Lent{nullptr, 0};
#endif
  }
  const Lent fiber = idle_.back();
  idle_.pop_back();
  return fiber;
}

void TsanFiberPool::give_back(Lent fiber) {
  std::lock_guard<std::mutex> lock(mutex_);
  given_back_.push_back(fiber);
}

void TsanFiberPool::end_launch() {
  std::lock_guard<std::mutex> lock(mutex_);
  idle_.insert(idle_.end(), given_back_.begin(), given_back_.end());
  given_back_.clear();
}

void make_fiber(Fiber* fiber, const FiberStack& stack, void (*entry)(void*), void* arg, TsanFiberPool* pool) {
  fiber->stack_bottom = stack.bottom();
  fiber->stack_size = stack.size();
  fiber->asan_fake_stack = nullptr;
#ifdef FASTCLIP_SIMT_TSAN
  if (fiber->tsan_pool == nullptr) {
    const TsanFiberPool::Lent lent = pool->lend();
    fiber->tsan_fiber = lent.fiber;
    fiber->tsan_uses = lent.uses;
    fiber->tsan_pool = pool;
  }
  if (fiber->tsan_uses >= TsanFiberPool::kMaxUses) {  // retired: its shadow stack is full of dead runs
    __tsan_destroy_fiber(fiber->tsan_fiber);
    fiber->tsan_fiber = __tsan_create_fiber(0);
    fiber->tsan_uses = 0;
  }
  ++fiber->tsan_uses;
#else
  (void)pool;
#endif
  prepare_stack(fiber, entry, arg);
}

void destroy_fiber(Fiber* fiber, bool reusable) {
#ifdef FASTCLIP_SIMT_TSAN
  if (fiber->tsan_pool != nullptr) {
    if (reusable) fiber->tsan_pool->give_back(TsanFiberPool::Lent{fiber->tsan_fiber, fiber->tsan_uses});
    else __tsan_destroy_fiber(fiber->tsan_fiber);
  }
#else
  (void)reusable;
#endif
  fiber->tsan_pool = nullptr;
  fiber->tsan_fiber = nullptr;
  fiber->tsan_uses = 0;
  free_context(fiber);
}

namespace {

void before_switch(Fiber* from, Fiber* to, bool synchronize, bool from_exits) {
#ifdef FASTCLIP_SIMT_ASAN
  __sanitizer_start_switch_fiber(from_exits ? nullptr : &from->asan_fake_stack, to->stack_bottom, to->stack_size);
#else
  (void)from, (void)from_exits;
#endif
#ifdef FASTCLIP_SIMT_TSAN
  __tsan_switch_to_fiber(to->tsan_fiber, synchronize ? 0u : 1u /* __tsan_switch_to_fiber_no_sync */);
#else
  (void)to, (void)synchronize;
#endif
}

// Runs in the context switched to: completes ASan's view of the switch, learning the bounds of
// the stack left behind (the OS thread's own stack is learnt this way).
void after_switch(Fiber* resumed, Fiber* left) {
#ifdef FASTCLIP_SIMT_ASAN
  const void* bottom = nullptr;
  size_t size = 0;
  __sanitizer_finish_switch_fiber(resumed->asan_fake_stack, &bottom, &size);
  if (left != nullptr) {
    left->stack_bottom = bottom;
    left->stack_size = size;
  }
#else
  (void)resumed, (void)left;
#endif
}

}  // namespace

// The target's stack pointer is read before ThreadSanitizer is told of the switch: after it, the
// read would count as the target's own.
void switch_fiber(Fiber* from, Fiber* to, bool synchronize) {
  void* const to_stack_pointer = to->stack_pointer;
  before_switch(from, to, synchronize, /*from_exits=*/false);
  switch_stack(from, to_stack_pointer);
  after_switch(from, nullptr);
}

void exit_fiber(Fiber* from, Fiber* to, bool synchronize) {
  void* const to_stack_pointer = to->stack_pointer;
  before_switch(from, to, synchronize, /*from_exits=*/true);
  switch_stack(from, to_stack_pointer);
  std::abort();  // a finished fiber is never resumed
}

void adopt_history(Fiber* self, Fiber* abandoned) {
#ifdef FASTCLIP_SIMT_TSAN
  // Both read first: nothing between the two switches may touch memory as `abandoned`.
  void* const self_fiber = self->tsan_fiber;
  void* const abandoned_fiber = abandoned->tsan_fiber;
  __tsan_switch_to_fiber(abandoned_fiber, 1u /* __tsan_switch_to_fiber_no_sync */);
  __tsan_switch_to_fiber(self_fiber, 0u);
#else
  (void)self, (void)abandoned;
#endif
}

void enter_fiber(Fiber* scheduler) {
#ifdef FASTCLIP_SIMT_ASAN
  const void* bottom = nullptr;
  size_t size = 0;
  __sanitizer_finish_switch_fiber(nullptr, &bottom, &size);
  if (scheduler->stack_bottom == nullptr) {
    scheduler->stack_bottom = bottom;
    scheduler->stack_size = size;
  }
#else
  (void)scheduler;
#endif
}

}  // namespace simt
}  // namespace fastclip
