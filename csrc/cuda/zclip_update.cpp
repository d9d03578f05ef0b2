// zclip_update_ on CUDA: the op's checks (common/stats_op_args.h), then clip_step.h: the step on
// the norm given, or the norm, the step and the scale in one launch. No host sync.
#include <torch/library.h>

#include "clip_step.h"

namespace fastclip {
namespace cuda {
namespace {

void run_zclip_update(const ZClipConfig& config, const ZClipTensors& t, const GradsUpdate& update) {
  float* result = t.result.data_ptr<float>();
  double* state = t.state.data_ptr<double>();
  run_clip_step(t.norm, std::nullopt, 2.0, /*want_per_tensor=*/false, update, update_factors(update, result, nullptr),
                t.state.device(), [&](const at::Tensor& total, const at::Tensor&) {
                  return ZClipStep{config, device_values(total), state, result};
                });
}

}  // namespace
}  // namespace cuda
}  // namespace fastclip

TORCH_LIBRARY_IMPL(fastclip, FASTCLIP_CUDA_DISPATCH_KEY, m) {
  m.impl("zclip_update_", &fastclip::zclip_update<fastclip::cuda::run_zclip_update>);
}
