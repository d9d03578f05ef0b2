// clip_grad_norm_ on the device: the norm kernel, then the clip-by-norm kernel reading the total
// the first one wrote, in stream order on one uploaded plan. Two launches, no host sync.
#include "kernels.h"

namespace fastclip {
namespace cuda {

cudaError_t launch_multi_tensor_clip_grad_norm(const NormParams& norm, const ClipByNormParams& clip, int num_blocks,
                                               cudaStream_t stream) {
  const cudaError_t error = launch_multi_tensor_norm(norm, num_blocks, stream);
  if (error != cudaSuccess) return error;
  return launch_multi_tensor_clip_by_norm(clip, num_blocks, stream);
}

}  // namespace cuda
}  // namespace fastclip
