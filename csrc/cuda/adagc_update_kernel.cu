// AdaGC's statistics step (adagc_update_) on the device: one block, a thread per entry, running
// exactly the functions the CPU op runs (common/adagc_step.h) on the same state.
#include "device_utils.cuh"
#include "launch.cuh"
#include "stats_kernels.h"

namespace fastclip {
namespace cuda {
namespace {

constexpr int kStatsThreads = 256;

// Every thread reads the step count before the barrier; thread 0 increments it after.
__global__ void __launch_bounds__(kStatsThreads, 1) adagc_update_kernel(const AdaGCConfig config, double* gamma,
                                                                     double* steps, const EntryParams e) {
  const double total = load_as_double(e.total_norm.data, e.total_norm.dtype, 0);
  const double finite_steps = steps[0];
  for (int64_t j = threadIdx.x; j < e.num_entries; j += blockDim.x) {
    adagc_entry(config, gamma, finite_steps, e.out, j, load_as_double(e.norms.data, e.norms.dtype, j), total);
  }
  __syncthreads();
  if (threadIdx.x == 0) adagc_finish(config, steps, e.result, e.out, e.num_entries, total);
}

}  // namespace

cudaError_t launch_adagc_update(const AdaGCConfig& config, double* gamma, double* steps, const EntryParams& entries,
                                cudaStream_t stream) {
  return launch_kernel<adagc_update_kernel>(1, kStatsThreads, stream, config, gamma, steps, entries);
}

}  // namespace cuda
}  // namespace fastclip
