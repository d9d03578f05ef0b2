// The two CPU passes over a planned tensor list, shared by the norm, scale and clip ops.
#pragma once

#include <ATen/core/Tensor.h>

#include <tuple>
#include <vector>

#include "../common/list_plan.h"

namespace fastclip {
namespace cpu {

// (total in the plan's promoted dtype, per-tensor norms in the accumulation dtype or empty).
// With `accumulated`, also the total before it is stored in the promoted dtype.
std::tuple<at::Tensor, at::Tensor> norm_pass(const ListPlan& plan, double norm_type, bool per_tensor,
                                             double* accumulated = nullptr);

// tensors[t] *= coef_per_tensor[t]; tensors whose coefficient is exactly 1 are not written, and
// with clear_on_zero those whose coefficient is exactly 0 are filled with zeros.
// Each thread starts on the data a preceding norm_pass left in its cache, most recent first
// (for_each_chunk's recent_first).
void scale_pass(const ListPlan& plan, const std::vector<double>& coef_per_tensor, bool clear_on_zero = false);

// scale_pass over a list planned here, written back into views that were not dense.
void scale_list(const CheckedList& tensors, const std::vector<double>& coef_per_tensor, bool clear_on_zero = false);

// torch's clip coefficient from a total norm tensor: float math, or double for a float64 norm.
double clip_coefficient_of(const at::Tensor& total_norm, double max_norm);
// The same from the total as stored and as accumulated (norm_math.h's coefficient_total).
double clip_coefficient_of(const at::Tensor& total_norm, double accumulated, double max_norm);

}  // namespace cpu
}  // namespace fastclip
