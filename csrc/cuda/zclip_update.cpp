// zclip_update_ on CUDA: the op's checks (common/stats_op_args.h), device guard, current stream,
// one launch. No host sync: the norm is read on the device, whatever its float dtype.
#include <ATen/ATen.h>
#include <torch/library.h>

#include "../common/stats_op_args.h"
#include "device_list.h"
#include "device_runtime.h"

namespace fastclip {
namespace cuda {
namespace {

void run_zclip_update(const ZClipConfig& config, const ZClipTensors& t) {
  const DeviceScope scope(t.norm.device());
  check_launch([&] {
    return launch_zclip_update(config, device_values(t.norm), t.state.data_ptr<double>(), t.result.data_ptr<float>(),
                               scope.stream());
  });
}

}  // namespace
}  // namespace cuda
}  // namespace fastclip

TORCH_LIBRARY_IMPL(fastclip, FASTCLIP_CUDA_DISPATCH_KEY, m) {
  m.impl("zclip_update_", &fastclip::zclip_update<fastclip::cuda::run_zclip_update>);
}
