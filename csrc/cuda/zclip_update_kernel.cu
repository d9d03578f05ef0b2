// ZClip's statistics step (zclip_update_) on the device: one thread runs exactly the function the
// CPU op runs (common/zclip_step.h) on the same state tensor. A handful of scalars per step: the
// launch is the cost, and it keeps the step free of host syncs and capturable in a graph.
#include "device_utils.cuh"
#include "launch.cuh"
#include "stats_kernels.h"

namespace fastclip {
namespace cuda {
namespace {

// One warp launched, one thread works: the step is a short sequential update.
__global__ void __launch_bounds__(32) zclip_update_kernel(const ZClipConfig config, const DeviceValues norm,
                                                          double* state, float* result) {
  if (threadIdx.x == 0) zclip_step(config, state, load_as_double(norm.data, norm.dtype, 0), result);
}

}  // namespace

cudaError_t launch_zclip_update(const ZClipConfig& config, DeviceValues norm, double* state, float* result,
                                cudaStream_t stream) {
  return launch_kernel<zclip_update_kernel>(1, 32, stream, config, norm, state, result);
}

}  // namespace cuda
}  // namespace fastclip
