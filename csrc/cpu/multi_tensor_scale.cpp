#include <ATen/ATen.h>
#include <torch/library.h>

#include <cmath>
#include <vector>

#include "../common/list_plan.h"
#include "cpu_chunk_ops.h"
#include "cpu_parallel.h"

namespace fastclip {
namespace cpu {
namespace {

// Scales chunk by chunk; a tensor whose coefficient is exactly 1 is not touched.
void scale_plan(const ListPlan& plan, const std::vector<double>& coef_per_tensor) {
  for_each_chunk(plan, [&](int64_t, const TensorMeta& meta, int64_t begin, int64_t end) {
    const int64_t t = &meta - plan.tensors.data();
    const double coef = coef_per_tensor[t];
    if (coef != 1.0) chunk_scale(meta, begin, end, coef);
  });
}

void scale_all(at::TensorList tensors, const std::vector<double>& coef_per_tensor) {
  const ListPlan plan = plan_tensor_list(tensors, kCpuChunkSize);
  scale_plan(plan, coef_per_tensor);
  finish_mutation(plan, tensors);
}

void multi_tensor_scale_cpu(at::TensorList tensors, const at::Tensor& scale) {
  check_tensor_list(tensors, "tensors", /*mutated=*/true);
  check_scalar_tensor(scale, "scale", tensors, /*allow_per_tensor=*/true);
  const at::Tensor values = scale.to(at::kDouble).contiguous().reshape({-1});
  const double* v = values.data_ptr<double>();
  std::vector<double> coef(tensors.size());
  for (size_t t = 0; t < tensors.size(); ++t) coef[t] = values.numel() == 1 ? v[0] : v[t];
  scale_all(tensors, coef);
}

void multi_tensor_clip_by_norm_cpu(at::TensorList tensors, const at::Tensor& total_norm, double max_norm) {
  TORCH_CHECK(!std::isnan(max_norm) && max_norm >= 0.0, "fastclip: max_norm must be >= 0, got ", max_norm);
  check_tensor_list(tensors, "tensors", /*mutated=*/true);
  check_scalar_tensor(total_norm, "total_norm", tensors, /*allow_per_tensor=*/false);
  // The coefficient is computed in float, or double for a float64 norm, as torch does.
  double coef;
  if (total_norm.scalar_type() == at::kDouble) {
    coef = clip_coefficient<double>(max_norm, total_norm.item<double>());
  } else {
    coef = clip_coefficient<float>(static_cast<float>(max_norm), total_norm.item<float>());
  }
  scale_all(tensors, std::vector<double>(tensors.size(), coef));
}

}  // namespace
}  // namespace cpu
}  // namespace fastclip

TORCH_LIBRARY_IMPL(fastclip, CPU, m) {
  m.impl("multi_tensor_scale_", &fastclip::cpu::multi_tensor_scale_cpu);
  m.impl("multi_tensor_clip_by_norm_", &fastclip::cpu::multi_tensor_clip_by_norm_cpu);
}
