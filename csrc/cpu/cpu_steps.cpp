#include "cpu_steps.h"

#include <vector>

#include "cpu_passes.h"

namespace fastclip {
namespace cpu {

StepNorms step_norms(const CheckedList& grads, const std::optional<at::Tensor>& total,
                     const std::optional<at::Tensor>& per_tensor, double norm_type, bool want_per_tensor) {
  if (total.has_value()) return StepNorms{*total, per_tensor.value_or(at::Tensor()), std::nullopt};
  StepNorms norms;
  norms.plan = plan_tensor_list(grads, kCpuChunkSize);
  std::tie(norms.total, norms.per_tensor) = norm_pass(*norms.plan, norm_type, want_per_tensor);
  return norms;
}

void update_grads(const StepNorms& norms, const GradsUpdate& update, const float* factors) {
  if (!update.active) return;
  const CheckedList& grads = update.grads;
  std::vector<double> coef(grads.size());
  for (size_t i = 0; i < grads.size(); ++i) {
    const double factor = factors[update.per_tensor ? i : 0];
    coef[i] = update.zero_where_set ? (factor != 0.0 ? 0.0 : 1.0) : factor;
  }
  if (norms.plan.has_value()) {
    scale_pass(*norms.plan, coef, update.clear_on_zero);
    finish_mutation(*norms.plan, grads.tensors());
  } else {
    scale_list(grads, coef, update.clear_on_zero);
  }
}

StepNorms entry_norms(const PerEntryTensors& t, const CheckedList& grads) {
  StepNorms norms = step_norms(grads, t.total_norm, t.norms, 2.0, t.per_tensor);
  if (!t.norms_given() && !t.per_tensor) norms.per_tensor = norms.total.reshape({1});
  return norms;
}

}  // namespace cpu
}  // namespace fastclip
