#include <torch/library.h>

#include "cpu_registration.h"
#include "cpu_steps.h"

namespace fastclip {
namespace cpu {
namespace {

void run_normclip_update(const NormClipConfig& config, const NormClipTensors& t, double norm_type,
                         const GradsUpdate& update) {
  run_total_norm_step(t.norm, norm_type, t.result, update,
                      [&](double total, float* result) { normclip_step(config, total, result); });
}

}  // namespace
}  // namespace cpu
}  // namespace fastclip

TORCH_LIBRARY_IMPL(fastclip, CPU, m) {
  if (fastclip::cpu::cpu_ops_run_cuda_kernels()) return;
  m.impl("normclip_update_", &fastclip::normclip_update<fastclip::cpu::run_normclip_update>);
}
