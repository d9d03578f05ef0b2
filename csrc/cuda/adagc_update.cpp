// adagc_update_ on CUDA: the op's checks (common/stats_op_args.h), device guard, current stream,
// one launch. No host sync: norms are read on the device, whatever their float dtype.
#include <ATen/ATen.h>
#include <torch/library.h>

#include "../common/stats_op_args.h"
#include "device_list.h"
#include "device_runtime.h"

namespace fastclip {
namespace cuda {
namespace {

void run_adagc_update(const AdaGCConfig& config, const AdaGCTensors& t) {
  const DeviceScope scope(t.entries.total_norm.device());
  check_launch([&] {
    return launch_adagc_update(config, t.gamma.data_ptr<double>(), t.steps.data_ptr<double>(),
                               entry_params(t.entries), scope.stream());
  });
}

}  // namespace
}  // namespace cuda
}  // namespace fastclip

TORCH_LIBRARY_IMPL(fastclip, FASTCLIP_CUDA_DISPATCH_KEY, m) {
  m.impl("adagc_update_", &fastclip::adagc_update<fastclip::cuda::run_adagc_update>);
}
