// stable_spam_norms in one launch: every block reduces whole chunks into two partials (the
// largest magnitude and the sum of squares, or the sums of squares at most and above the AdaClip
// threshold); the last block to finish (an integer ticket, no float atomics) folds each tensor's
// partials in chunk order. Bitwise deterministic for a given list.
#include <cuda/atomic>

#include "launch.cuh"
#include "stable_spam_kernels.h"
#include "vectorized.cuh"

namespace fastclip {
namespace cuda {
namespace {

// A thread's largest magnitude and sum of squares (in double) over the elements it visits.
template <typename opmath_t>
struct MaxAndSquares : ElementReader<MaxAndSquares<opmath_t>, ReadOnlyLoad> {
  opmath_t peak = opmath_t(0);
  double sum = 0.0;

  template <typename scalar_t>
  __device__ __forceinline__ void add(scalar_t x) {
    const opmath_t v = to_acc<opmath_t>(x);
    peak = nan_max(peak, v < opmath_t(0) ? -v : v);
    const double d = static_cast<double>(v);
    sum += d * d;
  }
};

// A thread's sums of squares over the elements at most and above `threshold` in magnitude.
template <typename opmath_t>
struct SplitSquares : ElementReader<SplitSquares<opmath_t>, ReadOnlyLoad> {
  opmath_t threshold;
  double below = 0.0, above = 0.0;

  __device__ explicit SplitSquares(opmath_t bound) : threshold(bound) {}

  template <typename scalar_t>
  __device__ __forceinline__ void add(scalar_t x) {
    const opmath_t v = to_acc<opmath_t>(x);
    const double d = static_cast<double>(v);
    if (adaclip_rescales(v < opmath_t(0) ? -v : v, threshold)) {
      above += d * d;
    } else {
      below += d * d;
    }
  }
};

__device__ double sum_of(double a, double b) { return a + b; }
__device__ double max_of(double a, double b) { return nan_max(a, b); }

// Tensor i's AdaClip threshold, or +inf where AdaClip rescales nothing (or its row is out of range).
__device__ double rescaling_threshold(const StableSPAMNormsParams& p, int64_t i) {
  const int64_t row = p.rows[i];
  if (row < 0 || row >= p.num_rows) return fc_inf();
  StableSPAMConfig config{};
  config.gamma3 = p.gamma3;
  const double max_abs = p.maxima[i];
  const double threshold = adaclip_threshold(config, p.state + stable_spam_row::count * row, max_abs);
  return adaclip_rescales(max_abs, threshold) ? threshold : fc_inf();
}

template <bool kSplit>
__device__ void chunk_partials(const StableSPAMNormsParams& p, int64_t c, const ChunkMeta& chunk,
                               const TensorMeta& meta, int64_t begin, int64_t end, double* scratch) {
  double first = 0.0, second = 0.0;
  if constexpr (kSplit) {
    const double threshold = rescaling_threshold(p, chunk.tensor);  // the same for the whole block
    if (threshold < fc_inf()) {
      SplitSquares<float> floats{adaclip_float_threshold(threshold)};
      SplitSquares<double> doubles{threshold};
      visit_by_dtype<kThreads, /*kUnroll=*/4>(static_cast<const void*>(meta.data), meta.dtype, begin, end - begin,
                                              floats, doubles);
      first = block_reduce_with<kThreads>(floats.below + doubles.below, scratch, 0.0, sum_of);
      second = block_reduce_with<kThreads>(floats.above + doubles.above, scratch, 0.0, sum_of);
    }
  } else {
    MaxAndSquares<float> floats;
    MaxAndSquares<double> doubles;
    visit_by_dtype<kThreads, /*kUnroll=*/4>(static_cast<const void*>(meta.data), meta.dtype, begin, end - begin, floats,
                                            doubles);
    const double peak = nan_max(static_cast<double>(floats.peak), doubles.peak);
    first = block_reduce_with<kThreads>(peak, scratch, 0.0, max_of);
    second = block_reduce_with<kThreads>(floats.sum + doubles.sum, scratch, 0.0, sum_of);
  }
  if (threadIdx.x == 0) {
    p.chunk_first[c] = first;
    p.chunk_second[c] = second;
  }
}

// One resident block per SM: the double sums cost registers.
template <bool kSplit>
__global__ void __launch_bounds__(kThreads, 1) stable_spam_norms_kernel(const StableSPAMNormsParams p) {
  __shared__ double scratch[kReduceScratch];
  __shared__ bool is_last_block;
  for_each_chunk(p.list, [&](int64_t c, const ChunkMeta& chunk, const TensorMeta& meta, int64_t begin, int64_t end) {
    chunk_partials<kSplit>(p, c, chunk, meta, begin, end, scratch);
  });
  // As in the norm kernel: thread 0's acq_rel ticket publishes this block's partials, and the
  // last ticket's acquire, spread to the block by the barrier, makes every block's visible.
  if (threadIdx.x == 0) {
    ::cuda::atomic_ref<unsigned int, ::cuda::thread_scope_device> blocks_done(*p.blocks_done);
    is_last_block = blocks_done.fetch_add(1u, ::cuda::memory_order_acq_rel) == gridDim.x - 1;
  }
  __syncthreads();
  if (!is_last_block) return;
  const int64_t n = p.list.num_tensors;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
    const int64_t first_chunk = p.list.tensors[i].first_chunk;
    const int64_t end_chunk = i + 1 < n ? p.list.tensors[i + 1].first_chunk : p.list.num_chunks;
    fold_stable_spam_chunks(kSplit, p.chunk_first, p.chunk_second, first_chunk, end_chunk - first_chunk, p.out + i,
                            p.out + n + i);
  }
}

}  // namespace

cudaError_t launch_stable_spam_norms(const StableSPAMNormsParams& params, int num_blocks, cudaStream_t stream) {
  if (params.maxima != nullptr)
    return launch_kernel<stable_spam_norms_kernel<true>>(num_blocks, kThreads, stream, params);
  return launch_kernel<stable_spam_norms_kernel<false>>(num_blocks, kThreads, stream, params);
}

}  // namespace cuda
}  // namespace fastclip
