// multi_tensor_clip_by_norm_ on CUDA: checks, device guard, current stream, one launch; the
// coefficient is computed on the device. No host sync.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "../common/list_op_args.h"
#include "device_list.h"

namespace fastclip {
namespace cuda {
namespace {

void multi_tensor_clip_by_norm_cuda(at::TensorList tensors, const at::Tensor& total_norm, double max_norm) {
  check_multi_tensor_clip_by_norm_args(tensors, total_norm, max_norm);
  if (tensors.empty()) return;
  const c10::cuda::CUDAGuard guard(tensors[0].device());
  const DeviceListPlan prepared = prepare_on_device(tensors);
  const at::Tensor norm = total_norm.contiguous();
  C10_CUDA_CHECK(launch_multi_tensor_clip_by_norm(clip_by_norm_params(prepared, norm, max_norm), prepared.grid(),
                                                  prepared.stream));
  finish_mutation(prepared.plan, tensors);
}

}  // namespace
}  // namespace cuda
}  // namespace fastclip

TORCH_LIBRARY_IMPL(fastclip, CUDA, m) {
  m.impl("multi_tensor_clip_by_norm_", &fastclip::cuda::multi_tensor_clip_by_norm_cuda);
}
