// multi_tensor_norm on CUDA: checks, device guard, current stream, one launch. No host sync.
#include <ATen/ATen.h>
#include <torch/library.h>

#include "../common/list_op_args.h"
#include "device_list.h"
#include "device_runtime.h"

namespace fastclip {
namespace cuda {
namespace {

std::tuple<at::Tensor, at::Tensor> multi_tensor_norm_cuda(at::TensorList tensors, double norm_type, bool per_tensor) {
  const CheckedList checked = check_multi_tensor_norm_args(tensors, norm_type);
  const DeviceScope scope(tensors[0].device());
  const DeviceListPlan prepared = prepare_on_device(checked, scope);
  const NormLaunch launch = norm_launch(prepared, norm_type, per_tensor);
  check_launch([&] { return launch_multi_tensor_norm(launch.params, prepared.grid(), prepared.stream); });
  return {launch.total, launch.per_tensor_norms};
}

}  // namespace
}  // namespace cuda
}  // namespace fastclip

TORCH_LIBRARY_IMPL(fastclip, FASTCLIP_CUDA_DISPATCH_KEY, m) {
  m.impl("multi_tensor_norm", &fastclip::cuda::multi_tensor_norm_cuda);
}
