// multi_tensor_clamp_ on CUDA: checks, device guard, current stream, one launch.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "../common/list_op_args.h"
#include "device_list.h"

namespace fastclip {
namespace cuda {
namespace {

void multi_tensor_clamp_cuda(at::TensorList tensors, double clip_value) {
  check_multi_tensor_clamp_args(tensors, clip_value);
  if (tensors.empty()) return;
  const c10::cuda::CUDAGuard guard(tensors[0].device());
  const DeviceListPlan prepared = prepare_on_device(tensors);
  C10_CUDA_CHECK(launch_multi_tensor_clamp(ClampParams{prepared.list, clip_value}, prepared.grid(), prepared.stream));
  finish_mutation(prepared.plan, tensors);
}

}  // namespace
}  // namespace cuda
}  // namespace fastclip

TORCH_LIBRARY_IMPL(fastclip, CUDA, m) { m.impl("multi_tensor_clamp_", &fastclip::cuda::multi_tensor_clamp_cuda); }
