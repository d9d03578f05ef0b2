#include <torch/library.h>

#include "../common/list_op_args.h"
#include "cpu_passes.h"
#include "cpu_registration.h"

namespace fastclip {
namespace cpu {
namespace {

// The norm pass, then the scale pass by torch's coefficient (from the accumulated total where the
// stored one overflowed: norm_math.h's coefficient_total), over one plan.
at::Tensor multi_tensor_clip_grad_norm_cpu(at::TensorList tensors, double max_norm, double norm_type) {
  const ListPlan plan =
      plan_tensor_list(check_multi_tensor_clip_grad_norm_args(tensors, max_norm, norm_type), kCpuChunkSize);
  double accumulated = 0.0;
  at::Tensor total = std::get<0>(norm_pass(plan, norm_type, /*per_tensor=*/false, &accumulated));
  scale_pass(plan, std::vector<double>(tensors.size(), clip_coefficient_of(total, accumulated, max_norm)));
  finish_mutation(plan, tensors);
  return total;
}

}  // namespace
}  // namespace cpu
}  // namespace fastclip

TORCH_LIBRARY_IMPL(fastclip, CPU, m) {
  if (fastclip::cpu::cpu_ops_run_cuda_kernels()) return;
  m.impl("multi_tensor_clip_grad_norm_", &fastclip::cpu::multi_tensor_clip_grad_norm_cpu);
}
