// CUDA-only helpers: 16-byte vector access to any supported dtype, conversions, and the
// fixed-order block reduction. Kept small; the arithmetic lives in common/norm_math.h.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <cstring>
#include <type_traits>

#include "../common/norm_math.h"
#include "../common/tensor_list.h"
#include "kernels.h"

namespace fastclip {
namespace cuda {

// The type a value of scalar_t is computed in: double for double, float for every other dtype.
template <typename scalar_t>
using opmath_t = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;

template <typename acc_t>
__device__ __forceinline__ acc_t to_acc(float x) {
  return static_cast<acc_t>(x);
}
template <typename acc_t>
__device__ __forceinline__ acc_t to_acc(double x) {
  return static_cast<acc_t>(x);
}
template <typename acc_t>
__device__ __forceinline__ acc_t to_acc(__half x) {
  return static_cast<acc_t>(__half2float(x));
}
template <typename acc_t>
__device__ __forceinline__ acc_t to_acc(__nv_bfloat16 x) {
  return static_cast<acc_t>(__bfloat162float(x));
}

__device__ __forceinline__ uint32_t float_bits(float x) {
  uint32_t bits;
  memcpy(&bits, &x, sizeof(bits));
  return bits;
}

// Explicit conversions: torch builds with __CUDA_NO_HALF_CONVERSIONS__ and friends.
__device__ __forceinline__ void store_as(float& dst, float x) { dst = x; }
__device__ __forceinline__ void store_as(double& dst, double x) { dst = x; }
__device__ __forceinline__ void store_as(__half& dst, float x) { dst = __float2half_rn(x); }
__device__ __forceinline__ void store_as(__nv_bfloat16& dst, float x) { dst = __float2bfloat16_rn(x); }

// Sixteen bytes of scalar_t, loaded and stored as one vector.
template <typename scalar_t>
struct alignas(16) Vec16 {
  static constexpr int kSize = 16 / sizeof(scalar_t);
  scalar_t v[kSize];
};

// Global-space intrinsics: plain dereferences of these pointers compile to generic LD/ST,
// since the compiler cannot prove they point to global memory.
template <typename scalar_t>
__device__ __forceinline__ Vec16<scalar_t> load_vec16_readonly(const scalar_t* p) {
  Vec16<scalar_t> out;
  *reinterpret_cast<uint4*>(&out) = __ldg(reinterpret_cast<const uint4*>(p));
  return out;
}

// For data this kernel also writes (so not the read-only path): cached in L2 only, coherent.
template <typename scalar_t>
__device__ __forceinline__ Vec16<scalar_t> load_vec16_coherent(const scalar_t* p) {
  Vec16<scalar_t> out;
  *reinterpret_cast<uint4*>(&out) = __ldcg(reinterpret_cast<const uint4*>(p));
  return out;
}

// For the read-modify-write pass: streaming (evict-first) loads and stores, since every byte
// is touched exactly once.
template <typename scalar_t>
__device__ __forceinline__ Vec16<scalar_t> load_vec16_streaming(const scalar_t* p) {
  Vec16<scalar_t> out;
  *reinterpret_cast<uint4*>(&out) = __ldcs(reinterpret_cast<const uint4*>(p));
  return out;
}

template <typename scalar_t>
__device__ __forceinline__ void store_vec16_streaming(scalar_t* p, const Vec16<scalar_t>& value) {
  __stcs(reinterpret_cast<uint4*>(p), *reinterpret_cast<const uint4*>(&value));
}

// Elements before the first 16-byte boundary at or after p (all of n if p is not even aligned
// to its element size): they take the scalar path, the rest the vector path.
template <typename scalar_t>
__device__ __forceinline__ int64_t misaligned_head(const scalar_t* p, int64_t n) {
  const uintptr_t address = reinterpret_cast<uintptr_t>(p);
  if (address % sizeof(scalar_t) != 0) return n;
  const int64_t head = static_cast<int64_t>(((16 - (address & 15)) & 15) / sizeof(scalar_t));
  return head < n ? head : n;
}

// Element `index` of a device array of `dtype` (a DType), widened to double (exactly). Read
// coherently (L2): the single-launch clip kernels read norms and factors that other threads of
// the same kernel wrote before a barrier, which the read-only cache may not serve.
__device__ __forceinline__ double load_as_double(const void* data, int32_t dtype, int64_t index) {
  switch (static_cast<DType>(dtype)) {
    case DType::kFloat32: return __ldcg(static_cast<const float*>(data) + index);
    case DType::kFloat16: return __half2float(__ldcg(static_cast<const __half*>(data) + index));
    case DType::kBFloat16: return __bfloat162float(__ldcg(static_cast<const __nv_bfloat16*>(data) + index));
    case DType::kFloat64: return __ldcg(static_cast<const double*>(data) + index);
  }
  return 0.0;
}

// torch's clip coefficient from a total norm held in `dtype` (a DType), as the CPU backend
// computes it (common/norm_math.h): in float, or in double for a float64 total.
__device__ __forceinline__ double clip_coefficient_of_stored(double total, int32_t dtype, double max_norm) {
  if (static_cast<DType>(dtype) == DType::kFloat64) return clip_coefficient<double>(max_norm, total);
  return clip_coefficient<float>(static_cast<float>(max_norm), static_cast<float>(total));
}

template <typename acc_t>
__device__ __forceinline__ acc_t shfl_down(acc_t v, int offset) {
  return __shfl_down_sync(0xffffffffu, v, offset);
}

// Reduces one value per thread with combine(a, b) in a fixed tree (warp shuffles, then the
// warps' results in order). The result is valid on thread 0, or, with kToAll, on every thread
// (thread 0 leaves it in scratch[kBlockThreads / 32], read after the closing barrier; the next
// reduction writes that slot only after its own first barrier). `scratch` holds kBlockThreads /
// 32 values, one more with kToAll (kReduceScratch for kThreads). Ends with a barrier, so scratch
// may be reused right after. blockDim.x must be kBlockThreads; `identity` fills the second
// stage's unused lanes.
template <int kBlockThreads, bool kToAll = false, typename acc_t, typename Combine>
__device__ acc_t block_reduce_with(acc_t value, acc_t* scratch, acc_t identity, const Combine& combine) {
  static_assert(kBlockThreads % 32 == 0 && kBlockThreads / 32 <= 32, "the second stage reduces one warp's worth");
  constexpr int kWarps = kBlockThreads / 32;
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  for (int offset = 16; offset > 0; offset >>= 1) value = combine(value, shfl_down(value, offset));
  if (lane == 0) scratch[warp] = value;
  __syncthreads();
  if (warp == 0) {
    value = lane < kWarps ? scratch[lane] : identity;
    for (int offset = 16; offset > 0; offset >>= 1) value = combine(value, shfl_down(value, offset));
    if (kToAll && lane == 0) scratch[kWarps] = value;
  }
  __syncthreads();
  if constexpr (kToAll) value = scratch[kWarps];
  return value;
}

constexpr int kReduceScratch = kThreads / 32 + 1;

// The block's reduction of per-thread element sums (norm_combine), on thread 0 or every thread.
template <NormKind kind, typename acc_t, int kBlockThreads = kThreads, bool kToAll = false>
__device__ acc_t block_reduce(acc_t value, acc_t* scratch) {
  return block_reduce_with<kBlockThreads, kToAll>(value, scratch, acc_t(0),
                                                  [](acc_t a, acc_t b) { return norm_combine<kind>(a, b); });
}

// The block's reduction of chunk or tensor partials (partial_combine, norm_math.h).
template <NormKind kind>
__device__ double block_reduce_partials(double value, double* scratch) {
  const double identity = kind == NormKind::kGeneral ? kLogOfZero : 0.0;
  return block_reduce_with<kThreads>(value, scratch, identity,
                                     [](double a, double b) { return partial_combine<kind>(a, b); });
}

// Calls fn(chunk_index, chunk, meta, begin, end) for this block's share of the chunks (a grid-
// stride loop): the CUDA counterpart of the CPU backend's for_each_chunk.
template <typename Fn>
__device__ void for_each_chunk(const ChunkList& list, const Fn& fn) {
  for (int64_t c = blockIdx.x; c < list.num_chunks; c += gridDim.x) {
    const ChunkMeta chunk = list.chunks[c];
    const TensorMeta meta = list.tensors[chunk.tensor];
    int64_t begin, end;
    chunk_range(meta, chunk, list.chunk_size, &begin, &end);
    fn(c, chunk, meta, begin, end);
  }
}

}  // namespace cuda
}  // namespace fastclip
