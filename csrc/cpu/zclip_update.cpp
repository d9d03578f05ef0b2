#include <ATen/ATen.h>
#include <torch/library.h>

#include "../common/stats_op_args.h"
#include "cpu_registration.h"

namespace fastclip {
namespace cpu {
namespace {

void run_zclip_update(const ZClipConfig& config, const ZClipTensors& t) {
  zclip_step(config, t.state.data_ptr<double>(), t.norm.to(at::kDouble).item<double>(), t.result.data_ptr<float>());
}

}  // namespace
}  // namespace cpu
}  // namespace fastclip

TORCH_LIBRARY_IMPL(fastclip, CPU, m) {
  if (fastclip::cpu::cpu_ops_run_cuda_kernels()) return;
  m.impl("zclip_update_", &fastclip::zclip_update<fastclip::cpu::run_zclip_update>);
}
