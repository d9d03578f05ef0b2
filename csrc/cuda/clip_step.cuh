// The stats ops' kernels, one pair per step (stats_kernels.h), written once: the step alone in
// one block, and the whole clip in one cooperative launch. Each op's kernel file defines
// run_step(const Step&) -- the step, run by every thread of one block -- and instantiates the
// launchers below for its step.
//
// The single launch: every block reduces its chunks; after a grid barrier the blocks fold the
// tensors' partials between them (per-tensor norms included); after a second, block 0 reduces
// the contributions to the total, stores it, and runs the step on the stored norms, exactly as
// the step's own kernel reads them after the norm kernel; after a third, every block scales its
// chunks by the factors the step wrote. The norm arithmetic is norm_partials.cuh's and the plan
// does not depend on the grid, so the several-kernel path gives the same bits.
#pragma once

#include "grid_sync.cuh"
#include "launch.cuh"
#include "norm_partials.cuh"
#include "stats_kernels.h"

namespace fastclip {
namespace cuda {

constexpr int kStepThreads = 256;

template <typename Step>
__global__ void __launch_bounds__(kStepThreads, 1) step_kernel(const Step step) {
  run_step(step);
}

// One block of 512 threads per SM: the step's code shares the kernel's registers.
template <NormKind kind, typename acc_t, typename Step>
__global__ void __launch_bounds__(kThreads, 1)
    clip_step_kernel(const NormParams norm, const Step step, const ScaleParams scale) {
  __shared__ acc_t scratch[kReduceScratch];
  __shared__ double wide_scratch[kReduceScratch];                         // partials and wide recomputes
  write_chunk_partials<kind, CoherentLoad>(norm, scratch, wide_scratch);  // the grads are rewritten below
  grid_sync();
  fold_tensors<kind, acc_t>(norm, blockIdx.x, gridDim.x);
  grid_sync();
  if (blockIdx.x == 0) {
    const acc_t total = static_cast<acc_t>(reduce_contributions<kind>(norm, wide_scratch));
    if (threadIdx.x == 0) store_total(norm.total_out, norm.total_dtype, total);
    __syncthreads();  // the step reads the total from memory, as stored
    run_step(step);
  }
  grid_sync();
  scale_chunks(scale);
}

template <typename Step>
cudaError_t launch_step_kernel(const Step& step, cudaStream_t stream) {
  return launch_kernel<step_kernel<Step>>(1, kStepThreads, stream, step);
}

template <typename Step>
cudaError_t launch_clip_step_kernels(const NormParams& norm, const Step& step, const ScaleParams& scale, int num_blocks,
                                     bool single_launch, cudaStream_t stream) {
  if (single_launch && (!Step::kL2Only || norm.kind == NormKind::kL2)) {
    bool launched = false;
    const cudaError_t error = dispatch_norm(norm, [&](auto kind, auto acc) {
      if constexpr (Step::kL2Only && decltype(kind)::value != NormKind::kL2) {
        return cudaErrorInvalidValue;  // not reached: excluded above
      } else {
        return launch_resident<clip_step_kernel<decltype(kind)::value, decltype(acc), Step>>(
            norm.list.num_chunks, kThreads, stream, &launched, norm, step, scale);
      }
    });
    if (!needs_several_kernels(error, launched)) return error;
  }
  cudaError_t error = launch_multi_tensor_norm(norm, num_blocks, stream);
  if (error == cudaSuccess) error = launch_step_kernel(step, stream);
  if (error == cudaSuccess && scale.list.num_chunks > 0) error = launch_multi_tensor_scale(scale, num_blocks, stream);
  return error;
}

// The two launchers of a step, for its kernel file.
#define FASTCLIP_STEP_LAUNCHERS(Step)                                                                              \
  cudaError_t launch_step(const Step& step, cudaStream_t stream) { return launch_step_kernel(step, stream); }      \
  cudaError_t launch_clip_step(const NormParams& norm, const Step& step, const ScaleParams& scale, int num_blocks, \
                               bool single_launch, cudaStream_t stream) {                                          \
    return launch_clip_step_kernels(norm, step, scale, num_blocks, single_launch, stream);                         \
  }

}  // namespace cuda
}  // namespace fastclip
