// autoclip_update_ on CUDA: the op's checks (common/stats_op_args.h), device guard, current
// stream, one launch. No host sync: norms are read on the device, whatever their float dtype.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "../common/stats_op_args.h"
#include "device_list.h"

namespace fastclip {
namespace cuda {
namespace {

void run_autoclip_update(const AutoClipConfig& config, const AutoClipTensors& t) {
  const c10::cuda::CUDAGuard guard(t.entries.total_norm.device());
  C10_CUDA_CHECK(launch_autoclip_update(config, autoclip_buffers(t), entry_params(t.entries),
                                        c10::cuda::getCurrentCUDAStream().stream()));
}

}  // namespace
}  // namespace cuda
}  // namespace fastclip

TORCH_LIBRARY_IMPL(fastclip, CUDA, m) {
  m.impl("autoclip_update_", &fastclip::autoclip_update<fastclip::cuda::run_autoclip_update>);
}
