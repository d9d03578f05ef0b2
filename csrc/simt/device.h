// What kernel code calls in the execution layer (through cuda_on_cpu.h's CUDA names): the
// current thread's coordinates, barriers, warp exchanges and the grid barrier. Every function
// here must be called from a kernel's thread; they throw std::logic_error otherwise.
#pragma once

#include <vector_types.h>  // uint3, dim3

#include <cstdint>

namespace fastclip {
namespace simt {

struct BlockCoordinates {
  uint3 block_idx;
  dim3 block_dim;
  dim3 grid_dim;
};

struct ThreadCoordinates {
  uint3 thread_idx;
  const BlockCoordinates* block;
};

// The running CUDA thread of this OS thread (set by the block's scheduler at every switch).
extern __thread const ThreadCoordinates* tl_running_thread;
[[noreturn]] void fail_outside_kernel(const char* what);

inline const ThreadCoordinates& running_thread() {
  // An atomic load: ThreadSanitizer sees every fiber of the block write this at its switches.
  const ThreadCoordinates* t = __atomic_load_n(&tl_running_thread, __ATOMIC_RELAXED);
  if (t == nullptr) fail_outside_kernel("threadIdx/blockIdx read");
  return *t;
}

// __syncthreads: waits until every thread of the block arrives; what each did before it happens
// before what any does after. Strict, as CUDA specifies: a thread that exited (or waits at
// another barrier) makes the barrier fail the launch instead of completing it.
void block_barrier();

// __syncwarp and the warp exchanges: every lane of the calling thread's warp must take part
// (`mask` must name them all), strictly as __syncthreads (an exited lane makes them fail). The
// lanes that exist are all 32 but in a block's last, partial warp. warp_exchange writes each
// lane's `value` to all_lanes[lane] (a lane that does not exist gives the caller's own value).
void warp_barrier(unsigned mask);
void warp_exchange(unsigned mask, uint64_t value, uint64_t all_lanes[32]);

// The grid barrier of a cooperative launch: every thread of every block arrives before any
// leaves. Fails the launch if called from one that is not cooperative.
void grid_barrier();

// __trap(): fails the launch with `why`.
[[noreturn]] void trap(const char* why);

}  // namespace simt
}  // namespace fastclip
