// In-place multi-tensor scale by a device-held factor (one value, one per tensor, or torch's
// clip coefficient computed from a device-held total norm). One launch, no host sync; a tensor
// whose coefficient is exactly 1 is not written, and with clear_on_zero one whose coefficient is
// exactly 0 is filled with zeros.
#include "elementwise_inplace.cuh"

namespace fastclip {
namespace cuda {
namespace {

// The coefficient for `tensor`, computed as the CPU backend does (common/norm_math.h): in
// float, or in double when the factor is float64.
__device__ double coefficient(const ScaleParams& params, int32_t tensor) {
  switch (params.factor_kind) {
    case FactorKind::kScalar: return load_as_double(params.factor, params.factor_dtype, 0);
    case FactorKind::kPerTensor: return load_as_double(params.factor, params.factor_dtype, tensor);
    case FactorKind::kClipByNorm: {
      const double total = load_as_double(params.factor, params.factor_dtype, 0);
      if (static_cast<DType>(params.factor_dtype) == DType::kFloat64) return clip_coefficient<double>(params.bound, total);
      return clip_coefficient<float>(static_cast<float>(params.bound), static_cast<float>(total));
    }
  }
  return 1.0;
}

// clear_on_zero: a stored zero, whatever x was (NaN and inf included).
template <typename opmath_t>
struct Zero {
  __device__ opmath_t operator()(opmath_t) const { return opmath_t(0); }
};

// Two resident blocks per SM (at most 64 registers) for enough loads in flight.
__global__ void __launch_bounds__(kThreads, 2) multi_tensor_scale_kernel(const ScaleParams params) {
  for_each_chunk(params.list, [&](int64_t, const ChunkMeta& chunk, const TensorMeta& meta, int64_t begin, int64_t end) {
    const double coef = coefficient(params, chunk.tensor);  // uniform across the block
    if (params.clear_on_zero && coef == 0.0) {
      apply_chunk(meta, begin, end, Zero<float>{}, Zero<double>{});
      return;
    }
    if (coef == 1.0) return;  // nothing to write
    apply_chunk(meta, begin, end, MulFloat{static_cast<float>(coef)}, MulDouble{coef});
  });
}

}  // namespace

cudaError_t launch_multi_tensor_scale(const ScaleParams& params, int num_blocks, cudaStream_t stream) {
  multi_tensor_scale_kernel<<<num_blocks, kThreads, 0, stream>>>(params);
  return cudaGetLastError();
}

}  // namespace cuda
}  // namespace fastclip
