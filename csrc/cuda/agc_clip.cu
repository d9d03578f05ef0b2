// NFNets unit-wise clipping (agc_clip_) in one launch: each block takes whole output rows of
// the list (a grid-stride loop over global row indices), reduces the param row's and the grad
// row's sums of squares, and rescales the grad row right away while it is still in L2.
// The factor is common/agc_step.h's, as on the CPU. A row is one block's work: a very long row
// (a huge 1-d tensor is a single row) streams through one SM, where the CPU op cuts rows over
// 256K elements into chunks; splitting them here would take a second pass (the factor needs the
// whole row's norms before any element is scaled).
#include "elementwise_inplace.cuh"

#include "../common/agc_step.h"

namespace fastclip {
namespace cuda {
namespace {

// One element or 16 bytes: through the read-only cache for params, coherently (L2) for grads,
// which this kernel rewrites.
template <bool kReadOnly, typename scalar_t>
__device__ __forceinline__ scalar_t load_one(const scalar_t* p) {
  if constexpr (kReadOnly) return __ldg(p);
  else return __ldcg(p);
}
template <bool kReadOnly, typename scalar_t>
__device__ __forceinline__ Vec16<scalar_t> load_vec(const scalar_t* p) {
  if constexpr (kReadOnly) return load_vec16_readonly(p);
  else return load_vec16_coherent(p);
}

// This thread's share of sum(x^2) over x[0, n): 16-byte loads where aligned.
template <typename acc_t, bool kReadOnly, typename scalar_t>
__device__ acc_t thread_sum_squares(const scalar_t* x, int64_t n) {
  acc_t acc = acc_t(0);
  const int64_t head = misaligned_head(x, n);
  for (int64_t i = threadIdx.x; i < head; i += kAgcThreads) {
    const acc_t v = to_acc<acc_t>(load_one<kReadOnly>(x + i));
    acc += v * v;
  }
  const scalar_t* body = x + head;
  const int64_t m = n - head;
  constexpr int kVec = Vec16<scalar_t>::kSize;
  const int64_t num_vecs = m / kVec;
  constexpr int kUnroll = 2;
  int64_t i = threadIdx.x;
  for (; i + (kUnroll - 1) * kAgcThreads < num_vecs; i += kUnroll * kAgcThreads) {
    Vec16<scalar_t> vals[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) vals[u] = load_vec<kReadOnly>(body + (i + u * kAgcThreads) * kVec);
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
#pragma unroll
      for (int j = 0; j < kVec; ++j) {
        const acc_t v = to_acc<acc_t>(vals[u].v[j]);
        acc += v * v;
      }
    }
  }
  for (; i < num_vecs; i += kAgcThreads) {
    const Vec16<scalar_t> vals = load_vec<kReadOnly>(body + i * kVec);
#pragma unroll
    for (int j = 0; j < kVec; ++j) {
      const acc_t v = to_acc<acc_t>(vals.v[j]);
      acc += v * v;
    }
  }
  for (int64_t k = num_vecs * kVec + threadIdx.x; k < m; k += kAgcThreads) {
    const acc_t v = to_acc<acc_t>(load_one<kReadOnly>(body + k));
    acc += v * v;
  }
  return acc;
}

// sum(x^2) over elements [offset, offset + n) of device data of `dtype`, valid on thread 0.
// Accumulated as the CPU op accumulates it: in float, or in double for float64 data. `scratch`
// holds kAgcThreads / 32 doubles.
template <bool kReadOnly>
__device__ double row_sum_squares(const void* data, int32_t dtype, int64_t offset, int64_t n, double* scratch) {
  float* float_scratch = reinterpret_cast<float*>(scratch);
  switch (static_cast<DType>(dtype)) {
    case DType::kFloat32:
      return block_reduce<NormKind::kL2, float, kAgcThreads>(
          thread_sum_squares<float, kReadOnly>(static_cast<const float*>(data) + offset, n), float_scratch);
    case DType::kFloat16:
      return block_reduce<NormKind::kL2, float, kAgcThreads>(
          thread_sum_squares<float, kReadOnly>(static_cast<const __half*>(data) + offset, n), float_scratch);
    case DType::kBFloat16:
      return block_reduce<NormKind::kL2, float, kAgcThreads>(
          thread_sum_squares<float, kReadOnly>(static_cast<const __nv_bfloat16*>(data) + offset, n), float_scratch);
    case DType::kFloat64:
      return block_reduce<NormKind::kL2, double, kAgcThreads>(
          thread_sum_squares<double, kReadOnly>(static_cast<const double*>(data) + offset, n), scratch);
  }
  return 0.0;
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
    const double param_sq = row_sum_squares</*kReadOnly=*/true>(t.param, t.param_dtype, offset, n, scratch);
    const double grad_sq = row_sum_squares</*kReadOnly=*/false>(t.grad, t.grad_dtype, offset, n, scratch);
    if (threadIdx.x == 0) {
      // As the CPU decides it: the factor in float, or in double when either tensor is float64.
      const bool double_math = static_cast<DType>(t.grad_dtype) == DType::kFloat64 ||
                               static_cast<DType>(t.param_dtype) == DType::kFloat64;
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
  agc_clip_kernel<<<num_blocks, kAgcThreads, 0, stream>>>(params);
  return cudaGetLastError();
}

}  // namespace cuda
}  // namespace fastclip
