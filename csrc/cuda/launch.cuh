// The one way a kernel is launched: every launch in csrc/cuda goes through launch_kernel, so there
// is one place that sees each launch (kernel, grid, block, stream) — for a launch log, or for an
// execution layer that runs the kernels without a GPU. Returns the launch's error.
#pragma once

#include <cuda_runtime.h>

#include <utility>

namespace fastclip {
namespace cuda {

template <typename... KernelParams, typename... Args>
cudaError_t launch_kernel(void (*kernel)(KernelParams...), int num_blocks, int threads, cudaStream_t stream,
                          Args&&... args) {
  kernel<<<num_blocks, threads, 0, stream>>>(std::forward<Args>(args)...);
  return cudaGetLastError();
}

}  // namespace cuda
}  // namespace fastclip
