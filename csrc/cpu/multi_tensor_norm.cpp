#include <torch/library.h>

#include "../common/list_op_args.h"
#include "cpu_passes.h"
#include "cpu_registration.h"

namespace fastclip {
namespace cpu {
namespace {

std::tuple<at::Tensor, at::Tensor> multi_tensor_norm_cpu(at::TensorList tensors, double norm_type, bool per_tensor) {
  const CheckedList checked = check_multi_tensor_norm_args(tensors, norm_type);
  return norm_pass(plan_tensor_list(checked, kCpuChunkSize), norm_type, per_tensor);
}

}  // namespace
}  // namespace cpu
}  // namespace fastclip

TORCH_LIBRARY_IMPL(fastclip, CPU, m) {
  if (fastclip::cpu::cpu_ops_run_cuda_kernels()) return;
  m.impl("multi_tensor_norm", &fastclip::cpu::multi_tensor_norm_cpu);
}
