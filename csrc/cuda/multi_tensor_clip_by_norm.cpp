// multi_tensor_clip_by_norm_ on CUDA: checks, device guard, current stream, one launch; the
// coefficient is computed on the device. No host sync.
#include <ATen/ATen.h>
#include <torch/library.h>

#include "../common/list_op_args.h"
#include "device_list.h"
#include "device_runtime.h"

namespace fastclip {
namespace cuda {
namespace {

void multi_tensor_clip_by_norm_cuda(at::TensorList tensors, const at::Tensor& total_norm, double max_norm) {
  const CheckedList checked = check_multi_tensor_clip_by_norm_args(tensors, total_norm, max_norm);
  if (tensors.empty()) return;
  const DeviceScope scope(tensors[0].device());
  const DeviceListPlan prepared = prepare_on_device(checked, scope);
  const at::Tensor norm = total_norm.contiguous();
  check_launch([&] {
    return launch_multi_tensor_clip_by_norm(clip_by_norm_params(prepared, norm, max_norm), prepared.grid(),
                                            prepared.stream);
  });
  finish_mutation(prepared.plan, tensors);
}

}  // namespace
}  // namespace cuda
}  // namespace fastclip

TORCH_LIBRARY_IMPL(fastclip, FASTCLIP_CUDA_DISPATCH_KEY, m) {
  m.impl("multi_tensor_clip_by_norm_", &fastclip::cuda::multi_tensor_clip_by_norm_cuda);
}
