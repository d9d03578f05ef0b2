#include <torch/library.h>

#include "cpu_registration.h"
#include "cpu_steps.h"

namespace fastclip {
namespace cpu {
namespace {

void run_zclip_update(const ZClipConfig& config, const ZClipTensors& t, const GradsUpdate& update) {
  const StepNorms norms = step_norms(t.grads, t.norm, std::nullopt, 2.0, /*want_per_tensor=*/false);
  float* result = t.result.data_ptr<float>();
  zclip_step(config, t.state.data_ptr<double>(), norms.total.to(at::kDouble).item<double>(), result);
  update_grads(t.grads, norms, update, update_factors(update, result, nullptr));
}

}  // namespace
}  // namespace cpu
}  // namespace fastclip

TORCH_LIBRARY_IMPL(fastclip, CPU, m) {
  if (fastclip::cpu::cpu_ops_run_cuda_kernels()) return;
  m.impl("zclip_update_", &fastclip::zclip_update<fastclip::cpu::run_zclip_update>);
}
