// Multi-tensor p-norm in one launch: every block reduces whole chunks into one partial each;
// the last block to finish (an integer ticket, no float atomics) combines the partials in a
// fixed order into per-tensor norms and the total (norm_partials.cuh). Bitwise deterministic for
// a given list.
#include <cuda/atomic>

#include "launch.cuh"
#include "norm_partials.cuh"

namespace fastclip {
namespace cuda {
namespace {

// Minimum one resident block, from ptxas's register counts (CUDA 13.0, sm_80 and sm_90): the float
// L1, inf and p = 0 kernels use 63-68 registers, so two 512-thread blocks fit an SM, but the
// float L2 kernel uses 104 (with its wide recompute), general p (summed in double) 90-92 and the
// double ones 64-96, so one block of those is resident per SM (the grid of two blocks per SM
// then runs in two waves). Asking for two (minBlocks = 2) makes the float L2 kernel spill.
template <NormKind kind, typename acc_t>
__global__ void __launch_bounds__(kThreads, 1) multi_tensor_norm_kernel(const NormParams params) {
  __shared__ acc_t scratch[kReduceScratch];
  __shared__ double wide_scratch[kReduceScratch];  // partials and wide recomputes
  __shared__ bool is_last_block;
  write_chunk_partials<kind>(params, scratch, wide_scratch);
  // Thread 0 wrote this block's partials; its acq_rel ticket publishes them, and the last
  // ticket's acquire (spread to the block by the barrier) makes every block's partials visible.
  // The counter is zeroed by a memset before each launch (captured with it in a graph).
  if (threadIdx.x == 0) {
    ::cuda::atomic_ref<unsigned int, ::cuda::thread_scope_device> blocks_done(*params.blocks_done);
    is_last_block = blocks_done.fetch_add(1u, ::cuda::memory_order_acq_rel) == gridDim.x - 1;
  }
  __syncthreads();
  if (!is_last_block) return;
  fold_tensors<kind, acc_t>(params, /*part=*/0, /*parts=*/1);
  __syncthreads();  // contributions are read below by other threads of this block
  const acc_t total = static_cast<acc_t>(reduce_contributions<kind>(params, wide_scratch));
  if (threadIdx.x == 0) {
    store_total(params.total_out, params.total_dtype, total);
    if (params.accumulated_total_out != nullptr) static_cast<acc_t*>(params.accumulated_total_out)[0] = total;
  }
}

}  // namespace

cudaError_t launch_multi_tensor_norm(const NormParams& params, int num_blocks, cudaStream_t stream) {
  return dispatch_norm(params, [&](auto kind, auto acc) {
    return launch_kernel<multi_tensor_norm_kernel<decltype(kind)::value, decltype(acc)>>(num_blocks, kThreads, stream,
                                                                                         params);
  });
}

}  // namespace cuda
}  // namespace fastclip
