// The stateful clippers' statistics steps (zclip_update_, autoclip_update_, adagc_update_): one
// block each, on the current stream, running exactly the functions the CPU ops run
// (common/clipper_steps.h) on the same state tensors. A handful of scalars per step: the launch
// is the cost, so one block is enough, and it keeps the step free of host syncs and capturable.
#include "clipper_launch.h"
#include "device_utils.cuh"

namespace fastclip {
namespace cuda {
namespace {

constexpr int kStatsThreads = 256;

// One warp launched, one thread works: the step is a short sequential update.
__global__ void __launch_bounds__(32) zclip_update_kernel(const ZClipConfig config, const DeviceValues norm,
                                                          double* state, float* result) {
  if (threadIdx.x == 0) zclip_step(config, state, load_as_double(norm.data, norm.dtype, 0), result);
}

// Entries own distinct history rows (the Python clipper passes each tensor once), so the threads
// update disjoint state; the barrier publishes every entry's coef/threshold to thread 0.
__global__ void __launch_bounds__(kStatsThreads, 1) autoclip_update_kernel(const AutoClipConfig config,
                                                                        const AutoClipBuffers buffers,
                                                                        const EntryOutputs out,
                                                                        const DeviceValues total_norm,
                                                                        const DeviceValues norms,
                                                                        const int64_t num_entries, float* result) {
  const double total = load_as_double(total_norm.data, total_norm.dtype, 0);
  for (int64_t j = threadIdx.x; j < num_entries; j += blockDim.x) {
    autoclip_entry(config, buffers, out, j, load_as_double(norms.data, norms.dtype, j), total);
  }
  __syncthreads();
  if (threadIdx.x == 0) autoclip_finish(config, result, out, num_entries, total);
}

// Every thread reads the step count before the barrier; thread 0 increments it after.
__global__ void __launch_bounds__(kStatsThreads, 1) adagc_update_kernel(const AdaGCConfig config, double* gamma,
                                                                     double* steps, const EntryOutputs out,
                                                                     const DeviceValues total_norm,
                                                                     const DeviceValues norms,
                                                                     const int64_t num_entries, float* result) {
  const double total = load_as_double(total_norm.data, total_norm.dtype, 0);
  const double finite_steps = steps[0];
  for (int64_t j = threadIdx.x; j < num_entries; j += blockDim.x) {
    adagc_entry(config, gamma, finite_steps, out, j, load_as_double(norms.data, norms.dtype, j), total);
  }
  __syncthreads();
  if (threadIdx.x == 0) adagc_finish(config, steps, result, out, num_entries, total);
}

}  // namespace

cudaError_t launch_zclip_update(const ZClipConfig& config, DeviceValues norm, double* state, float* result,
                                cudaStream_t stream) {
  zclip_update_kernel<<<1, 32, 0, stream>>>(config, norm, state, result);
  return cudaGetLastError();
}

cudaError_t launch_autoclip_update(const AutoClipConfig& config, const AutoClipBuffers& buffers,
                                   const EntryOutputs& out, DeviceValues total_norm, DeviceValues norms,
                                   int64_t num_entries, float* result, cudaStream_t stream) {
  autoclip_update_kernel<<<1, kStatsThreads, 0, stream>>>(config, buffers, out, total_norm, norms, num_entries,
                                                          result);
  return cudaGetLastError();
}

cudaError_t launch_adagc_update(const AdaGCConfig& config, double* gamma, double* steps, const EntryOutputs& out,
                                DeviceValues total_norm, DeviceValues norms, int64_t num_entries, float* result,
                                cudaStream_t stream) {
  adagc_update_kernel<<<1, kStatsThreads, 0, stream>>>(config, gamma, steps, out, total_norm, norms, num_entries,
                                                       result);
  return cudaGetLastError();
}

}  // namespace cuda
}  // namespace fastclip
