#include <torch/library.h>

#include "cpu_registration.h"
#include "cpu_steps.h"

namespace fastclip {
namespace cpu {
namespace {

void run_normclip_update(const NormClipConfig& config, const NormClipTensors& t, double norm_type,
                         const GradsUpdate& update) {
  const StepNorms norms = step_norms(t.grads, t.norm, std::nullopt, norm_type, /*want_per_tensor=*/false);
  float* result = t.result.data_ptr<float>();
  normclip_step(config, norms.total.to(at::kDouble).item<double>(), result);
  update_grads(t.grads, norms, update, update_factors(update, result, nullptr));
}

}  // namespace
}  // namespace cpu
}  // namespace fastclip

TORCH_LIBRARY_IMPL(fastclip, CPU, m) {
  if (fastclip::cpu::cpu_ops_run_cuda_kernels()) return;
  m.impl("normclip_update_", &fastclip::normclip_update<fastclip::cpu::run_normclip_update>);
}
