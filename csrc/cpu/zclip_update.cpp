#include <torch/library.h>

#include "cpu_registration.h"
#include "cpu_steps.h"

namespace fastclip {
namespace cpu {
namespace {

void run_zclip_update(const ZClipConfig& config, const ZClipTensors& t, const GradsUpdate& update) {
  double* state = t.state.data_ptr<double>();
  run_total_norm_step(t.norm, 2.0, t.result, update,
                      [&](double total, float* result) { zclip_step(config, state, total, result); });
}

}  // namespace
}  // namespace cpu
}  // namespace fastclip

TORCH_LIBRARY_IMPL(fastclip, CPU, m) {
  if (fastclip::cpu::cpu_ops_run_cuda_kernels()) return;
  m.impl("zclip_update_", &fastclip::zclip_update<fastclip::cpu::run_zclip_update>);
}
