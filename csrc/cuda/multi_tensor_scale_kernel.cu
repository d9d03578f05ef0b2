// In-place multi-tensor scale by a device-held factor (one value, or one per tensor). One launch,
// no host sync; a tensor whose factor is exactly 1 is not written, and with clear_on_zero one
// whose factor is exactly 0 is filled with zeros.
#include "launch.cuh"
#include "vectorized.cuh"

namespace fastclip {
namespace cuda {
namespace {

// Two resident blocks per SM (at most 64 registers) for enough loads in flight.
__global__ void __launch_bounds__(kThreads, 2) multi_tensor_scale_kernel(const ScaleParams params) {
  scale_chunks(params);
}

}  // namespace

cudaError_t launch_multi_tensor_scale(const ScaleParams& params, int num_blocks, cudaStream_t stream) {
  return launch_kernel<multi_tensor_scale_kernel>(num_blocks, kThreads, stream, params);
}

}  // namespace cuda
}  // namespace fastclip
