// multi_tensor_clamp_ on CUDA: checks, device guard, current stream, one launch.
#include <ATen/ATen.h>
#include <torch/library.h>

#include "../common/list_op_args.h"
#include "device_list.h"
#include "device_runtime.h"

namespace fastclip {
namespace cuda {
namespace {

void multi_tensor_clamp_cuda(at::TensorList tensors, double clip_value) {
  const CheckedList checked = check_multi_tensor_clamp_args(tensors, clip_value);
  if (tensors.empty()) return;
  const DeviceScope scope(tensors[0].device());
  const DeviceListPlan prepared = prepare_on_device(checked, scope);
  check_launch([&] {
    return launch_multi_tensor_clamp(ClampParams{prepared.list, clip_value}, prepared.grid(), prepared.stream);
  });
  finish_mutation(prepared.plan, tensors);
}

}  // namespace
}  // namespace cuda
}  // namespace fastclip

TORCH_LIBRARY_IMPL(fastclip, FASTCLIP_CUDA_DISPATCH_KEY, m) {
  m.impl("multi_tensor_clamp_", &fastclip::cuda::multi_tensor_clamp_cuda);
}
