// AdaGC's step (adagc_update_) on the device: a thread per entry, running exactly the functions
// the CPU op runs (common/adagc_step.h) on the same state, alone (the norms given) or after the
// norms and before the scale in one launch (clip_step.cuh).
#include "clip_step.cuh"

namespace fastclip {
namespace cuda {

// Every thread reads the step count before the barrier; thread 0 increments it after.
__device__ void run_step(const AdaGCStep& step) {
  const EntryParams& e = step.entries;
  const double total = load_as_double(e.total_norm.data, e.total_norm.dtype, 0);
  const double finite_steps = step.steps[0];
  for (int64_t j = threadIdx.x; j < e.num_entries; j += blockDim.x) {
    adagc_entry(step.config, step.gamma, finite_steps, e.out, j, load_as_double(e.norms.data, e.norms.dtype, j), total);
  }
  __syncthreads();
  if (threadIdx.x == 0) adagc_finish(step.config, step.steps, e.result, e.out, e.num_entries, total);
}

FASTCLIP_STEP_LAUNCHERS(AdaGCStep)

}  // namespace cuda
}  // namespace fastclip
