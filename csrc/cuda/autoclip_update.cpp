// autoclip_update_ on CUDA: the op's checks (common/stats_op_args.h), device guard, current
// stream, one launch. No host sync: norms are read on the device, whatever their float dtype.
#include <ATen/ATen.h>
#include <torch/library.h>

#include "../common/stats_op_args.h"
#include "device_list.h"
#include "device_runtime.h"

namespace fastclip {
namespace cuda {
namespace {

void run_autoclip_update(const AutoClipConfig& config, const AutoClipTensors& t) {
  const DeviceScope scope(t.entries.total_norm.device());
  check_launch([&] {
    return launch_autoclip_update(config, autoclip_buffers(t), entry_params(t.entries), scope.stream());
  });
}

}  // namespace
}  // namespace cuda
}  // namespace fastclip

TORCH_LIBRARY_IMPL(fastclip, FASTCLIP_CUDA_DISPATCH_KEY, m) {
  m.impl("autoclip_update_", &fastclip::autoclip_update<fastclip::cuda::run_autoclip_update>);
}
