// In-place clamp of every element of a tensor list to [-bound, bound] (clip_grad_value_).
#include "launch.cuh"
#include "vectorized.cuh"

namespace fastclip {
namespace cuda {
namespace {

template <typename opmath_t>
struct ClampOp {
  opmath_t bound;
  __device__ opmath_t operator()(opmath_t x) const { return clamp_symmetric(x, bound); }
};

// Two resident blocks per SM (at most 64 registers) for enough loads in flight.
__global__ void __launch_bounds__(kThreads, 2) multi_tensor_clamp_kernel(const ClampParams params) {
  for_each_chunk(params.list, [&](int64_t, const ChunkMeta&, const TensorMeta& meta, int64_t begin, int64_t end) {
    apply_range(meta.data, meta.dtype, begin, end, ClampOp<float>{static_cast<float>(params.bound)},
                ClampOp<double>{params.bound});
  });
}

}  // namespace

cudaError_t launch_multi_tensor_clamp(const ClampParams& params, int num_blocks, cudaStream_t stream) {
  return launch_kernel<multi_tensor_clamp_kernel>(num_blocks, kThreads, stream, params);
}

}  // namespace cuda
}  // namespace fastclip
