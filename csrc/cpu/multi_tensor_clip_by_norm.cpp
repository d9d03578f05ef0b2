#include <torch/library.h>

#include "../common/list_op_args.h"
#include "cpu_passes.h"
#include "cpu_registration.h"

namespace fastclip {
namespace cpu {
namespace {

void multi_tensor_clip_by_norm_cpu(at::TensorList tensors, const at::Tensor& total_norm, double max_norm) {
  const CheckedList checked = check_multi_tensor_clip_by_norm_args(tensors, total_norm, max_norm);
  scale_list(checked, std::vector<double>(tensors.size(), clip_coefficient_of(total_norm, max_norm)));
}

}  // namespace
}  // namespace cpu
}  // namespace fastclip

TORCH_LIBRARY_IMPL(fastclip, CPU, m) {
  if (fastclip::cpu::cpu_ops_run_cuda_kernels()) return;
  m.impl("multi_tensor_clip_by_norm_", &fastclip::cpu::multi_tensor_clip_by_norm_cpu);
}
