// AutoClip's statistics step (autoclip_update_) on the device: one block, a thread per entry,
// running exactly the functions the CPU op runs (common/autoclip_step.h) on the same state.
#include "device_utils.cuh"
#include "launch.cuh"
#include "stats_kernels.h"

namespace fastclip {
namespace cuda {
namespace {

constexpr int kStatsThreads = 256;

// Entries own distinct history rows (the Python clipper passes each tensor once), so the threads
// update disjoint state; the barrier publishes every entry's coef/threshold to thread 0.
__global__ void __launch_bounds__(kStatsThreads, 1) autoclip_update_kernel(const AutoClipConfig config,
                                                                        const AutoClipBuffers buffers,
                                                                        const EntryParams e) {
  const double total = load_as_double(e.total_norm.data, e.total_norm.dtype, 0);
  for (int64_t j = threadIdx.x; j < e.num_entries; j += blockDim.x) {
    autoclip_entry(config, buffers, e.out, j, load_as_double(e.norms.data, e.norms.dtype, j), total);
  }
  __syncthreads();
  if (threadIdx.x == 0) autoclip_finish(config, e.result, e.out, e.num_entries, total);
}

}  // namespace

cudaError_t launch_autoclip_update(const AutoClipConfig& config, const AutoClipBuffers& buffers,
                                   const EntryParams& entries, cudaStream_t stream) {
  return launch_kernel<autoclip_update_kernel>(1, kStatsThreads, stream, config, buffers, entries);
}

}  // namespace cuda
}  // namespace fastclip
