#include <ATen/ATen.h>
#include <torch/library.h>

#include <cstring>
#include <vector>

#include "../common/list_plan.h"
#include "cpu_chunk_ops.h"
#include "cpu_passes.h"
#include "cpu_parallel.h"

namespace fastclip {
namespace cpu {

void scale_pass(const ListPlan& plan, const std::vector<double>& coef_per_tensor, bool clear_on_zero) {
  for_each_chunk(
      plan,
      [&](int64_t, const TensorMeta& meta, int64_t begin, int64_t end) {
        const double coef = coef_per_tensor[&meta - plan.tensors.data()];
        if (clear_on_zero && coef == 0.0) {
          const int64_t bytes = dtype_size(meta.dtype);
          std::memset(static_cast<char*>(meta.data) + begin * bytes, 0, (end - begin) * bytes);
        } else if (coef != 1.0) {
          chunk_scale(meta, begin, end, coef);
        }
      },
      /*recent_first=*/true);
}

double clip_coefficient_of(const at::Tensor& total_norm, double max_norm) {
  if (total_norm.scalar_type() == at::kDouble) return clip_coefficient<double>(max_norm, total_norm.item<double>());
  return clip_coefficient<float>(static_cast<float>(max_norm), total_norm.item<float>());
}

namespace {

void scale_all(at::TensorList tensors, const std::vector<double>& coef_per_tensor, bool clear_on_zero = false) {
  const ListPlan plan = plan_tensor_list(tensors, kCpuChunkSize);
  scale_pass(plan, coef_per_tensor, clear_on_zero);
  finish_mutation(plan, tensors);
}

void multi_tensor_scale_cpu(at::TensorList tensors, const at::Tensor& scale, bool clear_on_zero) {
  check_tensor_list(tensors, "tensors", /*mutated=*/true);
  check_scalar_tensor(scale, "scale", tensors, /*allow_per_tensor=*/true);
  const at::Tensor values = scale.to(at::kDouble).contiguous().reshape({-1});
  const double* v = values.data_ptr<double>();
  std::vector<double> coef(tensors.size());
  for (size_t t = 0; t < tensors.size(); ++t) coef[t] = values.numel() == 1 ? v[0] : v[t];
  scale_all(tensors, coef, clear_on_zero);
}

void multi_tensor_clip_by_norm_cpu(at::TensorList tensors, const at::Tensor& total_norm, double max_norm) {
  check_nonnegative(max_norm, "max_norm");
  check_tensor_list(tensors, "tensors", /*mutated=*/true);
  check_scalar_tensor(total_norm, "total_norm", tensors, /*allow_per_tensor=*/false);
  scale_all(tensors, std::vector<double>(tensors.size(), clip_coefficient_of(total_norm, max_norm)));
}

}  // namespace
}  // namespace cpu
}  // namespace fastclip

TORCH_LIBRARY_IMPL(fastclip, CPU, m) {
  m.impl("multi_tensor_scale_", &fastclip::cpu::multi_tensor_scale_cpu);
  m.impl("multi_tensor_clip_by_norm_", &fastclip::cpu::multi_tensor_clip_by_norm_cpu);
}
