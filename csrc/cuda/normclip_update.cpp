// normclip_update_ on CUDA: the op's checks (common/stats_op_args.h), then clip_step.h: the step
// on the norm given, or the norm, the step and the scale in one launch. No host sync.
#include <torch/library.h>

#include "clip_step.h"

namespace fastclip {
namespace cuda {
namespace {

void run_normclip_update(const NormClipConfig& config, const NormClipTensors& t, double norm_type,
                         const GradsUpdate& update) {
  float* result = t.result.data_ptr<float>();
  run_clip_step(
      t.norm, std::nullopt, norm_type, /*want_per_tensor=*/false, update, update_factors(update, result, nullptr),
      t.result.device(),
      [&](const at::Tensor& total, const at::Tensor&) { return NormClipStep{config, device_values(total), result}; });
}

}  // namespace
}  // namespace cuda
}  // namespace fastclip

TORCH_LIBRARY_IMPL(fastclip, FASTCLIP_CUDA_DISPATCH_KEY, m) {
  m.impl("normclip_update_", &fastclip::normclip_update<fastclip::cuda::run_normclip_update>);
}
