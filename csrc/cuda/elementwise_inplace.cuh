// In-place elementwise pass over a chunk list with 16-byte loads and stores where aligned.
// Shared by the scale and clamp kernels; `op(x)` maps an opmath value to its new value.
#pragma once

#include "device_utils.cuh"

namespace fastclip {
namespace cuda {

// Run by a whole block of kBlockThreads threads (blockDim.x must be kBlockThreads).
template <int kBlockThreads = kThreads, typename scalar_t, typename Op>
__device__ void apply_in_place(scalar_t* data, int64_t begin, int64_t end, const Op& op) {
  using opmath_t = typename ScalarOf<scalar_t>::opmath;
  const int64_t head = misaligned_head(data + begin, end - begin);
  for (int64_t i = threadIdx.x; i < head; i += kBlockThreads) store_as(data[begin + i], op(to_acc<opmath_t>(data[begin + i])));
  scalar_t* x = data + begin + head;
  const int64_t n = end - begin - head;
  int64_t scalar_from = 0;
  {
    constexpr int kVec = Vec16<scalar_t>::kSize;
    const int64_t num_vecs = n / kVec;
    // Four loads in flight per thread before any store: enough bytes in flight to stream.
    constexpr int kUnroll = 4;
    int64_t i = threadIdx.x;
    for (; i + (kUnroll - 1) * kBlockThreads < num_vecs; i += kUnroll * kBlockThreads) {
      Vec16<scalar_t> vals[kUnroll];
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) vals[u] = load_vec16_streaming(x + (i + u * kBlockThreads) * kVec);
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
#pragma unroll
        for (int j = 0; j < kVec; ++j) store_as(vals[u].v[j], op(to_acc<opmath_t>(vals[u].v[j])));
        store_vec16_streaming(x + (i + u * kBlockThreads) * kVec, vals[u]);
      }
    }
    for (; i < num_vecs; i += kBlockThreads) {
      Vec16<scalar_t> vals = load_vec16_streaming(x + i * kVec);
#pragma unroll
      for (int j = 0; j < kVec; ++j) store_as(vals.v[j], op(to_acc<opmath_t>(vals.v[j])));
      store_vec16_streaming(x + i * kVec, vals);
    }
    scalar_from = num_vecs * kVec;
  }
  for (int64_t i = scalar_from + threadIdx.x; i < n; i += kBlockThreads) {
    store_as(x[i], op(to_acc<opmath_t>(x[i])));
  }
}

// Applies float_op to elements [begin, end) of float32/float16/bfloat16 data, double_op to
// float64 data; `dtype` is a DType.
template <int kBlockThreads = kThreads, typename FloatOp, typename DoubleOp>
__device__ void apply_range(void* data, int32_t dtype, int64_t begin, int64_t end, const FloatOp& float_op,
                            const DoubleOp& double_op) {
  switch (static_cast<DType>(dtype)) {
    case DType::kFloat32: apply_in_place<kBlockThreads>(static_cast<float*>(data), begin, end, float_op); break;
    case DType::kFloat16: apply_in_place<kBlockThreads>(static_cast<__half*>(data), begin, end, float_op); break;
    case DType::kBFloat16:
      apply_in_place<kBlockThreads>(static_cast<__nv_bfloat16*>(data), begin, end, float_op);
      break;
    case DType::kFloat64: apply_in_place<kBlockThreads>(static_cast<double*>(data), begin, end, double_op); break;
  }
}

// The same over a chunk of a planned tensor list.
template <typename FloatOp, typename DoubleOp>
__device__ void apply_chunk(const TensorMeta& meta, int64_t begin, int64_t end, const FloatOp& float_op,
                            const DoubleOp& double_op) {
  apply_range(meta.data, meta.dtype, begin, end, float_op, double_op);
}

// x * factor in the opmath type: float for float32/float16/bfloat16 data, double for float64.
struct MulFloat {
  float factor;
  __device__ float operator()(float x) const { return x * factor; }
};
struct MulDouble {
  double factor;
  __device__ double operator()(double x) const { return x * factor; }
};

}  // namespace cuda
}  // namespace fastclip
