// AutoClip's step (autoclip_update_) on the device: a thread per entry, running exactly the
// functions the CPU op runs (common/autoclip_step.h) on the same state, alone (the norms given) or
// after the norms and before the scale in one launch (clip_step.cuh).
#include "clip_step.cuh"

namespace fastclip {
namespace cuda {

// Entries own distinct history rows (the Python clipper passes each tensor once), so the threads
// update disjoint state; the barrier publishes every entry's coef/threshold to thread 0.
__device__ void run_step(const AutoClipStep& step) {
  const EntryParams& e = step.entries;
  const double total = load_as_double(e.total_norm.data, e.total_norm.dtype, 0);
  for (int64_t j = threadIdx.x; j < e.num_entries; j += blockDim.x) {
    autoclip_entry(step.config, step.buffers, e.out, j, load_as_double(e.norms.data, e.norms.dtype, j), total);
  }
  __syncthreads();
  if (threadIdx.x == 0) autoclip_finish(step.config, e.result, e.out, e.num_entries, total);
}

FASTCLIP_STEP_LAUNCHERS(AutoClipStep)

}  // namespace cuda
}  // namespace fastclip
