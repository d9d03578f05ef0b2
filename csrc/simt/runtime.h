// The host side of simt, our execution layer that runs the CUDA kernel sources (csrc/cuda/*.cu,
// compiled by the host compiler after cuda_on_cpu.h) on the CPU: what a launch and the host code
// around it (csrc/cuda/device_runtime.h's host implementation) need. No torch headers.
#pragma once

#include <driver_types.h>  // cudaError_t

#include <functional>

namespace fastclip {
namespace simt {

struct LaunchShape {
  const char* kernel;  // the kernel's name, for error messages
  unsigned grid;       // blocks (gridDim.x)
  unsigned block;      // threads per block (blockDim.x), at most kMaxBlockThreads
  bool cooperative;    // every block resident at once, so the kernel may call grid_sync()
};

constexpr unsigned kMaxBlockThreads = 1024;

// Runs body() as every thread of the grid and returns when all have finished (the launch is
// synchronous: the layer's one stream is the calling thread). Returns cudaSuccess, or
//   cudaErrorInvalidConfiguration        grid or block of 0, or block > kMaxBlockThreads;
//   cudaErrorCooperativeLaunchTooLarge   a cooperative grid larger than max_cooperative_blocks(),
//                                        or than the context holds (context_multiprocessor_count());
//   cudaErrorLaunchFailure               a thread threw, or the block's threads could not all
//                                        reach the same barrier (divergent __syncthreads).
// last_error_message() then says what happened, naming the kernel.
cudaError_t launch(const LaunchShape& shape, const std::function<void()>& body);

// The message of this host thread's last failed launch ("" if none).
const char* last_error_message();

// The layer's streaming multiprocessors: blocks of a launch run on up to this many OS threads
// at once. FASTCLIP_SIMT_SMS in the environment (1-64), else 4.
int multiprocessor_count();

// The most blocks a cooperative launch may have: every block of it runs at once.
int max_cooperative_blocks();

// The occupancy query, as csrc/cuda/launch.cuh makes it on a GPU: *blocks = max_cooperative_blocks().
// For tests, FASTCLIP_SIMT_FAILED_QUERIES=<n> (read once; default 0) fails the first n queries
// of the process with cudaErrorUnknown, as a query that fails for a while.
cudaError_t query_cooperative_blocks(int* blocks);

// The SMs the context may use, for tests: FASTCLIP_SIMT_CONTEXT_SMS (1-64, read once; default
// multiprocessor_count()). As under MPS (CUDA_MPS_ACTIVE_THREAD_PERCENTAGE) or in a green context,
// the occupancy query still answers for the whole device, and launch() refuses a cooperative
// grid of more than two blocks per context SM with cudaErrorCooperativeLaunchTooLarge.
int context_multiprocessor_count();

}  // namespace simt
}  // namespace fastclip
