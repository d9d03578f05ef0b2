#include <ATen/ATen.h>
#include <torch/library.h>

#include <vector>

#include "../common/list_plan.h"
#include "cpu_passes.h"

namespace fastclip {
namespace cpu {
namespace {

// multi_tensor_norm followed by multi_tensor_clip_by_norm_, with one plan for both passes.
at::Tensor multi_tensor_clip_grad_norm_cpu(at::TensorList tensors, double max_norm, double norm_type) {
  check_nonnegative(max_norm, "max_norm");
  check_norm_type(norm_type);
  TORCH_CHECK(!tensors.empty(), "fastclip: tensors must not be empty");
  check_tensor_list(tensors, "tensors", /*mutated=*/true);
  const ListPlan plan = plan_tensor_list(tensors, kCpuChunkSize);
  at::Tensor total = std::get<0>(norm_pass(plan, norm_type, /*per_tensor=*/false));
  scale_pass(plan, std::vector<double>(tensors.size(), clip_coefficient_of(total, max_norm)));
  finish_mutation(plan, tensors);
  return total;
}

}  // namespace
}  // namespace cpu
}  // namespace fastclip

TORCH_LIBRARY_IMPL(fastclip, CPU, m) {
  m.impl("multi_tensor_clip_grad_norm_", &fastclip::cpu::multi_tensor_clip_grad_norm_cpu);
}
