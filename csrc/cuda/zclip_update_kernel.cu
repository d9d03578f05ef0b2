// ZClip's step (zclip_update_) on the device: one thread runs exactly the function the CPU op
// runs (common/zclip_step.h) on the same state tensor, alone (the norm given) or after the norm
// and before the scale in one launch (clip_step.cuh).
#include "clip_step.cuh"

namespace fastclip {
namespace cuda {

__device__ void run_step(const ZClipStep& step) {
  if (threadIdx.x == 0)
    zclip_step(step.config, step.state, load_as_double(step.norm.data, step.norm.dtype, 0), step.result);
}

FASTCLIP_STEP_LAUNCHERS(ZClipStep)

}  // namespace cuda
}  // namespace fastclip
