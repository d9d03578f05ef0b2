// The one vectorised walk over a range of a tensor, run by a whole block, and the visitors the
// kernels walk with: a norm accumulator (norm, AGC's row norms) and an in-place map (scale,
// clamp, AGC's row scaling).
#pragma once

#include <type_traits>

#include "device_utils.cuh"

namespace fastclip {
namespace cuda {

// Visits x[0, n) with a block of kBlockThreads threads (blockDim.x must be kBlockThreads): the
// elements before the first 16-byte boundary one at a time, then 16-byte vectors with kUnroll
// loads in flight per thread before any is used, then the tail one at a time. `visit` provides
//   element(p)      handle the element at p;
//   load(p)         the 16 bytes at p, as a Vec16;
//   vector(p, v)    handle the 16 bytes v loaded from p (and store them back, for in-place maps).
template <int kBlockThreads, int kUnroll, typename T, typename Visitor>
__device__ __forceinline__ void visit_vectorized(T* x, int64_t n, Visitor& visit) {
  using scalar_t = std::remove_const_t<T>;
  constexpr int kVec = Vec16<scalar_t>::kSize;
  const int64_t head = misaligned_head(x, n);
  for (int64_t i = threadIdx.x; i < head; i += kBlockThreads) visit.element(x + i);
  T* body = x + head;
  const int64_t m = n - head;
  const int64_t num_vecs = m / kVec;
  int64_t i = threadIdx.x;
  for (; i + (kUnroll - 1) * kBlockThreads < num_vecs; i += kUnroll * kBlockThreads) {
    Vec16<scalar_t> vals[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) vals[u] = visit.load(body + (i + u * kBlockThreads) * kVec);
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) visit.vector(body + (i + u * kBlockThreads) * kVec, vals[u]);
  }
  for (; i < num_vecs; i += kBlockThreads) {
    Vec16<scalar_t> vals = visit.load(body + i * kVec);
    visit.vector(body + i * kVec, vals);
  }
  for (int64_t k = num_vecs * kVec + threadIdx.x; k < m; k += kBlockThreads) visit.element(body + k);
}

// How a visitor reads data: through the read-only cache (data no thread writes during the
// kernel), or coherently in L2 (data the kernel also rewrites).
template <bool kReadOnly>
struct GlobalLoad {
  template <typename scalar_t>
  __device__ static scalar_t one(const scalar_t* p) {
    if constexpr (kReadOnly) return __ldg(p);
    else return __ldcg(p);
  }
  template <typename scalar_t>
  __device__ static Vec16<scalar_t> vector(const scalar_t* p) {
    if constexpr (kReadOnly) return load_vec16_readonly(p);
    else return load_vec16_coherent(p);
  }
};
using ReadOnlyLoad = GlobalLoad<true>;
using CoherentLoad = GlobalLoad<false>;

// A visitor that reads each element once and hands its value to Derived::add(value): the loads
// go through Load (ReadOnlyLoad or CoherentLoad).
template <typename Derived, typename Load>
struct ElementReader {
  template <typename scalar_t>
  __device__ __forceinline__ void element(const scalar_t* x) {
    static_cast<Derived*>(this)->add(Load::one(x));
  }
  template <typename scalar_t>
  __device__ __forceinline__ Vec16<scalar_t> load(const scalar_t* x) const {
    return Load::vector(x);
  }
  template <typename scalar_t>
  __device__ __forceinline__ void vector(const scalar_t*, const Vec16<scalar_t>& v) {
#pragma unroll
    for (int j = 0; j < Vec16<scalar_t>::kSize; ++j) static_cast<Derived*>(this)->add(v.v[j]);
  }
};

// This thread's partial of a p-norm (norm_math.h) over the elements it visits. A float L2 sum
// also ORs the bits of the values it adds, so that a chunk whose sum is exactly 0 can be told
// to be all zeros (rather than all underflowed squares) without reading it again.
template <NormKind kind, typename acc_t, typename Load = ReadOnlyLoad>
struct NormAccumulator : ElementReader<NormAccumulator<kind, acc_t, Load>, Load> {
  static constexpr bool kTracksZeros = kind == NormKind::kL2 && std::is_same_v<acc_t, float>;
  acc_t p;
  acc_t acc = acc_t(0);
  uint32_t bits = 0;  // with kTracksZeros

  __device__ explicit NormAccumulator(acc_t p) : p(p) {}

  template <typename scalar_t>
  __device__ __forceinline__ void add(scalar_t x) {
    const acc_t value = to_acc<acc_t>(x);
    if constexpr (kTracksZeros) bits |= float_bits(value);
    acc = norm_combine<kind>(acc, norm_element<kind>(value, p));
  }
};

// x = op(x) in place, in the opmath type; every byte is touched once, so loads and stores stream.
template <typename Op>
struct InPlaceMap {
  Op op;

  template <typename scalar_t>
  __device__ __forceinline__ void map(scalar_t& x) const {
    store_as(x, op(to_acc<opmath_t<scalar_t>>(x)));
  }
  template <typename scalar_t>
  __device__ __forceinline__ void element(scalar_t* x) const {
    map(*x);
  }
  template <typename scalar_t>
  __device__ __forceinline__ Vec16<scalar_t> load(const scalar_t* x) const {
    return load_vec16_streaming(x);
  }
  template <typename scalar_t>
  __device__ __forceinline__ void vector(scalar_t* x, Vec16<scalar_t>& v) const {
#pragma unroll
    for (int j = 0; j < Vec16<scalar_t>::kSize; ++j) map(v.v[j]);
    store_vec16_streaming(x, v);
  }
};

// visit_vectorized over elements [begin, begin + n) of `data`, whose DType is `dtype`: with
// float_visitor for float32/float16/bfloat16 data, double_visitor for float64. Data is void or
// const void.
template <int kBlockThreads, int kUnroll, typename Data, typename FloatVisitor, typename DoubleVisitor>
__device__ __forceinline__ void visit_by_dtype(Data* data, int32_t dtype, int64_t begin, int64_t n,
                                               FloatVisitor& float_visitor, DoubleVisitor& double_visitor) {
  auto as = [&](auto typed) {  // data as a pointer to the dtype's type, const if data is
    using scalar_t = decltype(typed);
    return static_cast<std::conditional_t<std::is_const_v<Data>, const scalar_t, scalar_t>*>(data) + begin;
  };
  switch (static_cast<DType>(dtype)) {
    case DType::kFloat32: return visit_vectorized<kBlockThreads, kUnroll>(as(float{}), n, float_visitor);
    case DType::kFloat16: return visit_vectorized<kBlockThreads, kUnroll>(as(__half{}), n, float_visitor);
    case DType::kBFloat16: return visit_vectorized<kBlockThreads, kUnroll>(as(__nv_bfloat16{}), n, float_visitor);
    case DType::kFloat64: return visit_vectorized<kBlockThreads, kUnroll>(as(double{}), n, double_visitor);
  }
}

// Applies float_op to elements [begin, end) of float32/float16/bfloat16 data, double_op to
// float64 data; `dtype` is a DType. Four loads in flight per thread: enough bytes to stream.
template <int kBlockThreads = kThreads, typename FloatOp, typename DoubleOp>
__device__ void apply_range(void* data, int32_t dtype, int64_t begin, int64_t end, const FloatOp& float_op,
                            const DoubleOp& double_op) {
  InPlaceMap<FloatOp> float_map{float_op};
  InPlaceMap<DoubleOp> double_map{double_op};
  visit_by_dtype<kBlockThreads, /*kUnroll=*/4>(data, dtype, begin, end - begin, float_map, double_map);
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

// clear_on_zero: a stored zero, whatever x was (NaN and inf included).
template <typename opmath_t>
struct Zero {
  __device__ opmath_t operator()(opmath_t) const { return opmath_t(0); }
};

// Scales elements [begin, end) of a planned tensor by coef (uniform across the block): nothing
// is written for a coefficient of exactly 1, and with clear_on_zero zeros are stored for 0.
__device__ __forceinline__ void scale_chunk(const TensorMeta& meta, int64_t begin, int64_t end, double coef,
                                            bool clear_on_zero) {
  if (clear_on_zero && coef == 0.0) {
    apply_range(meta.data, meta.dtype, begin, end, Zero<float>{}, Zero<double>{});
  } else if (coef != 1.0) {
    apply_range(meta.data, meta.dtype, begin, end, MulFloat{static_cast<float>(coef)}, MulDouble{coef});
  }
}

// The scale kernel's work (ScaleParams), spread over the grid: every chunk of params.list scaled
// by its tensor's factor.
__device__ __forceinline__ void scale_chunks(const ScaleParams& params) {
  for_each_chunk(params.list, [&](int64_t, const ChunkMeta& chunk, const TensorMeta& meta, int64_t begin, int64_t end) {
    double coef = load_as_double(params.factor.data, params.factor.dtype, params.per_tensor ? chunk.tensor : 0);
    if (params.zero_where_set) coef = coef != 0.0 ? 0.0 : 1.0;
    scale_chunk(meta, begin, end, coef, params.clear_on_zero);
  });
}

// Scales elements [begin, end) of a planned tensor by torch's clip coefficient as torch's CUDA
// clip_grads_with_norm_ applies it: _foreach_mul_ converts the float coefficient to the grads'
// dtype before multiplying in float, so an fp16/bf16 grad is scaled by the coefficient rounded
// to fp16/bf16 (torch's CPU path, and fastclip's CPU kernels, multiply by the float coefficient).
__device__ __forceinline__ void clip_chunk(const TensorMeta& meta, int64_t begin, int64_t end, double coef) {
  if (coef == 1.0) return;
  float factor = static_cast<float>(coef);
  if (static_cast<DType>(meta.dtype) == DType::kFloat16) factor = __half2float(__float2half_rn(factor));
  if (static_cast<DType>(meta.dtype) == DType::kBFloat16) factor = __bfloat162float(__float2bfloat16_rn(factor));
  apply_range(meta.data, meta.dtype, begin, end, MulFloat{factor}, MulDouble{coef});
}

}  // namespace cuda
}  // namespace fastclip
