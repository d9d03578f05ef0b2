// multi_tensor_clip_grad_norm_ on CUDA: checks, device guard, current stream; the norm and the
// clip by it from one uploaded plan, the coefficient computed on the device. No host sync.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "../common/list_op_args.h"
#include "device_list.h"

namespace fastclip {
namespace cuda {
namespace {

at::Tensor multi_tensor_clip_grad_norm_cuda(at::TensorList tensors, double max_norm, double norm_type) {
  check_multi_tensor_clip_grad_norm_args(tensors, max_norm, norm_type);
  const c10::cuda::CUDAGuard guard(tensors[0].device());
  const DeviceListPlan prepared = prepare_on_device(tensors);
  const NormLaunch norm = norm_launch(prepared, norm_type, /*per_tensor=*/false);
  C10_CUDA_CHECK(launch_multi_tensor_clip_grad_norm(norm.params, clip_by_norm_params(prepared, norm.total, max_norm),
                                                    prepared.grid(), prepared.stream));
  finish_mutation(prepared.plan, tensors);
  return norm.total;
}

}  // namespace
}  // namespace cuda
}  // namespace fastclip

TORCH_LIBRARY_IMPL(fastclip, CUDA, m) {
  m.impl("multi_tensor_clip_grad_norm_", &fastclip::cuda::multi_tensor_clip_grad_norm_cuda);
}
