// In-place multi-tensor scale by torch's clip coefficient, computed on the device from a
// device-held total norm (clip_grads_with_norm_). One launch, no host sync; nothing is written
// when the coefficient is exactly 1.
#include "launch.cuh"
#include "vectorized.cuh"

namespace fastclip {
namespace cuda {
namespace {

// Two resident blocks per SM (at most 64 registers) for enough loads in flight.
__global__ void __launch_bounds__(kThreads, 2) multi_tensor_clip_by_norm_kernel(const ClipByNormParams params) {
  double total = load_as_double(params.total_norm.data, params.total_norm.dtype, 0);
  if (params.accumulated_total.data != nullptr) {
    total = coefficient_total(total, load_as_double(params.accumulated_total.data, params.accumulated_total.dtype, 0));
  }
  const double coef = clip_coefficient_of_stored(total, params.total_norm.dtype, params.max_norm);  // uniform
  for_each_chunk(params.list, [&](int64_t, const ChunkMeta&, const TensorMeta& meta, int64_t begin, int64_t end) {
    clip_chunk(meta, begin, end, coef);
  });
}

}  // namespace

cudaError_t launch_multi_tensor_clip_by_norm(const ClipByNormParams& params, int num_blocks, cudaStream_t stream) {
  return launch_kernel<multi_tensor_clip_by_norm_kernel>(num_blocks, kThreads, stream, params);
}

}  // namespace cuda
}  // namespace fastclip
