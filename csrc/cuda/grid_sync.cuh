// The grid-wide barrier of a cooperative launch (launch_cooperative_kernel): cooperative groups'
// on the GPU, the execution layer's on the CPU, where all blocks of such a launch run at once.
#pragma once

#ifdef FASTCLIP_CUDA_ON_CPU
#include "../simt/device.h"
#else
#include <cooperative_groups.h>
#endif

namespace fastclip {
namespace cuda {

__device__ __forceinline__ void grid_sync() {
#ifdef FASTCLIP_CUDA_ON_CPU
  ::fastclip::simt::grid_barrier();
#else
  cooperative_groups::this_grid().sync();
#endif
}

}  // namespace cuda
}  // namespace fastclip
