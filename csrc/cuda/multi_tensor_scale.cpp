// multi_tensor_scale_ on CUDA: checks, device guard, current stream, one launch. No host sync.
#include <ATen/ATen.h>
#include <torch/library.h>

#include "../common/list_op_args.h"
#include "device_list.h"
#include "device_runtime.h"

namespace fastclip {
namespace cuda {
namespace {

void multi_tensor_scale_cuda(at::TensorList tensors, const at::Tensor& scale, bool clear_on_zero) {
  const CheckedList checked = check_multi_tensor_scale_args(tensors, scale);
  if (tensors.empty()) return;
  const DeviceScope scope(tensors[0].device());
  const DeviceListPlan prepared = prepare_on_device(checked, scope);
  const at::Tensor factor = scale.contiguous();
  // check_multi_tensor_scale_args admits one value, or one per tensor.
  const ScaleParams params{prepared.list, device_values(factor), /*per_tensor=*/factor.numel() != 1, clear_on_zero,
                           /*zero_where_set=*/false};
  check_launch([&] { return launch_multi_tensor_scale(params, prepared.grid(), prepared.stream); });
  finish_mutation(prepared.plan, tensors);
}

}  // namespace
}  // namespace cuda
}  // namespace fastclip

TORCH_LIBRARY_IMPL(fastclip, FASTCLIP_CUDA_DISPATCH_KEY, m) {
  m.impl("multi_tensor_scale_", &fastclip::cuda::multi_tensor_scale_cuda);
}
