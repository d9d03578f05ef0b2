// multi_tensor_clip_grad_norm_ on CUDA: checks, device guard, current stream; the norm and the
// clip by it from one uploaded plan, the coefficient computed on the device, in one cooperative
// launch (or two, with FASTCLIP_SINGLE_LAUNCH=0 or where the device has no cooperative launch).
// No host sync.
#include <ATen/ATen.h>
#include <torch/library.h>

#include "../common/list_op_args.h"
#include "device_list.h"
#include "device_runtime.h"

namespace fastclip {
namespace cuda {
namespace {

at::Tensor multi_tensor_clip_grad_norm_cuda(at::TensorList tensors, double max_norm, double norm_type) {
  const CheckedList checked = check_multi_tensor_clip_grad_norm_args(tensors, max_norm, norm_type);
  const bool single_launch = single_launch_enabled();  // before anything is enqueued: it may throw
  const DeviceScope scope(tensors[0].device());
  const DeviceListPlan prepared = prepare_on_device(checked, scope);
  const NormLaunch norm = norm_launch(prepared, norm_type, /*per_tensor=*/false);
  check_launch([&] {
    return launch_multi_tensor_clip_grad_norm(norm.params, clip_by_norm_params(prepared, norm.total, max_norm),
                                              prepared.grid(), single_launch, prepared.stream);
  });
  finish_mutation(prepared.plan, tensors);
  return norm.total;
}

}  // namespace
}  // namespace cuda
}  // namespace fastclip

TORCH_LIBRARY_IMPL(fastclip, FASTCLIP_CUDA_DISPATCH_KEY, m) {
  m.impl("multi_tensor_clip_grad_norm_", &fastclip::cuda::multi_tensor_clip_grad_norm_cuda);
}
