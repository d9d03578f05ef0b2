// autoclip_update_ on CUDA: the op's checks (common/stats_op_args.h), then clip_step.h: the step
// on the norms given, or the norms, the step and the scale in one launch. No host sync.
#include <torch/library.h>

#include "clip_step.h"

namespace fastclip {
namespace cuda {
namespace {

void run_autoclip_update(const AutoClipConfig& config, const AutoClipTensors& t, const GradsUpdate& update) {
  const PerEntryTensors& e = t.entries;
  const AutoClipBuffers buffers = autoclip_buffers(t);
  run_clip_step(e.total_norm, e.norms, 2.0, e.per_tensor, update,
                update_factors(update, e.result.data_ptr<float>(), e.coef.data_ptr<float>()), e.result.device(),
                [&](const at::Tensor& total, const at::Tensor& norms) {
                  return AutoClipStep{config, buffers, entry_params(e, total, norms)};
                });
}

}  // namespace
}  // namespace cuda
}  // namespace fastclip

TORCH_LIBRARY_IMPL(fastclip, FASTCLIP_CUDA_DISPATCH_KEY, m) {
  m.impl("autoclip_update_", &fastclip::autoclip_update<fastclip::cuda::run_autoclip_update>);
}
