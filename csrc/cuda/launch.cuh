// The one way a kernel is launched: every launch in csrc/cuda goes through launch_kernel,
// launch_cooperative_kernel or launch_resident, which run it on the GPU, or, in the build for the
// CPU execution layer (FASTCLIP_CUDA_ON_CPU, csrc/simt), on the CPU, and log it (kernel_log.h)
// once it happened. Returns the launch's error. launch_resident decides whether a single
// cooperative launch can be made (the occupancy query, a refusal remembered, graph capture).
#pragma once

#include <cuda_runtime.h>

#include <atomic>
#include <type_traits>

#include "kernel_log.h"

#ifdef FASTCLIP_CUDA_ON_CPU
#include "../simt/runtime.h"
#endif

namespace fastclip {
namespace cuda {

// Clears the error a refused launch left behind (on the GPU the last error is read once, then
// reset; the layer returns its errors and keeps none).
inline void clear_launch_error() {
#ifndef FASTCLIP_CUDA_ON_CPU
  cudaGetLastError();
#endif
}

// The kernel's name as the compiler spells this instantiation ("...[with auto Kernel = ...]").
template <auto Kernel>
const char* kernel_name() {
  static const std::string name = kernel_name_from_signature(__PRETTY_FUNCTION__);
  return name.c_str();
}

#ifdef FASTCLIP_CUDA_ON_CPU
// Runs the launch on the CPU execution layer, synchronously (its one stream is this thread).
template <auto Kernel, typename... Args>
cudaError_t launch_on_layer(int num_blocks, int threads, bool cooperative, const Args&... args) {
  return simt::launch(simt::LaunchShape{kernel_name<Kernel>(), static_cast<unsigned>(num_blocks),
                                        static_cast<unsigned>(threads), cooperative},
                      [&] { Kernel(args...); });
}
#endif

// Whether a launch that returned `error` happened, and so is logged: on the GPU it was queued (an
// error means the runtime refused it, or reports an earlier failure, and nothing was queued); on
// the layer it ran, maybe failing (cudaErrorLaunchFailure: a thread threw).
inline bool launch_happened(cudaError_t error) {
#ifdef FASTCLIP_CUDA_ON_CPU
  return error == cudaSuccess || error == cudaErrorLaunchFailure;
#else
  return error == cudaSuccess;
#endif
}

// Kernel<<<num_blocks, threads, 0, stream>>>(args...). Kernel is the __global__ function itself
// (a template argument, so its name is known for the log).
template <auto Kernel, typename... Args>
cudaError_t launch_kernel(int num_blocks, int threads, cudaStream_t stream, const Args&... args) {
#ifdef FASTCLIP_CUDA_ON_CPU
  (void)stream;
  const cudaError_t error = launch_on_layer<Kernel>(num_blocks, threads, /*cooperative=*/false, args...);
#else
  // clang-format off: it takes a .cuh for C++ and splits the launch's >>>.
  Kernel<<<num_blocks, threads, 0, stream>>>(args...);
  // clang-format on
  const cudaError_t error = cudaGetLastError();
#endif
  if (launch_happened(error)) log_kernel_launch(kernel_name<Kernel>(), num_blocks, threads, /*cooperative=*/false);
  return error;
}

// Whether `error` is the runtime refusing a cooperative launch that the occupancy query allowed:
// the stream has fewer SMs than the device (MPS with CUDA_MPS_ACTIVE_THREAD_PERCENTAGE, a green
// context).
inline bool is_cooperative_refusal(cudaError_t error) {
  return error == cudaErrorCooperativeLaunchTooLarge || error == cudaErrorNotSupported;
}

// Whether Args are exactly the parameter types of the kernel (cv-qualifiers aside): a cooperative
// launch passes the arguments' addresses, read as the parameters' types.
template <typename Kernel, typename... Args>
struct ArgumentsMatch : std::false_type {};
template <typename... Params, typename... Args>
struct ArgumentsMatch<void (*)(Params...), Args...>
    : std::bool_constant<sizeof...(Params) == sizeof...(Args) &&
                         (std::is_same_v<std::remove_cv_t<Params>, Args> && ...)> {};

// A cooperative launch of Kernel: all num_blocks blocks resident at once, so the kernel may call
// grid_sync() (grid_sync.cuh). num_blocks must be at most resident_blocks<Kernel>(...). A refusal
// is counted (kernel_log.h), not logged.
template <auto Kernel, typename... Args>
cudaError_t launch_cooperative_kernel(int num_blocks, int threads, cudaStream_t stream, const Args&... args) {
  static_assert(ArgumentsMatch<decltype(Kernel), Args...>::value,
                "launch_cooperative_kernel: pass arguments of exactly the kernel's parameter types");
#ifdef FASTCLIP_CUDA_ON_CPU
  (void)stream;
  const cudaError_t error = launch_on_layer<Kernel>(num_blocks, threads, /*cooperative=*/true, args...);
#else
  void* arguments[] = {const_cast<void*>(static_cast<const void*>(&args))...};
  const cudaError_t error = cudaLaunchCooperativeKernel(reinterpret_cast<const void*>(Kernel), dim3(num_blocks),
                                                        dim3(threads), arguments, 0, stream);
#endif
  if (launch_happened(error)) log_kernel_launch(kernel_name<Kernel>(), num_blocks, threads, /*cooperative=*/true);
  if (is_cooperative_refusal(error)) count_refused_cooperative_launch();
  return error;
}

// What is known of Kernel's cooperative launch on each device, for the life of the process. Each
// field is written with the answer it holds, so threads that race to fill one write the same.
constexpr int kMaxDevices = 64;
struct CooperativeLaunchState {
  std::atomic<int> resident[kMaxDevices];          // 0: not known yet; -1: no cooperative launch; else blocks
  std::atomic<int> largest_grid_ran[kMaxDevices];  // the largest grid launched outside a capture (0: none yet)
  std::atomic<bool> refused[kMaxDevices];          // the runtime refused a launch: the several kernels from then on
};

template <auto Kernel>
CooperativeLaunchState& cooperative_state() {
  static CooperativeLaunchState state;  // zero-initialised: nothing known
  return state;
}

// The current device, in [0, kMaxDevices) (0 in the layer); false, its error cleared, where it
// cannot be read.
inline bool current_device(int* device) {
#ifdef FASTCLIP_CUDA_ON_CPU
  *device = 0;
  return true;
#else
  if (cudaGetDevice(device) == cudaSuccess && *device >= 0 && *device < kMaxDevices) return true;
  cudaGetLastError();
  return false;
#endif
}

// Whether `stream` may be capturing a CUDA graph: it is, or its state cannot be read (the error
// cleared). The layer has no graphs. No host sync.
inline bool may_be_capturing(cudaStream_t stream) {
#ifdef FASTCLIP_CUDA_ON_CPU
  (void)stream;
  return false;
#else
  cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
  if (cudaStreamIsCapturing(stream, &status) != cudaSuccess) {
    cudaGetLastError();
    return true;
  }
  return status != cudaStreamCaptureStatusNone;
#endif
}

// The most blocks of Kernel (with `threads` threads each) that can be resident at once on
// `device`, the grid of a cooperative launch (0 where there is no cooperative launch), and
// whether that is a definite answer (*answered): a query that failed is not, its error cleared.
template <auto Kernel>
int query_resident_blocks(int device, int threads, bool* answered) {
  count_occupancy_query();
  *answered = false;
  int blocks = 0;
#ifdef FASTCLIP_CUDA_ON_CPU
  (void)device;
  (void)threads;
  if (simt::query_cooperative_blocks(&blocks) != cudaSuccess) return 0;
#else
  int cooperative = 0;
  if (cudaDeviceGetAttribute(&cooperative, cudaDevAttrCooperativeLaunch, device) != cudaSuccess) {
    cudaGetLastError();
    return 0;
  }
  if (cooperative) {
    int per_multiprocessor = 0, multiprocessors = 0;
    if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_multiprocessor, Kernel, threads, 0) != cudaSuccess ||
        cudaDeviceGetAttribute(&multiprocessors, cudaDevAttrMultiProcessorCount, device) != cudaSuccess) {
      cudaGetLastError();
      return 0;
    }
    blocks = per_multiprocessor * multiprocessors;
  }
#endif
  *answered = true;
  return blocks > 0 ? blocks : 0;
}

// resident_blocks of Kernel on `device`: asked once per device, until it is answered (a failed
// query is asked again at the next call, which meanwhile takes the several kernels).
template <auto Kernel>
int resident_blocks(int device, int threads) {
  std::atomic<int>& known = cooperative_state<Kernel>().resident[device];
  int blocks = known.load(std::memory_order_relaxed);
  if (blocks != 0) return blocks > 0 ? blocks : 0;
  bool answered = false;
  blocks = query_resident_blocks<Kernel>(device, threads, &answered);
  if (answered) known.store(blocks > 0 ? blocks : -1, std::memory_order_relaxed);
  return blocks;
}

// A cooperative launch of Kernel on as many blocks as are resident at once, but no more than the
// list has chunks (at least one). Launches nothing, and sets *launched to false, where the device
// has no cooperative launch (or its query failed: asked again next time), where the runtime
// refused a launch of Kernel on this device before (a refusal is remembered), or where the launch
// is refused now (then remembered, its error cleared, nothing logged). And inside a CUDA graph
// capture, unless a launch of Kernel with at least this grid has run on this device outside one:
// whether the runtime takes it is not known yet, and a refused launch may invalidate the capture,
// so the capture holds the several kernels (the same bits). What is known is per device, not per
// stream: streams of green contexts with fewer SMs than one that ran the grid are not told apart.
// No host sync, and no runtime call but the launch once the grid is known to run.
template <auto Kernel, typename... Args>
cudaError_t launch_resident(int32_t num_chunks, int threads, cudaStream_t stream, bool* launched, const Args&... args) {
  *launched = false;
  int device = 0;
  if (!current_device(&device)) return cudaSuccess;
  CooperativeLaunchState& state = cooperative_state<Kernel>();
  if (state.refused[device].load(std::memory_order_relaxed)) return cudaSuccess;
  const int resident = resident_blocks<Kernel>(device, threads);
  if (resident <= 0) return cudaSuccess;
  const int grid = resident < num_chunks ? resident : (num_chunks > 0 ? num_chunks : 1);
  std::atomic<int>& largest = state.largest_grid_ran[device];
  const bool known_to_run = grid <= largest.load(std::memory_order_relaxed);
  const bool capturing = !known_to_run && may_be_capturing(stream);
  if (capturing) return cudaSuccess;
  const cudaError_t error = launch_cooperative_kernel<Kernel>(grid, threads, stream, args...);
  if (is_cooperative_refusal(error)) {
    clear_launch_error();
    state.refused[device].store(true, std::memory_order_relaxed);
    return cudaSuccess;
  }
  *launched = true;
  if (error == cudaSuccess && !known_to_run) {
    int seen = largest.load(std::memory_order_relaxed);
    while (seen < grid && !largest.compare_exchange_weak(seen, grid, std::memory_order_relaxed)) {
    }
  }
  return error;
}

// Whether a single launch's outcome (launch_resident) leaves the work to the several-kernel path:
// nothing was launched, and nothing failed.
inline bool needs_several_kernels(cudaError_t error, bool launched) { return error == cudaSuccess && !launched; }

}  // namespace cuda
}  // namespace fastclip
