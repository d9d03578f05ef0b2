// NormClip's step (normclip_update_) on the device: one thread runs exactly the function the CPU
// op runs (common/normclip_step.h), alone (the norm given) or after the norm and before the scale
// in one launch (clip_step.cuh).
#include "clip_step.cuh"

namespace fastclip {
namespace cuda {

__device__ void run_step(const NormClipStep& step) {
  if (threadIdx.x == 0) normclip_step(step.config, load_as_double(step.norm.data, step.norm.dtype, 0), step.result);
}

FASTCLIP_STEP_LAUNCHERS(NormClipStep)

}  // namespace cuda
}  // namespace fastclip
