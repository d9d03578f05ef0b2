// From the norm's chunk partials to per-tensor norms and the total, in an order fixed by the list
// alone (never by the grid): each tensor's chunk partials are folded into its contribution, by
// one thread (up to kThreadFoldChunks chunks, in sequence) or, for a tensor cut into more chunks
// (a large flat buffer), by a warp; the contributions are then reduced by one block's tree. The
// norm kernel's last block does all of it; the single-launch clip kernels spread the folds over
// the grid. The total is the same whether per-tensor norms are wanted or not.
#pragma once

#include <type_traits>

#include "vectorized.cuh"

namespace fastclip {
namespace cuda {

constexpr int32_t kThreadFoldChunks = 32;

// The one dispatch from a NormParams to a kernel instantiation: calls
// launch(std::integral_constant<NormKind, kind>{}, acc_t{}) for its norm kind and accumulation type.
template <typename Launch>
cudaError_t dispatch_norm(const NormParams& params, const Launch& launch) {
  auto for_acc = [&](auto acc) -> cudaError_t {
    switch (params.kind) {
      case NormKind::kL2: return launch(std::integral_constant<NormKind, NormKind::kL2>{}, acc);
      case NormKind::kL1: return launch(std::integral_constant<NormKind, NormKind::kL1>{}, acc);
      case NormKind::kInf: return launch(std::integral_constant<NormKind, NormKind::kInf>{}, acc);
      case NormKind::kZero: return launch(std::integral_constant<NormKind, NormKind::kZero>{}, acc);
      case NormKind::kGeneral: return launch(std::integral_constant<NormKind, NormKind::kGeneral>{}, acc);
    }
    return cudaErrorInvalidValue;
  };
  return params.acc_double ? for_acc(double{}) : for_acc(float{});
}

// This thread's share of the partial of elements [begin, end) of a chunk, read through Load:
// the read-only cache, or coherently for data the same kernel later rewrites (vectorized.cuh).
template <NormKind kind, typename acc_t, typename Load>
__device__ NormAccumulator<kind, acc_t, Load> chunk_thread_sum(const TensorMeta& meta, int64_t begin, int64_t end,
                                                               acc_t p) {
  NormAccumulator<kind, acc_t, Load> partial{p};
  visit_by_dtype<kThreads, /*kUnroll=*/4>(static_cast<const void*>(meta.data), meta.dtype, begin, end - begin, partial,
                                          partial);
  return partial;
}

template <NormKind kind, typename acc_t, typename Load>
__device__ acc_t chunk_thread_partial(const TensorMeta& meta, int64_t begin, int64_t end, acc_t p) {
  return chunk_thread_sum<kind, acc_t, Load>(meta, begin, end, p).acc;
}

// The wide general-p recompute's per-thread sum of (|x| / m)^p (norm_math.h's scaled_power).
template <typename Load>
struct ScaledPowerAccumulator : ElementReader<ScaledPowerAccumulator<Load>, Load> {
  double m, p;
  double acc = 0.0;

  __device__ ScaledPowerAccumulator(double m, double p) : m(m), p(p) {}

  template <typename scalar_t>
  __device__ __forceinline__ void add(scalar_t x) {
    acc += scaled_power(to_acc<double>(x), m, p);
  }
};

// A chunk recomputed wide, as the CPU backend's partial_from_sum does (norm_math.h): L2 in
// double, general p scaled by the chunk's largest magnitude. Valid on thread 0; every thread of
// the block calls it. Rare: only chunks whose float sum left the safe range come here.
template <NormKind kind, typename Load>
__device__ double wide_chunk_partial(const TensorMeta& meta, int64_t begin, int64_t end, double p, double* scratch) {
  if constexpr (kind == NormKind::kL2) {
    return block_reduce<NormKind::kL2>(chunk_thread_partial<NormKind::kL2, double, Load>(meta, begin, end, 2.0),
                                       scratch);
  } else {
    static_assert(kind == NormKind::kGeneral, "only L2 and general p are recomputed");
    const double m = block_reduce<NormKind::kInf, double, kThreads, /*kToAll=*/true>(
        chunk_thread_partial<NormKind::kInf, double, Load>(meta, begin, end, p), scratch);
    double scaled_sum = 0.0;
    if (m > 0.0 && m - m == 0.0) {  // uniform across the block
      ScaledPowerAccumulator<Load> sum{m, p};
      visit_by_dtype<kThreads, /*kUnroll=*/4>(static_cast<const void*>(meta.data), meta.dtype, begin, end - begin, sum,
                                              sum);
      scaled_sum = block_reduce<NormKind::kL1>(sum.acc, scratch);
    }
    return general_partial_of_scaled(m, scaled_sum, p);
  }
}

// params.chunk_partials[c] (doubles, norm_math.h) for this block's share of the chunks c
// (for_each_chunk): the chunk's sum (chunk_sum_t), recomputed wide where it left the safe range.
template <NormKind kind, typename Load = ReadOnlyLoad, typename acc_t>
__device__ void write_chunk_partials(const NormParams& params, acc_t* scratch, double* wide_scratch) {
  using sum_t = chunk_sum_t<kind, acc_t>;
  sum_t* sum_scratch;
  if constexpr (std::is_same_v<sum_t, acc_t>) {
    sum_scratch = scratch;
  } else {
    sum_scratch = wide_scratch;
  }
  double* partials = static_cast<double*>(params.chunk_partials);
  for_each_chunk(params.list, [&](int64_t c, const ChunkMeta&, const TensorMeta& meta, int64_t begin, int64_t end) {
    // The sum on every thread where it may need the wide recompute (block-uniform branches).
    constexpr bool kMayWiden = kind == NormKind::kGeneral || (kind == NormKind::kL2 && std::is_same_v<sum_t, float>);
    const auto thread = chunk_thread_sum<kind, sum_t, Load>(meta, begin, end, static_cast<sum_t>(params.p));
    const sum_t sum = block_reduce<kind, sum_t, kThreads, kMayWiden>(thread.acc, sum_scratch);
    double partial = partial_of_sum<kind>(sum);
    if constexpr (kMayWiden) {
      bool wide = needs_wide_partial<kind>(sum, meta.dtype);
      if constexpr (decltype(thread)::kTracksZeros) {
        if (wide && sum == sum_t(0)) {  // all zeros, or all underflowed? (scratch holds floats: 4 bytes too)
          const uint32_t magnitudes = block_reduce_with<kThreads, /*kToAll=*/true>(
              thread.bits & 0x7FFFFFFFu, reinterpret_cast<uint32_t*>(sum_scratch), 0u,
              [](uint32_t a, uint32_t b) { return a | b; });
          wide = magnitudes != 0;
        }
      }
      if (wide) partial = wide_chunk_partial<kind, Load>(meta, begin, end, params.p, wide_scratch);
    }
    if (threadIdx.x == 0) partials[c] = partial;
  });
}

__device__ __forceinline__ int32_t chunks_of(const ChunkList& list, int32_t t) {
  const int32_t stop = t + 1 < list.num_tensors ? list.tensors[t + 1].first_chunk : list.num_chunks;
  return stop - list.tensors[t].first_chunk;
}

template <NormKind kind, typename acc_t>
__device__ __forceinline__ void store_tensor_fold(const NormParams& params, int32_t t, double partial) {
  static_cast<double*>(params.contributions)[t] = total_contribution(kind, partial);
  if (params.per_tensor_out != nullptr) {
    static_cast<acc_t*>(params.per_tensor_out)[t] = static_cast<acc_t>(norm_finalize<kind>(partial, params.p));
  }
}

// Folds the tensors that belong to `part` of `parts` (a block's share; part 0 of 1 is all of
// them) into params.contributions (and params.per_tensor_out). Every thread of the block calls it.
template <NormKind kind, typename acc_t>
__device__ void fold_tensors(const NormParams& params, unsigned part, unsigned parts) {
  const ChunkList& list = params.list;
  const double* partials = static_cast<const double*>(params.chunk_partials);
  const int64_t stride = static_cast<int64_t>(parts) * kThreads;
  for (int64_t t = static_cast<int64_t>(part) * kThreads + threadIdx.x; t < list.num_tensors; t += stride) {
    const int32_t chunks = chunks_of(list, static_cast<int32_t>(t));
    if (chunks > kThreadFoldChunks) continue;  // a warp's, below
    store_tensor_fold<kind, acc_t>(params, static_cast<int32_t>(t),
                                   blocked_combine<kind>(partials + list.tensors[t].first_chunk, chunks));
  }
  constexpr int kWarps = kThreads / 32;
  const int lane = threadIdx.x & 31;
  const int64_t warp_stride = static_cast<int64_t>(parts) * kWarps;
  for (int64_t t = static_cast<int64_t>(part) * kWarps + (threadIdx.x >> 5); t < list.num_tensors; t += warp_stride) {
    const int32_t chunks = chunks_of(list, static_cast<int32_t>(t));  // uniform across the warp
    if (chunks <= kThreadFoldChunks) continue;
    const double* first = partials + list.tensors[t].first_chunk;
    double partial = first[lane];  // chunks > 32: every lane has one
    for (int32_t c = lane + 32; c < chunks; c += 32) partial = partial_combine<kind>(partial, first[c]);
    for (int offset = 16; offset > 0; offset >>= 1)
      partial = partial_combine<kind>(partial, shfl_down(partial, offset));
    if (lane == 0) store_tensor_fold<kind, acc_t>(params, static_cast<int32_t>(t), partial);
  }
}

// The finalized total over all of params.contributions (valid on thread 0), by one block's tree,
// in double. Ends with a barrier.
template <NormKind kind>
__device__ double reduce_contributions(const NormParams& params, double* scratch) {
  const double* contributions = static_cast<const double*>(params.contributions);
  double local = kind == NormKind::kGeneral ? kLogOfZero : 0.0;
  for (int64_t i = threadIdx.x; i < params.list.num_tensors; i += kThreads) {
    local = partial_combine<kind>(local, contributions[i]);
  }
  return norm_finalize<kind>(block_reduce_partials<kind>(local, scratch), params.p);
}

template <typename acc_t>
__device__ void store_total(void* out, int32_t dtype, acc_t value) {
  switch (static_cast<DType>(dtype)) {
    case DType::kFloat32: *static_cast<float*>(out) = static_cast<float>(value); break;
    case DType::kFloat16: *static_cast<__half*>(out) = __float2half_rn(static_cast<float>(value)); break;
    case DType::kBFloat16: *static_cast<__nv_bfloat16*>(out) = __float2bfloat16_rn(static_cast<float>(value)); break;
    case DType::kFloat64: *static_cast<double*>(out) = static_cast<double>(value); break;
  }
}

// `value` as store_total stores it, read back (exactly) as a double.
template <typename acc_t>
__device__ double as_stored(acc_t value, int32_t dtype) {
  switch (static_cast<DType>(dtype)) {
    case DType::kFloat32: return static_cast<float>(value);
    case DType::kFloat16: return __half2float(__float2half_rn(static_cast<float>(value)));
    case DType::kBFloat16: return __bfloat162float(__float2bfloat16_rn(static_cast<float>(value)));
    case DType::kFloat64: return static_cast<double>(value);
  }
  return 0.0;
}

}  // namespace cuda
}  // namespace fastclip
