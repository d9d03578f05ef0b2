// multi_tensor_scale_ on CUDA: checks, device guard, current stream, one launch. No host sync.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "../common/list_op_args.h"
#include "device_list.h"

namespace fastclip {
namespace cuda {
namespace {

void multi_tensor_scale_cuda(at::TensorList tensors, const at::Tensor& scale, bool clear_on_zero) {
  check_multi_tensor_scale_args(tensors, scale);
  if (tensors.empty()) return;
  const c10::cuda::CUDAGuard guard(tensors[0].device());
  const DeviceListPlan prepared = prepare_on_device(tensors);
  const at::Tensor factor = scale.contiguous();
  // check_multi_tensor_scale_args admits one value, or one per tensor.
  const ScaleParams params{prepared.list, device_values(factor), /*per_tensor=*/factor.numel() != 1, clear_on_zero};
  C10_CUDA_CHECK(launch_multi_tensor_scale(params, prepared.grid(), prepared.stream));
  finish_mutation(prepared.plan, tensors);
}

}  // namespace
}  // namespace cuda
}  // namespace fastclip

TORCH_LIBRARY_IMPL(fastclip, CUDA, m) { m.impl("multi_tensor_scale_", &fastclip::cuda::multi_tensor_scale_cuda); }
