// adagc_update_ on CUDA: the op's checks (common/stats_op_args.h), then clip_step.h: the step on
// the norms given, or the norms, the step and the scale in one launch. No host sync.
#include <torch/library.h>

#include "clip_step.h"

namespace fastclip {
namespace cuda {
namespace {

void run_adagc_update(const AdaGCConfig& config, const AdaGCTensors& t, const GradsUpdate& update) {
  const PerEntryTensors& e = t.entries;
  double* gamma = t.gamma.data_ptr<double>();
  double* steps = t.steps.data_ptr<double>();
  run_clip_step(e.total_norm, e.norms, 2.0, /*want_per_tensor=*/true, update,
                update_factors(update, e.result.data_ptr<float>(), e.coef.data_ptr<float>()), e.result.device(),
                [&](const at::Tensor& total, const at::Tensor& norms) {
                  return AdaGCStep{config, gamma, steps, entry_params(e, total, norms)};
                });
}

}  // namespace
}  // namespace cuda
}  // namespace fastclip

TORCH_LIBRARY_IMPL(fastclip, FASTCLIP_CUDA_DISPATCH_KEY, m) {
  m.impl("adagc_update_", &fastclip::adagc_update<fastclip::cuda::run_adagc_update>);
}
