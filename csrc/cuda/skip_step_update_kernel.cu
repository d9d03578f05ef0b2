// StepSkipper's step (skip_step_update_) on the device: one block, a thread per lane of
// common/skip_step.h's fixed summation order (the mean, then the squared deviations, of both
// histories, each folded as a tree), then thread 0 runs the decision and the history's update,
// exactly the functions the CPU op runs: the same bits.
#include "device_utils.cuh"
#include "launch.cuh"
#include "stats_kernels.h"

namespace fastclip {
namespace cuda {
namespace {

// Each series' lane partials folded into p[s][0], one stride at a time (skip_step_fold's order).
__device__ void fold_partials(double (*partials)[kSkipStepLanes], int lane) {
  for (int stride = kSkipStepLanes / 2; stride > 0; stride /= 2) {
    __syncthreads();
    if (lane < stride) {
      for (int64_t s = 0; s < skip_step_series::count; ++s) skip_step_fold(partials[s], stride, lane);
    }
  }
  __syncthreads();
}

// Every thread reads the counters and the history before the last barrier; thread 0 writes them after it.
__global__ void __launch_bounds__(kSkipStepLanes, 1) skip_step_update_kernel(const SkipStepParams p) {
  __shared__ double partials[skip_step_series::count][kSkipStepLanes];
  const int lane = static_cast<int>(threadIdx.x);
  const SkipStepHistory h = skip_step_history(p.history, p.config.window, p.counters);
  double mean[skip_step_series::count], std[skip_step_series::count];
  for (int64_t s = 0; s < skip_step_series::count; ++s) partials[s][lane] = skip_step_lane_sum(h, s, lane, 0.0, false);
  fold_partials(partials, lane);
  for (int64_t s = 0; s < skip_step_series::count; ++s) mean[s] = skip_step_mean(partials[s][0], h.count);
  __syncthreads();  // every thread has read the sums before they are overwritten
  for (int64_t s = 0; s < skip_step_series::count; ++s) {
    partials[s][lane] = skip_step_lane_sum(h, s, lane, mean[s], true);
  }
  fold_partials(partials, lane);
  if (lane != 0) return;
  for (int64_t s = 0; s < skip_step_series::count; ++s) std[s] = skip_step_std(partials[s][0], h.count);
  skip_step_finish(p.config, h, p.history, p.counters, p.result, load_as_double(p.loss.data, p.loss.dtype, 0),
                   load_as_double(p.norm.data, p.norm.dtype, 0), mean, std);
}

}  // namespace

cudaError_t launch_skip_step_update(const SkipStepParams& params, cudaStream_t stream) {
  return launch_kernel<skip_step_update_kernel>(1, kSkipStepLanes, stream, params);
}

}  // namespace cuda
}  // namespace fastclip
