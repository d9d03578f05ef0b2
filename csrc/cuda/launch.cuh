// The one way a kernel is launched: every launch in csrc/cuda goes through launch_kernel, which
// logs it (kernel_log.h) and runs it on the GPU, or, in the build for the CPU execution layer
// (FASTCLIP_CUDA_ON_CPU, csrc/simt), on the CPU. Returns the launch's error.
#pragma once

#include <cuda_runtime.h>

#include "kernel_log.h"

#ifdef FASTCLIP_CUDA_ON_CPU
#include "../simt/runtime.h"
#endif

namespace fastclip {
namespace cuda {

// The kernel's name as the compiler spells this instantiation ("...[with auto Kernel = ...]").
template <auto Kernel>
const char* kernel_name() {
  static const std::string name = kernel_name_from_signature(__PRETTY_FUNCTION__);
  return name.c_str();
}

// Kernel<<<num_blocks, threads, 0, stream>>>(args...). Kernel is the __global__ function itself
// (a template argument, so its name is known for the log).
template <auto Kernel, typename... Args>
cudaError_t launch_kernel(int num_blocks, int threads, cudaStream_t stream, const Args&... args) {
  log_kernel_launch(kernel_name<Kernel>(), num_blocks, threads, /*cooperative=*/false);
#ifdef FASTCLIP_CUDA_ON_CPU
  (void)stream;
  return simt::launch(simt::LaunchShape{kernel_name<Kernel>(), static_cast<unsigned>(num_blocks),
                                        static_cast<unsigned>(threads), /*cooperative=*/false},
                      [&] { Kernel(args...); });
#else
  Kernel<<<num_blocks, threads, 0, stream>>>(args...);
  return cudaGetLastError();
#endif
}

}  // namespace cuda
}  // namespace fastclip
