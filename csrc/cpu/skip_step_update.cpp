// skip_step_update_ on the CPU: the op's checks (common/stats_op_args.h), then the step of
// common/skip_step.h, its sums in the order the CUDA kernel adds them.
#include <torch/library.h>

#include "../common/stats_op_args.h"
#include "cpu_registration.h"

namespace fastclip {
namespace cpu {
namespace {

void run_skip_step_update(const SkipStepConfig& config, const SkipStepTensors& t) {
  skip_step_host(config, t.history.data_ptr<double>(), t.counters.data_ptr<int64_t>(), t.result.data_ptr<float>(),
                 t.loss.item<double>(), t.norm.item<double>());
}

}  // namespace
}  // namespace cpu
}  // namespace fastclip

TORCH_LIBRARY_IMPL(fastclip, CPU, m) {
  if (fastclip::cpu::cpu_ops_run_cuda_kernels()) return;
  m.impl("skip_step_update_", &fastclip::skip_step_update<fastclip::cpu::run_skip_step_update>);
}
