// stable_spam_update_ on the device: the step in one block, a thread per entry, running exactly
// the functions the CPU op runs (common/stable_spam_step.h) on the same state; then every block
// rescales and scales its chunks by their tensor's SpamApply.
#include "launch.cuh"
#include "stable_spam_kernels.h"
#include "vectorized.cuh"

namespace fastclip {
namespace cuda {
namespace {

constexpr int kSpamStepThreads = 256;

// Every thread reads the step count before the first barrier; thread 0 increments it at the end.
__global__ void __launch_bounds__(kSpamStepThreads, 1) stable_spam_step_kernel(const StableSPAMStepParams p) {
  __shared__ double total;
  const double k = p.steps[0] + 1.0;
  const int64_t n = p.num_entries;
  if (threadIdx.x == 0) total = stable_spam_total(p.stats + n, n);
  __syncthreads();
  const double s = stable_spam_decay(p.config, k);
  for (int64_t j = threadIdx.x; j < n; j += blockDim.x) {
    stable_spam_entry(p.config, p.state, k, s, p.out, p.apply, j, p.stats[j], p.stats[n + j], p.split[j],
                      p.split[n + j], total);
  }
  __syncthreads();
  if (threadIdx.x == 0) stable_spam_finish(p.config, p.steps, p.result, p.out, p.apply, n, total);
}

template <typename opmath_t>
struct AdaClipScale {
  opmath_t threshold, clipped_factor, factor;
  __device__ opmath_t operator()(opmath_t x) const {
    return x * (adaclip_rescales(x < opmath_t(0) ? -x : x, threshold) ? clipped_factor : factor);
  }
};

// Two resident blocks per SM, as the scale kernel.
__global__ void __launch_bounds__(kThreads, 2) stable_spam_apply_kernel(const StableSPAMApplyParams p) {
  for_each_chunk(p.list, [&](int64_t, const ChunkMeta& chunk, const TensorMeta& meta, int64_t begin, int64_t end) {
    const SpamApply a = p.apply[chunk.tensor];
    if (p.clear_on_zero && a.factor == 0.0) {
      apply_range(meta.data, meta.dtype, begin, end, Zero<float>{}, Zero<double>{});
    } else if (a.factor != 1.0 || a.threshold < fc_inf()) {
      apply_range(meta.data, meta.dtype, begin, end,
                  AdaClipScale<float>{adaclip_float_threshold(a.threshold), static_cast<float>(a.clipped_factor),
                                      static_cast<float>(a.factor)},
                  AdaClipScale<double>{a.threshold, a.clipped_factor, a.factor});
    }
  });
}

}  // namespace

cudaError_t launch_stable_spam_update(const StableSPAMStepParams& step, const StableSPAMApplyParams& apply,
                                      int num_blocks, cudaStream_t stream) {
  cudaError_t error = launch_kernel<stable_spam_step_kernel>(1, kSpamStepThreads, stream, step);
  if (error == cudaSuccess && apply.list.num_chunks > 0) {
    error = launch_kernel<stable_spam_apply_kernel>(num_blocks, kThreads, stream, apply);
  }
  return error;
}

}  // namespace cuda
}  // namespace fastclip
