// The one way a kernel is launched: every launch in csrc/cuda goes through launch_kernel, which
// logs it (kernel_log.h) and runs it on the GPU, or, in the build for the CPU execution layer
// (FASTCLIP_CUDA_ON_CPU, csrc/simt), on the CPU. Returns the launch's error.
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

// Kernel<<<num_blocks, threads, 0, stream>>>(args...). Kernel is the __global__ function itself
// (a template argument, so its name is known for the log).
template <auto Kernel, typename... Args>
cudaError_t launch_kernel(int num_blocks, int threads, cudaStream_t stream, const Args&... args) {
  log_kernel_launch(kernel_name<Kernel>(), num_blocks, threads, /*cooperative=*/false);
#ifdef FASTCLIP_CUDA_ON_CPU
  (void)stream;
  return launch_on_layer<Kernel>(num_blocks, threads, /*cooperative=*/false, args...);
#else
  // clang-format off: it takes a .cuh for C++ and splits the launch's >>>.
  Kernel<<<num_blocks, threads, 0, stream>>>(args...);
  // clang-format on
  return cudaGetLastError();
#endif
}

// The most blocks of Kernel (with `threads` threads each) that can be resident at once on the
// current device: the grid of a cooperative launch. Queried once per device.
template <auto Kernel>
int resident_blocks(int threads) {
#ifdef FASTCLIP_CUDA_ON_CPU
  (void)threads;
  return simt::max_cooperative_blocks();
#else
  constexpr int kMaxDevices = 64;
  constexpr int kUnknown = -1;
  static std::atomic<int> cached[kMaxDevices] = {};  // 0: not queried yet; kUnknown: no cooperative launch
  int device = 0;
  if (cudaGetDevice(&device) != cudaSuccess || device < 0 || device >= kMaxDevices) {
    cudaGetLastError();
    return 0;
  }
  int blocks = cached[device].load(std::memory_order_relaxed);
  if (blocks == 0) {
    int per_multiprocessor = 0, multiprocessors = 0, cooperative = 0;
    const bool queried =
        cudaDeviceGetAttribute(&cooperative, cudaDevAttrCooperativeLaunch, device) == cudaSuccess &&
        cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_multiprocessor, Kernel, threads, 0) == cudaSuccess &&
        cudaDeviceGetAttribute(&multiprocessors, cudaDevAttrMultiProcessorCount, device) == cudaSuccess;
    if (!queried) cudaGetLastError();  // not sticky: the caller falls back to the non-cooperative kernels
    blocks = queried && cooperative ? per_multiprocessor * multiprocessors : 0;
    cached[device].store(blocks > 0 ? blocks : kUnknown, std::memory_order_relaxed);
  }
  return blocks > 0 ? blocks : 0;
#endif
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
// grid_sync() (grid_sync.cuh). num_blocks must be at most resident_blocks<Kernel>(threads).
template <auto Kernel, typename... Args>
cudaError_t launch_cooperative_kernel(int num_blocks, int threads, cudaStream_t stream, const Args&... args) {
  static_assert(ArgumentsMatch<decltype(Kernel), Args...>::value,
                "launch_cooperative_kernel: pass arguments of exactly the kernel's parameter types");
  log_kernel_launch(kernel_name<Kernel>(), num_blocks, threads, /*cooperative=*/true);
#ifdef FASTCLIP_CUDA_ON_CPU
  (void)stream;
  return launch_on_layer<Kernel>(num_blocks, threads, /*cooperative=*/true, args...);
#else
  void* arguments[] = {const_cast<void*>(static_cast<const void*>(&args))...};
  return cudaLaunchCooperativeKernel(reinterpret_cast<const void*>(Kernel), dim3(num_blocks), dim3(threads), arguments,
                                     0, stream);
#endif
}

// A cooperative launch of Kernel on as many blocks as are resident at once, but no more than the
// list has chunks (at least one). Launches nothing and sets *launched to false where the device
// has no cooperative launch.
template <auto Kernel, typename... Args>
cudaError_t launch_resident(int32_t num_chunks, int threads, cudaStream_t stream, bool* launched, const Args&... args) {
  const int resident = resident_blocks<Kernel>(threads);
  *launched = resident > 0;
  if (!*launched) return cudaSuccess;
  const int grid = resident < num_chunks ? resident : (num_chunks > 0 ? num_chunks : 1);
  return launch_cooperative_kernel<Kernel>(grid, threads, stream, args...);
}

// Whether a single launch's outcome (launch_resident) leaves the work to the several-kernel
// path: nothing launched, or the launch refused because the stream has fewer SMs than the device
// (green contexts, MPS), whose error is then cleared.
inline bool needs_several_kernels(cudaError_t error, bool launched) {
  if (error == cudaErrorCooperativeLaunchTooLarge || error == cudaErrorNotSupported) {
    clear_launch_error();
    return true;
  }
  return error == cudaSuccess && !launched;
}

}  // namespace cuda
}  // namespace fastclip
