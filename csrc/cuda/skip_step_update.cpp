// skip_step_update_ on CUDA: the op's checks (common/stats_op_args.h), then one block on the
// current stream under a device guard (skip_step_update_kernel.cu). No host sync.
#include <torch/library.h>

#include "../common/stats_op_args.h"
#include "device_list.h"
#include "device_runtime.h"
#include "stats_kernels.h"

namespace fastclip {
namespace cuda {
namespace {

void run_skip_step_update(const SkipStepConfig& config, const SkipStepTensors& t) {
  const DeviceScope scope(t.history.device());
  const SkipStepParams params{config,
                              device_values(t.loss),
                              device_values(t.norm),
                              t.history.data_ptr<double>(),
                              t.counters.data_ptr<int64_t>(),
                              t.result.data_ptr<float>()};
  check_launch([&] { return launch_skip_step_update(params, scope.stream()); });
}

}  // namespace
}  // namespace cuda
}  // namespace fastclip

TORCH_LIBRARY_IMPL(fastclip, FASTCLIP_CUDA_DISPATCH_KEY, m) {
  m.impl("skip_step_update_", &fastclip::skip_step_update<fastclip::cuda::run_skip_step_update>);
}
