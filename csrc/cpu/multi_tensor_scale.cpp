#include <ATen/ATen.h>
#include <torch/library.h>

#include "../common/list_op_args.h"
#include "cpu_passes.h"
#include "cpu_registration.h"

namespace fastclip {
namespace cpu {
namespace {

void multi_tensor_scale_cpu(at::TensorList tensors, const at::Tensor& scale, bool clear_on_zero) {
  const CheckedList checked = check_multi_tensor_scale_args(tensors, scale);
  const at::Tensor values = scale.to(at::kDouble).contiguous().reshape({-1});
  const double* v = values.data_ptr<double>();
  std::vector<double> coef(tensors.size());
  for (size_t t = 0; t < tensors.size(); ++t) coef[t] = values.numel() == 1 ? v[0] : v[t];
  scale_list(checked, coef, clear_on_zero);
}

}  // namespace
}  // namespace cpu
}  // namespace fastclip

TORCH_LIBRARY_IMPL(fastclip, CPU, m) {
  if (fastclip::cpu::cpu_ops_run_cuda_kernels()) return;
  m.impl("multi_tensor_scale_", &fastclip::cpu::multi_tensor_scale_cpu);
}
