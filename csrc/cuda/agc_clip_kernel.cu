// NFNets unit-wise clipping (agc_clip_), kernels.h's three kernels: agc_clip_kernel takes the
// short rows in a grid-stride loop, reduces a row's param and grad sums of squares and rescales
// the row right away while it is still in L2; agc_partials_kernel and agc_scale_kernel take the
// long rows' segments, the first writing each segment's sums, the second combining a row's sums
// and rescaling the segment. The factor is common/agc_step.h's, as on the CPU, which also cuts
// long rows into parts.
#include "../common/agc_step.h"
#include "launch.cuh"
#include "vectorized.cuh"

namespace fastclip {
namespace cuda {
namespace {

// sum(x^2) over elements [offset, offset + n) of device data of `dtype`, valid on thread 0.
// Accumulated as the CPU op accumulates it: in float, or in double for float64 data.
// `scratch` holds kAgcThreads / 32 doubles.
template <typename Load>
__device__ double sum_of_squares(const void* data, int32_t dtype, int64_t offset, int64_t n, double* scratch) {
  NormAccumulator<NormKind::kL2, float, Load> float_sum{2.0f};
  NormAccumulator<NormKind::kL2, double, Load> double_sum{2.0};
  visit_by_dtype<kAgcThreads, /*kUnroll=*/2>(data, dtype, offset, n, float_sum, double_sum);
  if (static_cast<DType>(dtype) == DType::kFloat64) {
    return block_reduce<NormKind::kL2, double, kAgcThreads>(double_sum.acc, scratch);
  }
  return block_reduce<NormKind::kL2, float, kAgcThreads>(float_sum.acc, reinterpret_cast<float*>(scratch));
}

// The entry holding `index`: the largest whose first index (first_row, or first_segment; an entry
// with none shares it with the next) is <= index. Plain loads: the kernels that rewrite data read
// nothing through the read-only cache.
template <int64_t AgcTensor::* kFirst>
__device__ int32_t entry_of(const AgcParams& params, int64_t index) {
  int32_t lo = 0, hi = params.num_tensors - 1;
  while (lo < hi) {
    const int32_t mid = lo + (hi - lo + 1) / 2;
    if (params.tensors[mid].*kFirst <= index) lo = mid;
    else hi = mid - 1;
  }
  return lo;
}

// A short row, or a long row's segment: what a kernel needs of it, read from its entry.
struct Unit {
  void* grad;
  const void* param;
  int32_t grad_dtype, param_dtype;
  int64_t begin, end;         // the unit's elements
  int64_t segments_per_row;   // segments
  int64_t row_first_segment;  // segments: the index of the row's first segment's partials
};

__device__ Unit short_row(const AgcParams& params, int64_t index) {
  const AgcTensor& t = params.tensors[entry_of<&AgcTensor::first_row>(params, index)];
  Unit u;
  u.grad = t.grad;
  u.param = t.param;
  u.grad_dtype = t.grad_dtype;
  u.param_dtype = t.param_dtype;
  u.begin = (index - t.first_row) * t.row_length;
  u.end = u.begin + t.row_length;
  return u;
}

__device__ Unit segment(const AgcParams& params, int64_t index) {
  const AgcTensor& t = params.tensors[entry_of<&AgcTensor::first_segment>(params, index)];
  const int64_t local = index - t.first_segment;
  const int64_t segments_per_row = t.segments_per_row, row_length = t.row_length;
  const int64_t row = local / segments_per_row, segment = local % segments_per_row;
  const int64_t row_begin = row * row_length;
  Unit u;
  u.grad = t.grad;
  u.param = t.param;
  u.grad_dtype = t.grad_dtype;
  u.param_dtype = t.param_dtype;
  u.begin = row_begin + segment * t.segment_length;
  const int64_t segment_end = u.begin + t.segment_length, row_end = row_begin + row_length;
  u.end = segment_end < row_end ? segment_end : row_end;
  u.segments_per_row = segments_per_row;
  u.row_first_segment = t.first_segment + row * segments_per_row;
  return u;
}

// Thread 0 publishes the unit's factor in `factor` (shared), from its sums of squares, as the
// CPU decides it: in float, or in double when either tensor is float64; every thread returns it,
// read before the closing barrier, so the next unit's thread 0 may overwrite it at once.
__device__ double publish_factor(const Unit& u, double param_sq, double grad_sq, const AgcParams& params,
                                 double* factor) {
  if (threadIdx.x == 0) {
    const bool double_math =
        static_cast<DType>(u.grad_dtype) == DType::kFloat64 || static_cast<DType>(u.param_dtype) == DType::kFloat64;
    *factor = double_math ? agc_factor<double>(fc_sqrt(param_sq), fc_sqrt(grad_sq), params.clip_factor, params.eps)
                          : agc_factor<float>(fc_sqrt(param_sq), fc_sqrt(grad_sq), params.clip_factor, params.eps);
  }
  __syncthreads();
  const double value = *factor;
  __syncthreads();
  return value;
}

__device__ void scale_unit(const Unit& u, double factor) {
  if (factor != 1.0) {
    apply_range<kAgcThreads>(u.grad, u.grad_dtype, u.begin, u.end, MulFloat{static_cast<float>(factor)},
                             MulDouble{factor});
  }
}

// kAgcBlocksPerSM resident blocks per SM (at most 80 registers, no spills; a 64-register cap
// spills in the float64 scaling path). It rewrites the grads it reads, so every load is coherent.
__global__ void __launch_bounds__(kAgcThreads, kAgcBlocksPerSM) agc_clip_kernel(const AgcParams params) {
  __shared__ double scratch[kAgcThreads / 32];  // block_reduce's, as float or double
  __shared__ double factor;
  for (int64_t row = blockIdx.x; row < params.total_rows; row += gridDim.x) {  // uniform across the block
    const Unit u = short_row(params, row);
    const double param_sq = sum_of_squares<CoherentLoad>(u.param, u.param_dtype, u.begin, u.end - u.begin, scratch);
    const double grad_sq = sum_of_squares<CoherentLoad>(u.grad, u.grad_dtype, u.begin, u.end - u.begin, scratch);
    scale_unit(u, publish_factor(u, param_sq, grad_sq, params, &factor));
  }
}

// Each long row's segments' sums of squares. Reads only: params and grads through the read-only cache.
__global__ void __launch_bounds__(kAgcThreads, kAgcBlocksPerSM) agc_partials_kernel(const AgcParams params) {
  __shared__ double scratch[kAgcThreads / 32];
  for (int64_t s = blockIdx.x; s < params.total_segments; s += gridDim.x) {  // uniform across the block
    const Unit u = segment(params, s);
    const double param_sq = sum_of_squares<ReadOnlyLoad>(u.param, u.param_dtype, u.begin, u.end - u.begin, scratch);
    const double grad_sq = sum_of_squares<ReadOnlyLoad>(u.grad, u.grad_dtype, u.begin, u.end - u.begin, scratch);
    if (threadIdx.x == 0) {
      params.partials[2 * s] = param_sq;
      params.partials[2 * s + 1] = grad_sq;
    }
  }
}

// The sum of a row's segments' partials (every second double from `first`), valid on thread 0:
// each thread adds its strided share in segment order, then the block's fixed-order reduction.
__device__ double combine_partials(const double* first, int64_t segments, double* scratch) {
  double sum = 0.0;
  for (int64_t k = threadIdx.x; k < segments; k += kAgcThreads) sum += first[2 * k];
  return block_reduce<NormKind::kL2, double, kAgcThreads>(sum, scratch);
}

// Each long row's segment rescaled by the row's factor, from agc_partials_kernel's sums.
__global__ void __launch_bounds__(kAgcThreads, kAgcBlocksPerSM) agc_scale_kernel(const AgcParams params) {
  __shared__ double scratch[kAgcThreads / 32];
  __shared__ double factor;
  for (int64_t s = blockIdx.x; s < params.total_segments; s += gridDim.x) {  // uniform across the block
    const Unit u = segment(params, s);
    const double* row_partials = params.partials + 2 * u.row_first_segment;
    const double param_sq = combine_partials(row_partials, u.segments_per_row, scratch);
    const double grad_sq = combine_partials(row_partials + 1, u.segments_per_row, scratch);
    scale_unit(u, publish_factor(u, param_sq, grad_sq, params, &factor));
  }
}

int blocks_for(int64_t units, int num_blocks) {
  return static_cast<int>(units < num_blocks ? (units > 0 ? units : 1) : num_blocks);
}

}  // namespace

cudaError_t launch_agc_clip(const AgcParams& params, int num_blocks, cudaStream_t stream) {
  if (params.total_rows == 0 && params.total_segments == 0) return cudaSuccess;
  if (params.total_rows > 0) {
    const cudaError_t error =
        launch_kernel<agc_clip_kernel>(blocks_for(params.total_rows, num_blocks), kAgcThreads, stream, params);
    if (error != cudaSuccess || params.total_segments == 0) return error;
  }
  const int blocks = blocks_for(params.total_segments, num_blocks);
  const cudaError_t error = launch_kernel<agc_partials_kernel>(blocks, kAgcThreads, stream, params);
  if (error != cudaSuccess) return error;
  return launch_kernel<agc_scale_kernel>(blocks, kAgcThreads, stream, params);
}

}  // namespace cuda
}  // namespace fastclip
