// NFNets unit-wise clipping (agc_clip_) in one launch: each block takes whole output rows of
// the list (a grid-stride loop over global row indices), reduces the param row's and the grad
// row's sums of squares, and rescales the grad row right away while it is still in L2.
// The factor is common/agc_step.h's, as on the CPU. A row is one block's work: a very long row
// (a huge 1-d tensor is a single row) streams through one SM, where the CPU op cuts rows over
// 256K elements into chunks; splitting them here would take a second pass (the factor needs the
// whole row's norms before any element is scaled).
#include "../common/agc_step.h"
#include "launch.cuh"
#include "vectorized.cuh"

namespace fastclip {
namespace cuda {
namespace {

// sum(x^2) over elements [offset, offset + n) of device data of `dtype`, valid on thread 0.
// Accumulated as the CPU op accumulates it: in float, or in double for float64 data. Params are
// read through the read-only cache, grads (which this kernel rewrites) coherently in L2.
// `scratch` holds kAgcThreads / 32 doubles.
template <typename Load>
__device__ double row_sum_squares(const void* data, int32_t dtype, int64_t offset, int64_t n, double* scratch) {
  NormAccumulator<NormKind::kL2, float, Load> float_sum{2.0f};
  NormAccumulator<NormKind::kL2, double, Load> double_sum{2.0};
  visit_by_dtype<kAgcThreads, /*kUnroll=*/2>(data, dtype, offset, n, float_sum, double_sum);
  if (static_cast<DType>(dtype) == DType::kFloat64) {
    return block_reduce<NormKind::kL2, double, kAgcThreads>(double_sum.acc, scratch);
  }
  return block_reduce<NormKind::kL2, float, kAgcThreads>(float_sum.acc, reinterpret_cast<float*>(scratch));
}

// The largest entry whose first row is <= row (first rows increase strictly from 0).
__device__ int32_t tensor_of_row(const AgcParams& params, int64_t row) {
  int32_t lo = 0, hi = params.num_tensors - 1;
  while (lo < hi) {
    const int32_t mid = lo + (hi - lo + 1) / 2;
    if (__ldg(&params.tensors[mid].first_row) <= row) lo = mid;
    else hi = mid - 1;
  }
  return lo;
}

// kAgcBlocksPerSM resident blocks per SM (at most 80 registers, no spills; a 64-register cap
// spills in the float64 scaling path).
__global__ void __launch_bounds__(kAgcThreads, kAgcBlocksPerSM) agc_clip_kernel(const AgcParams params) {
  __shared__ double scratch[kAgcThreads / 32];  // block_reduce's, as float or double
  __shared__ double row_factor;                 // thread 0 publishes each row's factor here
  for (int64_t row = blockIdx.x; row < params.total_rows; row += gridDim.x) {  // uniform across the block
    const AgcTensor t = params.tensors[tensor_of_row(params, row)];
    const int64_t n = t.row_length;
    const int64_t offset = (row - t.first_row) * n;
    const double param_sq = row_sum_squares<ReadOnlyLoad>(t.param, t.param_dtype, offset, n, scratch);
    const double grad_sq = row_sum_squares<CoherentLoad>(t.grad, t.grad_dtype, offset, n, scratch);
    if (threadIdx.x == 0) {
      // As the CPU decides it: the factor in float, or in double when either tensor is float64.
      const bool double_math =
          static_cast<DType>(t.grad_dtype) == DType::kFloat64 || static_cast<DType>(t.param_dtype) == DType::kFloat64;
      row_factor = double_math ? agc_factor<double>(fc_sqrt(param_sq), fc_sqrt(grad_sq), params.clip_factor, params.eps)
                               : agc_factor<float>(fc_sqrt(param_sq), fc_sqrt(grad_sq), params.clip_factor, params.eps);
    }
    __syncthreads();
    // Every thread reads the factor here, before the next row's reductions reach their first
    // barrier; thread 0 overwrites it only after that barrier.
    const double factor = row_factor;
    if (factor != 1.0) {
      apply_range<kAgcThreads>(t.grad, t.grad_dtype, offset, offset + n, MulFloat{static_cast<float>(factor)},
                               MulDouble{factor});
    }
  }
}

}  // namespace

cudaError_t launch_agc_clip(const AgcParams& params, int num_blocks, cudaStream_t stream) {
  return launch_kernel<agc_clip_kernel>(num_blocks, kAgcThreads, stream, params);
}

}  // namespace cuda
}  // namespace fastclip
