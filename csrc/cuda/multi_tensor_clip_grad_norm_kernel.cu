// clip_grad_norm_ on the device. One cooperative launch where the device allows it: every block
// reduces its chunks; after a grid barrier the blocks fold the tensors' partials between them;
// after a second, every block reduces the contributions with the tree the norm kernel's last
// block uses, so each computes the same total (and the same coefficient) and scales its chunks.
// Else, or with single_launch off, the norm kernel then the clip-by-norm kernel: two launches,
// bitwise the same results (norm_partials.cuh is their common arithmetic; the plan, hence the
// chunks, does not depend on the grid).
#include "grid_sync.cuh"
#include "launch.cuh"
#include "norm_partials.cuh"

namespace fastclip {
namespace cuda {
namespace {

// Two resident blocks per SM (64 registers) where that does not spill (ptxas, CUDA 13.0): in float
// for L1, inf and p = 0. L2's sm_80 code would spill 8 bytes, as the norm kernel's would; general
// p sums in double (norm_math.h's chunk_sum_t) and, like the double kernels, would spill too.
// The grid is what the occupancy calculator allows.
template <NormKind kind, typename acc_t>
constexpr int kClipGradNormBlocksPerSM =
    sizeof(acc_t) == 4 && kind != NormKind::kL2 && kind != NormKind::kGeneral ? 2 : 1;

template <NormKind kind, typename acc_t>
__global__ void __launch_bounds__(kThreads, (kClipGradNormBlocksPerSM<kind, acc_t>))
    clip_grad_norm_kernel(const NormParams norm, const double max_norm) {
  __shared__ acc_t scratch[kReduceScratch];
  __shared__ double wide_scratch[kReduceScratch];  // partials and wide recomputes
  __shared__ double coef;
  write_chunk_partials<kind, CoherentLoad>(norm, scratch, wide_scratch);  // the grads are rewritten below
  grid_sync();
  fold_tensors<kind, acc_t>(norm, blockIdx.x, gridDim.x);
  grid_sync();
  const acc_t total = static_cast<acc_t>(reduce_contributions<kind>(norm, wide_scratch));
  if (threadIdx.x == 0) {
    if (blockIdx.x == 0) store_total(norm.total_out, norm.total_dtype, total);
    // From the total as stored, as the clip-by-norm kernel reads it (or as accumulated, where
    // storing overflowed and the norm kernel would have kept it).
    double stored = as_stored(total, norm.total_dtype);
    if (norm.accumulated_total_out != nullptr) stored = coefficient_total(stored, static_cast<double>(total));
    coef = clip_coefficient_of_stored(stored, norm.total_dtype, max_norm);
  }
  __syncthreads();
  const double block_coef = coef;
  for_each_chunk(norm.list, [&](int64_t, const ChunkMeta&, const TensorMeta& meta, int64_t begin, int64_t end) {
    clip_chunk(meta, begin, end, block_coef);
  });
}

}  // namespace

cudaError_t launch_multi_tensor_clip_grad_norm(const NormParams& norm, const ClipByNormParams& clip, int num_blocks,
                                               bool single_launch, cudaStream_t stream) {
  if (single_launch) {
    bool launched = false;
    const cudaError_t error = dispatch_norm(norm, [&](auto kind, auto acc) {
      return launch_resident<clip_grad_norm_kernel<decltype(kind)::value, decltype(acc)>>(
          norm.list.num_chunks, kThreads, stream, &launched, norm, clip.max_norm);
    });
    if (!needs_several_kernels(error, launched)) return error;
  }
  const cudaError_t error = launch_multi_tensor_norm(norm, num_blocks, stream);
  if (error != cudaSuccess) return error;
  ClipByNormParams by_norm = clip;
  by_norm.accumulated_total = DeviceValues{norm.accumulated_total_out,
                                           static_cast<int32_t>(norm.acc_double ? DType::kFloat64 : DType::kFloat32)};
  return launch_multi_tensor_clip_by_norm(by_norm, num_blocks, stream);
}

}  // namespace cuda
}  // namespace fastclip
